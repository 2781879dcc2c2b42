//! The controller's TLS material. On first start it makes a CA (`<data-dir>/ca.pem`, key
//! `ca.key` mode 0600) and a server certificate signed by it (`server.pem`/`server.key`)
//! that both the REST API and the embedded broker present. Later starts reuse them; the
//! server certificate is issued again when it nears its end or when the names it should
//! carry changed (a new hostname, address or `--tls-san`). `--tls-cert/--tls-key [--ca]`
//! use the operator's own certificate instead, and nothing is generated.
//!
//! What a certificate was issued for is kept next to it in `server.json` (names, end of
//! validity, the CA it was signed by), so deciding whether to renew needs no X.509 parser.
//! Generation and the renewal decision are pure; `prepare` does the file I/O.

pub mod client;
pub mod listener;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use punnet_api::tls as shared;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use thiserror::Error;

pub use shared::TlsError as SharedTlsError;

pub const CA_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const CERT_FILE: &str = "server.pem";
pub const KEY_FILE: &str = "server.key";
pub const META_FILE: &str = "server.json";

/// The CA outlives many server certificates; boards trust it for years.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A server certificate is good for two years and issued again at a start within
/// `RENEW_BEFORE` of its end.
const CERT_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
const RENEW_BEFORE: Duration = Duration::from_secs(60 * 24 * 3600);

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {reason}; delete {path} (and the files next to it made with it) to have a new one made, which every client must then trust again")]
    Unusable { path: PathBuf, reason: String },
    #[error("{0}")]
    Shared(#[from] shared::TlsError),
    #[error("--tls-cert and --tls-key go together: give both, or neither to use the controller's own CA")]
    HalfPair,
    #[error("TLS name {0:?} (from --tls-san): not a valid DNS name or IP address")]
    BadSan(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsOptions {
    /// The operator's own server certificate (chain) and key, instead of the generated ones.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The CA clients should trust (and the controller's own MQTT client trusts): the
    /// operator's, or an external broker's. Default: the generated `<data-dir>/ca.pem`.
    pub ca: Option<PathBuf>,
    /// Extra names for the generated certificate (`--tls-san`).
    pub extra_sans: Vec<String>,
}

/// Ready-to-use TLS for the controller's listeners and clients.
#[derive(Clone)]
pub struct ServerTls {
    /// For the embedded broker's listener (no ALPN).
    pub mqtt: Arc<rustls::ServerConfig>,
    /// For the REST API (ALPN `http/1.1`).
    pub https: Arc<rustls::ServerConfig>,
    /// The CA file clients should be given (`punnet.yaml`, the embedded agent); `None`
    /// with an operator certificate and no `--ca` (clients then use the system's CAs).
    pub ca_file: Option<PathBuf>,
}

/// What `server.json` records about the certificate next to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedFor {
    pub sans: Vec<String>,
    /// End of validity, seconds since the epoch.
    pub not_after: u64,
    /// SHA-256 of the CA certificate's PEM that signed it.
    pub ca_sha256: String,
}

/// The names the generated certificate carries: loopback, the hostname, the host's
/// addresses and the operator's extras; sorted and without duplicates.
pub fn wanted_sans(hostname: &str, addresses: &[IpAddr], extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !hostname.is_empty() {
        sans.push(hostname.to_string());
    }
    sans.extend(addresses.iter().map(IpAddr::to_string));
    sans.extend(extra.iter().map(|s| s.trim().to_string()));
    sans.sort();
    sans.dedup();
    sans
}

/// Why the certificate must be issued again, or `None` to keep it.
pub fn renewal_reason(
    issued: Option<&IssuedFor>,
    wanted: &[String],
    ca_sha256: &str,
    now: u64,
) -> Option<String> {
    let Some(issued) = issued else {
        return Some("there is none yet".into());
    };
    if issued.ca_sha256 != ca_sha256 {
        return Some("it was signed by another CA".into());
    }
    if issued.not_after <= now + RENEW_BEFORE.as_secs() {
        return Some("it ends within 60 days".into());
    }
    if issued.sans != wanted {
        return Some(format!(
            "its names changed (was {}, now {})",
            issued.sans.join(","),
            wanted.join(",")
        ));
    }
    None
}

/// The CA's parameters. Its name is derived from its key, so an issuer made from the key
/// alone has exactly the subject of the CA certificate on disk (no need to parse it).
fn ca_params(key: &KeyPair) -> CertificateParams {
    let id = hex::encode(sha2::Sha256::digest(key.public_key_raw()));
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Punnet");
    dn.push(DnType::CommonName, format!("Punnet CA {}", &id[..12]));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn validity(params: &mut CertificateParams, now: u64, length: Duration) {
    // A little back-dated, for boards whose clock is slightly behind.
    let start = now.saturating_sub(3600);
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(start);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(now) + length;
}

/// A new CA: (certificate PEM, key PEM).
pub fn generate_ca(now: u64) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params(&key);
    validity(&mut params, now, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A server certificate for `sans`, signed by the CA whose key is `ca_key_pem`:
/// (certificate PEM, key PEM, what it was issued for).
pub fn issue_server_cert(
    ca_pem: &str,
    ca_key_pem: &str,
    sans: &[String],
    now: u64,
) -> Result<(String, String, IssuedFor), TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);
    let mut params = CertificateParams::new(Vec::new())?;
    for san in sans {
        params.subject_alt_names.push(match san.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                san.clone()
                    .try_into()
                    .map_err(|_| TlsError::BadSan(san.clone()))?,
            ),
        });
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Punnet");
    dn.push(DnType::CommonName, "punnet-controller");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, CERT_VALIDITY);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let issued = IssuedFor {
        sans: sans.to_vec(),
        not_after: now + CERT_VALIDITY.as_secs(),
        ca_sha256: sha256_hex(ca_pem.as_bytes()),
    };
    Ok((cert.pem(), key.serialize_pem(), issued))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The names for this host: its hostname and IPv4 addresses, and `extra`.
pub fn host_sans(extra: &[String]) -> Result<Vec<String>, TlsError> {
    for san in extra {
        let s = san.trim();
        let ok = s.parse::<IpAddr>().is_ok()
            || (!s.is_empty()
                && s.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
                }));
        if !ok {
            return Err(TlsError::BadSan(san.clone()));
        }
    }
    let addrs: Vec<IpAddr> = punnet_agent::facts::ipv4_addresses()
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    Ok(wanted_sans(
        &punnet_agent::config::hostname(),
        &addrs,
        extra,
    ))
}

/// Loads or makes the controller's TLS material in `data_dir` (see the module doc).
pub fn prepare(data_dir: &Path, options: &TlsOptions) -> Result<ServerTls, TlsError> {
    let (chain, key, ca_file) = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => {
            let chain = fs::read(cert).map_err(io(cert))?;
            let key_pem = fs::read(key).map_err(io(key))?;
            (chain, key_pem, options.ca.clone())
        }
        (None, None) => {
            let (chain, key) = own_material(data_dir, &host_sans(&options.extra_sans)?)?;
            let ca = options.ca.clone().unwrap_or(data_dir.join(CA_FILE));
            (chain, key, Some(ca))
        }
        _ => return Err(TlsError::HalfPair),
    };
    let what = options
        .cert
        .as_ref()
        .unwrap_or(&data_dir.join(CERT_FILE))
        .display()
        .to_string();
    let mqtt = shared::server_config(&chain, &key, &what, &[])?;
    let https = shared::server_config(&chain, &key, &what, &[b"http/1.1"])?;
    Ok(ServerTls {
        mqtt: Arc::new(mqtt),
        https: Arc::new(https),
        ca_file,
    })
}

/// The generated CA and server certificate: (server chain PEM, server key PEM).
fn own_material(data_dir: &Path, sans: &[String]) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let now = now_secs();
    let (ca_path, ca_key_path) = (data_dir.join(CA_FILE), data_dir.join(CA_KEY_FILE));
    let (ca_pem, ca_key_pem) = match (
        fs::read_to_string(&ca_path),
        fs::read_to_string(&ca_key_path),
    ) {
        (Ok(cert), Ok(key)) => {
            restrict_mode(&ca_key_path)?;
            (cert, key)
        }
        (Err(a), Err(b))
            if a.kind() == std::io::ErrorKind::NotFound
                && b.kind() == std::io::ErrorKind::NotFound =>
        {
            let (cert, key) = generate_ca(now)?;
            write_file(&ca_key_path, key.as_bytes(), 0o600)?;
            write_file(&ca_path, cert.as_bytes(), 0o644)?;
            tracing::info!(ca = %ca_path.display(), "created the fleet's CA; agents and the CLI trust it with --ca {}", ca_path.display());
            (cert, key)
        }
        (Err(e), _) => return Err(io(&ca_path)(e)),
        (_, Err(e)) => return Err(io(&ca_key_path)(e)),
    };
    let ca_sha = sha256_hex(ca_pem.as_bytes());
    let (cert_path, key_path, meta_path) = (
        data_dir.join(CERT_FILE),
        data_dir.join(KEY_FILE),
        data_dir.join(META_FILE),
    );
    let issued: Option<IssuedFor> = fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let have_files = cert_path.exists() && key_path.exists();
    let reason = if have_files {
        renewal_reason(issued.as_ref(), sans, &ca_sha, now)
    } else {
        Some("there is none yet".into())
    };
    if let Some(reason) = reason {
        let (cert, key, issued) =
            issue_server_cert(&ca_pem, &ca_key_pem, sans, now).map_err(|e| match e {
                TlsError::Generate(g) => TlsError::Unusable {
                    path: ca_key_path.clone(),
                    reason: format!("cannot sign with it: {g}"),
                },
                other => other,
            })?;
        write_file(&key_path, key.as_bytes(), 0o600)?;
        write_file(&cert_path, cert.as_bytes(), 0o644)?;
        let meta = serde_json::to_vec_pretty(&issued).expect("plain struct serializes");
        write_file(&meta_path, &meta, 0o644)?;
        tracing::info!(cert = %cert_path.display(), names = %sans.join(","), "issued the server certificate: {reason}");
    }
    let mut chain = fs::read(&cert_path).map_err(io(&cert_path))?;
    chain.extend_from_slice(ca_pem.as_bytes());
    let key = fs::read(&key_path).map_err(io(&key_path))?;
    Ok((chain, key))
}

/// A key readable by others is fixed rather than refused (as with the admin token).
fn restrict_mode(path: &Path) -> Result<(), TlsError> {
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "{} was readable by other users (mode {:o}); setting it to 0600",
            path.display(),
            mode & 0o777
        );
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

/// Writes atomically (temporary file, fsync, rename) with `mode`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn sans() -> Vec<String> {
        wanted_sans(
            "pi-ctl",
            &["10.0.0.2".parse().unwrap()],
            &["ctl.lan".into()],
        )
    }

    #[test]
    fn names_cover_loopback_host_and_extras() {
        let s = sans();
        for name in [
            "localhost",
            "127.0.0.1",
            "::1",
            "pi-ctl",
            "10.0.0.2",
            "ctl.lan",
        ] {
            assert!(s.contains(&name.to_string()), "{name} missing from {s:?}");
        }
        let mut sorted = s.clone();
        sorted.sort();
        assert_eq!(s, sorted);
    }

    #[test]
    fn renewal_rules() {
        let issued = IssuedFor {
            sans: sans(),
            not_after: NOW + CERT_VALIDITY.as_secs(),
            ca_sha256: "abc".into(),
        };
        assert_eq!(renewal_reason(Some(&issued), &sans(), "abc", NOW), None);
        assert!(renewal_reason(None, &sans(), "abc", NOW).is_some());
        assert!(renewal_reason(Some(&issued), &sans(), "other", NOW)
            .unwrap()
            .contains("another CA"));
        let late = NOW + CERT_VALIDITY.as_secs() - 24 * 3600;
        assert!(renewal_reason(Some(&issued), &sans(), "abc", late)
            .unwrap()
            .contains("60 days"));
        let mut more = sans();
        more.push("new.lan".into());
        assert!(renewal_reason(Some(&issued), &more, "abc", NOW)
            .unwrap()
            .contains("names changed"));
    }

    #[test]
    fn issued_certificate_verifies_against_the_ca_and_only_for_its_names() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let (ca, ca_key) = generate_ca(NOW).unwrap();
        let (cert, key, issued) = issue_server_cert(&ca, &ca_key, &sans(), NOW).unwrap();
        assert_eq!(issued.ca_sha256, sha256_hex(ca.as_bytes()));
        // A usable server config from it, and a client config trusting the CA.
        shared::server_config(cert.as_bytes(), key.as_bytes(), "t", &[]).unwrap();
        shared::client_config(ca.as_bytes(), "ca.pem").unwrap();
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            r.add_parsable_certificates(shared::parse_certs(ca.as_bytes(), "ca").unwrap());
            Arc::new(r)
        };
        let v =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, shared::provider())
                .build()
                .unwrap();
        let leaf = shared::parse_certs(cert.as_bytes(), "cert")
            .unwrap()
            .remove(0);
        let at = UnixTime::since_unix_epoch(Duration::from_secs(NOW));
        for name in ["localhost", "127.0.0.1", "pi-ctl", "ctl.lan"] {
            let sn = ServerName::try_from(name).unwrap();
            v.verify_server_cert(&leaf, &[], &sn, &[], at)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = ServerName::try_from("elsewhere.lan").unwrap();
        assert!(v.verify_server_cert(&leaf, &[], &other, &[], at).is_err());
        // Another CA does not vouch for it.
        let (ca2, _) = generate_ca(NOW).unwrap();
        let mut r2 = rustls::RootCertStore::empty();
        r2.add_parsable_certificates(shared::parse_certs(ca2.as_bytes(), "ca2").unwrap());
        let v2 = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(r2),
            shared::provider(),
        )
        .build()
        .unwrap();
        let sn = ServerName::try_from("localhost").unwrap();
        assert!(v2.verify_server_cert(&leaf, &[], &sn, &[], at).is_err());
    }

    #[test]
    fn prepare_creates_once_then_reuses_and_renews_on_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let opts = TlsOptions::default();
        let first = prepare(d, &opts).unwrap();
        assert_eq!(first.ca_file, Some(d.join(CA_FILE)));
        assert_eq!(
            fs::metadata(d.join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(d.join(KEY_FILE)).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let ca = fs::read(d.join(CA_FILE)).unwrap();
        let cert = fs::read(d.join(CERT_FILE)).unwrap();
        prepare(d, &opts).unwrap();
        assert_eq!(fs::read(d.join(CA_FILE)).unwrap(), ca, "CA reused");
        assert_eq!(fs::read(d.join(CERT_FILE)).unwrap(), cert, "cert reused");
        let more = TlsOptions {
            extra_sans: vec!["fleet.example".into()],
            ..TlsOptions::default()
        };
        prepare(d, &more).unwrap();
        assert_eq!(fs::read(d.join(CA_FILE)).unwrap(), ca, "CA kept");
        assert_ne!(fs::read(d.join(CERT_FILE)).unwrap(), cert, "cert renewed");
        let meta: IssuedFor =
            serde_json::from_slice(&fs::read(d.join(META_FILE)).unwrap()).unwrap();
        assert!(meta.sans.contains(&"fleet.example".to_string()));
    }

    #[test]
    fn bad_options_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let half = TlsOptions {
            cert: Some(dir.path().join("c.pem")),
            ..TlsOptions::default()
        };
        assert!(matches!(
            prepare(dir.path(), &half),
            Err(TlsError::HalfPair)
        ));
        let bad = TlsOptions {
            extra_sans: vec!["bad name!".into()],
            ..TlsOptions::default()
        };
        let err = prepare(dir.path(), &bad).err().unwrap();
        assert!(err.to_string().contains("--tls-san"), "{err}");
        fs::write(dir.path().join("c.pem"), "junk").unwrap();
        fs::write(dir.path().join("k.pem"), "junk").unwrap();
        let junk = TlsOptions {
            cert: Some(dir.path().join("c.pem")),
            key: Some(dir.path().join("k.pem")),
            ..TlsOptions::default()
        };
        let err = prepare(dir.path(), &junk).err().unwrap();
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
