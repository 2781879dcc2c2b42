//! Registry credentials, and finding them in a docker `config.json` (what an
//! `imagePullSecret` of type `kubernetes.io/dockerconfigjson` holds, or the older
//! `kubernetes.io/dockercfg` map) by registry host.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::Deserialize;

/// A user name and password (or token) for HTTP Basic auth or a registry's token service.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the docker config.json is not valid JSON ({0}); recreate the imagePullSecret with `kubectl create secret docker-registry`")]
    InvalidJson(String),
    #[error("docker config.json entry {key:?}: `auth` is not base64 of USER:PASSWORD ({reason}); recreate the imagePullSecret")]
    InvalidAuth { key: String, reason: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigFile {
    /// `config.json`: `{"auths": {"HOST": {...}}}`.
    Modern { auths: BTreeMap<String, AuthEntry> },
    /// `.dockercfg`: `{"HOST": {...}}`.
    Legacy(BTreeMap<String, AuthEntry>),
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials `json` (a docker `config.json` or `.dockercfg`) holds for
/// `registry_host` (`127.0.0.1:5000`, `ghcr.io`, `docker.io`), or `None` when it has none.
/// Keys match by host after dropping a scheme and path, so Docker Hub's
/// `https://index.docker.io/v1/` matches `docker.io`. `auth` (base64 `user:password`)
/// wins over separate `username`/`password` fields, as in Docker.
pub fn docker_config_credentials(
    json: &[u8],
    registry_host: &str,
) -> Result<Option<RegistryCredentials>, CredentialsError> {
    let file: ConfigFile =
        serde_json::from_slice(json).map_err(|e| CredentialsError::InvalidJson(e.to_string()))?;
    let auths = match file {
        ConfigFile::Modern { auths } => auths,
        ConfigFile::Legacy(map) => map,
    };
    let wanted = normalize_host(registry_host);
    let Some((key, entry)) = auths.iter().find(|(k, _)| normalize_host(k) == wanted) else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let invalid = |reason: String| CredentialsError::InvalidAuth {
            key: key.clone(),
            reason,
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| invalid(e.to_string()))?;
        let text = String::from_utf8(decoded).map_err(|e| invalid(e.to_string()))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| invalid("no ':' between user and password".into()))?;
        return Ok(Some(RegistryCredentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    Ok(match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Some(RegistryCredentials {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    })
}

/// `https://index.docker.io/v1/` → `docker.io`; `HOST:PORT/path` → `host:port`.
pub fn normalize_host(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Option<RegistryCredentials> {
        Some(RegistryCredentials {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn docker_hub_v1_key_matches_docker_io() {
        // base64("hubuser:s3cr:et") — a ':' in the password stays in the password.
        let json = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHVidXNlcjpzM2NyOmV0"}}}"#;
        assert_eq!(
            docker_config_credentials(json, "docker.io").unwrap(),
            creds("hubuser", "s3cr:et")
        );
        assert_eq!(
            docker_config_credentials(json, "index.docker.io").unwrap(),
            creds("hubuser", "s3cr:et")
        );
        assert_eq!(docker_config_credentials(json, "ghcr.io").unwrap(), None);
    }

    #[test]
    fn hosts_with_ports_and_separate_fields() {
        let json = br#"{"auths":{
            "127.0.0.1:5000":{"username":"pi","password":"raspberry"},
            "http://registry.lan:5000/v2/":{"auth":"dTpw"}}}"#;
        assert_eq!(
            docker_config_credentials(json, "127.0.0.1:5000").unwrap(),
            creds("pi", "raspberry")
        );
        assert_eq!(
            docker_config_credentials(json, "registry.lan:5000").unwrap(),
            creds("u", "p")
        );
        assert_eq!(
            docker_config_credentials(json, "127.0.0.1:5001").unwrap(),
            None
        );
    }

    #[test]
    fn legacy_dockercfg_and_entries_without_credentials() {
        let json = br#"{"quay.io":{"auth":"YTpi","email":"x@y"},"ghcr.io":{}}"#;
        assert_eq!(
            docker_config_credentials(json, "quay.io").unwrap(),
            creds("a", "b")
        );
        assert_eq!(docker_config_credentials(json, "ghcr.io").unwrap(), None);
    }

    #[test]
    fn broken_secrets_say_what_to_fix() {
        let err = docker_config_credentials(b"{not json", "x").unwrap_err();
        assert!(matches!(err, CredentialsError::InvalidJson(_)), "{err}");
        let err =
            docker_config_credentials(br#"{"auths":{"x.io":{"auth":"!!!"}}}"#, "x.io").unwrap_err();
        assert!(err.to_string().contains("x.io"), "{err}");
        // base64("nocolon")
        let err =
            docker_config_credentials(br#"{"auths":{"x.io":{"auth":"bm9jb2xvbg=="}}}"#, "x.io")
                .unwrap_err();
        assert!(err.to_string().contains("':'"), "{err}");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = creds("pi", "hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
