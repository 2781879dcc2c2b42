//! Where the controller is and which token to send: `--server`/`--token`, then
//! `PUNNET_SERVER`/`PUNNET_TOKEN`, then a config file (`$PUNNET_CONFIG`, else
//! `~/.config/punnet/config.yaml`, else the controller's own `/var/lib/punnet/punnet.yaml`),
//! then the default server. Each of server and token is resolved on its own, as kubectl does.
//! The CA the controller's certificate is checked against comes from `--ca`, `PUNNET_CA`
//! or the file's `ca:` (a relative path is relative to the file).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub const DEFAULT_SERVER: &str = "https://127.0.0.1:6443";
/// The client config the controller writes next to its data (mode 0600).
pub const CONTROLLER_CONFIG: &str = "/var/lib/punnet/punnet.yaml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: String,
    pub token: Option<String>,
    /// Why no token could be read although a config file exists (typically the
    /// controller's root-only file); added to `Unauthorized` errors so the fix is obvious.
    pub token_hint: Option<String>,
    /// The CA file for an `https://` server; `None`: the system's CAs.
    pub ca: Option<PathBuf>,
    /// `http://` servers are refused unless this is set (`--allow-plaintext`).
    pub allow_plaintext: bool,
}

/// Values given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub server: Option<String>,
    pub token: Option<String>,
    pub ca: Option<PathBuf>,
    pub allow_plaintext: bool,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message} (expected YAML with `server:` and `token:`)")]
    Parse { path: PathBuf, message: String },
}

#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ca: Option<PathBuf>,
}

/// Resolves with the process environment and the controller's config path.
pub fn resolve(flags: &Flags) -> Result<Config, ConfigError> {
    resolve_with(
        flags,
        &|name| std::env::var(name).ok(),
        Path::new(CONTROLLER_CONFIG),
    )
}

/// `resolve` with the environment and the last-resort file passed in, for tests.
pub fn resolve_with(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    controller_config: &Path,
) -> Result<Config, ConfigError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut server = non_empty(flags.server.clone()).or_else(|| env("PUNNET_SERVER"));
    let mut token = non_empty(flags.token.clone()).or_else(|| env("PUNNET_TOKEN"));
    let mut token_hint = None;
    let mut ca = flags
        .ca
        .clone()
        .or_else(|| env("PUNNET_CA").map(PathBuf::from));
    // A plain http:// server needs no CA, so only an https:// one makes us read for it.
    let need_ca = ca.is_none()
        && !server
            .as_deref()
            .is_some_and(|s| s.trim().starts_with("http://"));

    // Files are only read for what is still missing, so that explicit flags work even
    // where the config file is unreadable.
    if server.is_none() || token.is_none() || need_ca {
        let file = match env("PUNNET_CONFIG") {
            // An explicitly named file must exist: a typo should not silently fall back.
            Some(path) => Some((parent(Path::new(&path)), read_file(Path::new(&path))?)),
            None => {
                let mut candidates = Vec::new();
                if let Some(home) = env("HOME") {
                    candidates.push(Path::new(&home).join(".config/punnet/config.yaml"));
                }
                candidates.push(controller_config.to_path_buf());
                let mut found = None;
                for path in candidates {
                    match std::fs::read_to_string(&path) {
                        Ok(text) => {
                            found = Some((parent(&path), parse_file(&path, &text)?));
                            break;
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                            token_hint = Some(format!(
                                "{} is not readable by this user: run punnet with sudo, copy it to \
                                 ~/.config/punnet/config.yaml, or set PUNNET_TOKEN",
                                path.display()
                            ));
                        }
                        Err(source) => return Err(ConfigError::Read { path, source }),
                    }
                }
                found
            }
        };
        if let Some((dir, file)) = file {
            server = server.or(non_empty(file.server));
            token = token.or(non_empty(file.token));
            ca = ca.or(file.ca.map(|c| dir.join(c)));
        }
    }
    if token.is_some() {
        token_hint = None;
    }
    Ok(Config {
        server: server.unwrap_or_else(|| DEFAULT_SERVER.to_string()),
        token,
        token_hint,
        ca,
        allow_plaintext: flags.allow_plaintext,
    })
}

/// The directory a config file's relative `ca:` is resolved against.
fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text)
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Env(HashMap<&'static str, String>);

    impl Env {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn flags_beat_env_beat_file_per_field() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        write(
            &home.join(".config/punnet/config.yaml"),
            "server: http://file:1\ntoken: file-token\n",
        );
        let system = dir.path().join("system.yaml");
        write(&system, "server: http://system:1\ntoken: system-token\n");
        let mut env = Env(HashMap::from([(
            "HOME",
            home.to_string_lossy().into_owned(),
        )]));

        let c = resolve_with(&Flags::default(), &|n| env.get(n), &system).unwrap();
        assert_eq!(
            c.server, "http://file:1",
            "the user's file wins over the controller's"
        );
        assert_eq!(c.token.as_deref(), Some("file-token"));

        env.0.insert("PUNNET_SERVER", "http://env:2".into());
        let c = resolve_with(&Flags::default(), &|n| env.get(n), &system).unwrap();
        assert_eq!(c.server, "http://env:2");
        assert_eq!(
            c.token.as_deref(),
            Some("file-token"),
            "token still from the file"
        );

        env.0.insert("PUNNET_TOKEN", "env-token".into());
        let flags = Flags {
            server: Some("http://flag:3".into()),
            token: None,
            ..Flags::default()
        };
        let c = resolve_with(&flags, &|n| env.get(n), &system).unwrap();
        assert_eq!(c.server, "http://flag:3");
        assert_eq!(c.token.as_deref(), Some("env-token"));
    }

    #[test]
    fn controller_file_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("punnet.yaml");
        let env = Env(HashMap::from([(
            "HOME",
            dir.path().join("nohome").to_string_lossy().into_owned(),
        )]));
        let c = resolve_with(&Flags::default(), &|n| env.get(n), &system).unwrap();
        assert_eq!(c.server, DEFAULT_SERVER);
        assert_eq!(c.token, None);

        write(&system, "server: http://127.0.0.1:7000\ntoken: abc\n");
        let c = resolve_with(&Flags::default(), &|n| env.get(n), &system).unwrap();
        assert_eq!(c.server, "http://127.0.0.1:7000");
        assert_eq!(c.token.as_deref(), Some("abc"));
    }

    #[test]
    fn punnet_config_must_exist_and_parse() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let env = Env(HashMap::from([(
            "PUNNET_CONFIG",
            missing.to_string_lossy().into_owned(),
        )]));
        let err = resolve_with(&Flags::default(), &|n| env.get(n), &missing).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read config file"),
            "{err}"
        );

        let bad = dir.path().join("bad.yaml");
        write(&bad, "server: [oops\n");
        let env = Env(HashMap::from([(
            "PUNNET_CONFIG",
            bad.to_string_lossy().into_owned(),
        )]));
        let err = resolve_with(&Flags::default(), &|n| env.get(n), &missing).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn explicit_flags_skip_unreadable_files() {
        let env = Env(HashMap::from([(
            "PUNNET_CONFIG",
            "/nonexistent/punnet.yaml".into(),
        )]));
        let flags = Flags {
            server: Some("http://a:1".into()),
            token: Some("t".into()),
            ..Flags::default()
        };
        let c = resolve_with(&flags, &|n| env.get(n), Path::new("/nonexistent")).unwrap();
        assert_eq!(c.token.as_deref(), Some("t"));
    }

    #[test]
    fn ca_from_flag_env_or_file_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("punnet.yaml");
        write(&file, "server: https://c:6443\ntoken: t\nca: ca.pem\n");
        let mut env = Env(HashMap::from([(
            "PUNNET_CONFIG",
            file.display().to_string(),
        )]));
        let c = resolve_with(&Flags::default(), &|n| env.get(n), &file).unwrap();
        assert_eq!(c.ca, Some(dir.path().join("ca.pem")));
        assert_eq!(c.server, "https://c:6443");
        env.0.insert("PUNNET_CA", "/env/ca.pem".into());
        let c = resolve_with(&Flags::default(), &|n| env.get(n), &file).unwrap();
        assert_eq!(c.ca, Some(PathBuf::from("/env/ca.pem")));
        let flags = Flags {
            ca: Some("/flag/ca.pem".into()),
            ..Flags::default()
        };
        let c = resolve_with(&flags, &|n| env.get(n), &file).unwrap();
        assert_eq!(c.ca, Some(PathBuf::from("/flag/ca.pem")));
    }
}
