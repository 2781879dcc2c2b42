//! The controller's MQTT client side of TLS: which CA it trusts and how rumqttc is told
//! to use it. Kept apart from `mqtt` so that other option builders there stay untouched.

use std::path::Path;
use std::sync::Arc;

use punnet_api::tls as shared;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use super::TlsError;
use crate::mqtt::MqttSettings;

/// A rustls client configuration trusting the CAs in `ca` (PEM), or the system's CAs
/// when `None`.
pub fn load_client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let path = ca.unwrap_or(Path::new(shared::SYSTEM_CA_BUNDLE));
    let pem = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(shared::client_config(
        &pem,
        &path.display().to_string(),
    )?))
}

/// Completes `settings` for its URL: TLS trusting `ca` for `mqtts://`, or a refusal of
/// `mqtt://` unless plaintext is allowed.
pub fn secure_settings(
    settings: MqttSettings,
    url: &str,
    ca: Option<&Path>,
    allow_plaintext: bool,
) -> Result<MqttSettings, TlsError> {
    shared::check_plaintext(url, settings.secure, allow_plaintext, "MQTT", "mqtts://")?;
    if !settings.secure {
        tracing::warn!(%url, "MQTT without TLS (--allow-plaintext): desired state and status cross the network unencrypted");
        return Ok(settings);
    }
    Ok(MqttSettings {
        tls: Some(load_client_config(ca)?),
        ..settings
    })
}

/// Makes rumqttc connect over TLS with `config`, if given.
pub fn apply(options: &mut MqttOptions, config: Option<&Arc<rustls::ClientConfig>>) {
    if let Some(config) = config {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            config.clone(),
        )));
    }
}

/// A blocking stream for the few synchronous clients (`punnet-controller backup`).
pub trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// TLS over a connected blocking socket to `addr` (`host:port`), trusting `ca`.
pub fn blocking_tls(
    tcp: std::net::TcpStream,
    addr: &str,
    ca: Option<&Path>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, TlsError> {
    let host = match addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => addr,
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let bad = |reason: String| {
        TlsError::Shared(shared::TlsError::Config {
            what: format!("TLS to {addr}"),
            reason,
        })
    };
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| bad(e.to_string()))?;
    let conn = rustls::ClientConnection::new(load_client_config(ca)?, name)
        .map_err(|e| bad(e.to_string()))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}
