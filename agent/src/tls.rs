//! TLS for the agent's MQTT link: the broker's certificate must be signed by the CA in
//! `--ca` (the controller's `ca.pem`), else by one of the system's CAs. Kept apart from
//! `link` so that the option builder there only gains one call.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use punnet_api::tls as shared;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use thiserror::Error;

use crate::config::AgentConfig;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read the CA file {path} (--ca): {source}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Shared(#[from] shared::TlsError),
}

/// A rustls client configuration trusting `ca`, or the system's CAs.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let path = ca.unwrap_or(Path::new(shared::SYSTEM_CA_BUNDLE));
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadCa {
        path: path.to_path_buf(),
        source,
    })?;
    let config = shared::client_config(&pem, &path.display().to_string())?;
    Ok(Arc::new(config))
}

/// Puts rumqttc on TLS for an `mqtts://` broker; warns about a plaintext one (which
/// `AgentConfig::validate` refuses unless `allow_plaintext`).
pub fn apply(options: &mut MqttOptions, config: &AgentConfig) -> Result<(), TlsError> {
    if !config.broker_tls() {
        tracing::warn!(broker = %config.broker, "MQTT without TLS (--allow-plaintext): desired state and status cross the network unencrypted");
        return Ok(());
    }
    let tls = client_config(config.ca.as_deref())?;
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_names_the_flag() {
        let mut config = AgentConfig::new("pi");
        config.ca = Some(PathBuf::from("/nonexistent/ca.pem"));
        let mut o = MqttOptions::new("x", "h", 1);
        let err = apply(&mut o, &config).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem (--ca)"), "{err}");
        config.broker = "mqtt://h:1".into();
        assert!(apply(&mut o, &config).is_ok(), "plaintext needs no CA");
    }
}
