//! Where the MQTT API connects and what it needs from the data directory: the broker's
//! MQTT 5 endpoint (the external broker's one port, or the embedded broker's v5
//! listener) and, with Home Assistant discovery, the restart buttons' token.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::info;

use super::MqttApiConfig;
use crate::config::ControllerConfig;
use crate::mqtt::MqttSettings;

/// The file holding the Home Assistant buttons' restart-only token.
pub const BUTTON_TOKEN_FILE: &str = "homeassistant.token";

#[derive(Debug, Error)]
pub enum MqttApiError {
    #[error("{path}: {source} (the Home Assistant button token lives there; check the data directory's permissions)")]
    ButtonToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The API's configuration, or `None` when it cannot run: the embedded broker without
/// an MQTT 5 listener.
pub fn config_for(
    config: &ControllerConfig,
    mqtt: &MqttSettings,
) -> Result<Option<MqttApiConfig>, MqttApiError> {
    let (host, port) = match (&config.broker, config.mqtt_v5) {
        (Some(_), _) => (mqtt.host.clone(), mqtt.port),
        (None, Some(v5)) => {
            let ip = match v5.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            (ip.to_string(), v5.port())
        }
        (None, None) => {
            info!("MQTT API off: the embedded broker has no MQTT 5 listener (--mqtt5)");
            return Ok(None);
        }
    };
    let mut api = MqttApiConfig::new(host, port, &config.prefix);
    // The API's connection logs in as the controller, as its node-sync connection does.
    api.credentials = mqtt.credentials.clone();
    // An external broker over TLS: the API's connection trusts what node sync's does.
    if config.broker.is_some() {
        api.tls = mqtt.tls.clone();
    }
    if let Some(disc) = &config.homeassistant {
        api.homeassistant = Some(disc.trim_end_matches('/').to_string());
        api.button_token = Some(button_token(&config.data_dir)?);
        info!(prefix = %disc, "Home Assistant discovery on");
    }
    Ok(Some(api))
}

/// Reads `<data-dir>/homeassistant.token`, or creates it (random, mode 0600).
pub fn button_token(data_dir: &Path) -> Result<String, MqttApiError> {
    let path = data_dir.join(BUTTON_TOKEN_FILE);
    let fail = |source| MqttApiError::ButtonToken {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 16 => Ok(text.trim().to_string()),
        Ok(_) => Err(fail(std::io::Error::other(
            "the token is shorter than 16 characters; delete the file to have a new one made",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = hex::encode(rand::random::<[u8; 24]>());
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(fail)?;
            f.write_all(format!("{token}\n").as_bytes()).map_err(fail)?;
            f.sync_all().map_err(fail)?;
            Ok(token)
        }
        Err(e) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_button_token_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = button_token(dir.path()).unwrap();
        assert_eq!(a, button_token(dir.path()).unwrap());
        let mode = fs::metadata(dir.path().join(BUTTON_TOKEN_FILE))
            .unwrap()
            .permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);
        fs::write(dir.path().join(BUTTON_TOKEN_FILE), "short").unwrap();
        let err = button_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("shorter than 16"), "{err}");
    }
}
