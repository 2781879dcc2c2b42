//! TLS rules every Punnet binary shares (feature `tls`): which URL schemes mean TLS, the
//! refusal of plaintext unless `--allow-plaintext` was given, and rustls client and
//! server configurations built with the **ring** provider (aws-lc-rs is C and breaks
//! the ARM cross builds). No I/O here: callers read the PEM files and pass the bytes.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

/// The flag that lets a side serve or connect without TLS.
pub const ALLOW_PLAINTEXT_FLAG: &str = "--allow-plaintext";
/// MQTT over TLS, as every broker uses it.
pub const MQTTS_PORT: u16 = 8883;
pub const MQTT_PORT: u16 = 1883;
/// Where Debian and Raspberry Pi OS keep the public CAs: the trust used when no `--ca`
/// is given (a broker with a certificate from a public CA).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{what}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { what: String },
    #[error("{what}: not a PEM certificate file: {reason}")]
    BadCertificate { what: String, reason: String },
    #[error("{what}: no usable PEM private key found ({reason})")]
    BadKey { what: String, reason: String },
    #[error("{what}: {reason}")]
    Config { what: String, reason: String },
    #[error("{url}: plaintext {proto} sends tokens and desired state unencrypted; use {secure} (with --ca FILE naming the controller's ca.pem), or pass {ALLOW_PLAINTEXT_FLAG} to accept that")]
    Plaintext {
        url: String,
        proto: &'static str,
        secure: &'static str,
    },
}

/// Whether a broker URL asks for TLS, and its default port. `mqtts://` and `ssl://`
/// mean TLS; `mqtt://` and `tcp://` mean plaintext; a bare `host[:port]` means TLS (the
/// safe reading). Anything else: `None`.
pub fn mqtt_scheme(url: &str) -> Option<(bool, u16)> {
    match url.split_once("://") {
        Some(("mqtts" | "ssl", _)) => Some((true, MQTTS_PORT)),
        Some(("mqtt" | "tcp", _)) => Some((false, MQTT_PORT)),
        Some(_) => None,
        None => Some((true, MQTTS_PORT)),
    }
}

/// Refuses a plaintext URL unless plaintext was allowed. `tls` is what the URL asked for.
pub fn check_plaintext(
    url: &str,
    tls: bool,
    allow_plaintext: bool,
    proto: &'static str,
    secure: &'static str,
) -> Result<(), TlsError> {
    if tls || allow_plaintext {
        Ok(())
    } else {
        Err(TlsError::Plaintext {
            url: url.to_string(),
            proto,
            secure,
        })
    }
}

/// The ring provider every config here is built with.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM bundle. `what` names the file in errors.
pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::BadKey {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// A client configuration that trusts exactly the CAs in `ca_pem` (no client
/// certificate). `what` names the CA file in errors.
pub fn client_config(ca_pem: &[u8], what: &str) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let certs = parse_certs(ca_pem, what)?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::BadCertificate {
            what: what.to_string(),
            reason: "none of its certificates can be used as a trust anchor".into(),
        });
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            what: what.to_string(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A server configuration for one certificate chain and its key. `alpn` is offered to
/// clients (`http/1.1` for the REST API; nothing for MQTT).
pub fn server_config(
    chain_pem: &[u8],
    key_pem: &[u8],
    what: &str,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let chain = parse_certs(chain_pem, what)?;
    let key = parse_key(key_pem, what)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            what: what.to_string(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config {
            what: what.to_string(),
            reason: format!("certificate and key do not make a usable pair: {e}"),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A one-line reason for a failed TLS connection that says what to do about it, for the
/// errors people see most: a server whose CA we do not trust, and a name mismatch.
pub fn explain(error: &str) -> Option<&'static str> {
    if error.contains("UnknownIssuer") || error.contains("unknown issuer") {
        Some("the server's certificate is not signed by a trusted CA: pass --ca FILE with the controller's <data-dir>/ca.pem (or the CA that signed the broker's certificate)")
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        Some("the server's certificate does not name the host in the URL: connect by a name it has, or add the name with the controller's --tls-san NAME")
    } else if error.contains("Expired") {
        Some("the server's certificate has expired: restart the controller to renew its own, or renew yours")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_the_plaintext_rule() {
        assert_eq!(mqtt_scheme("mqtts://x"), Some((true, 8883)));
        assert_eq!(mqtt_scheme("ssl://x:1"), Some((true, 8883)));
        assert_eq!(mqtt_scheme("mqtt://x"), Some((false, 1883)));
        assert_eq!(mqtt_scheme("x:1"), Some((true, 8883)));
        assert_eq!(mqtt_scheme("http://x"), None);
        assert!(check_plaintext("mqtts://x", true, false, "MQTT", "mqtts://").is_ok());
        assert!(check_plaintext("mqtt://x", false, true, "MQTT", "mqtts://").is_ok());
        let err = check_plaintext("mqtt://x", false, false, "MQTT", "mqtts://").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--allow-plaintext"), "{text}");
        assert!(text.starts_with("mqtt://x: plaintext MQTT"), "{text}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = client_config(b"not a pem", "ca.pem").unwrap_err();
        assert!(
            err.to_string().starts_with("ca.pem: no PEM certificate"),
            "{err}"
        );
        let err = parse_key(b"", "server.key").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("server.key: no usable PEM private key"),
            "{err}"
        );
        assert!(explain("invalid peer certificate: UnknownIssuer")
            .unwrap()
            .contains("--ca"));
    }
}
