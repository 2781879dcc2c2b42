//! The admin token of the REST API and the CLI's config file. On first start the
//! controller creates `<data-dir>/admin.token` (a random 32-byte token in hex, mode
//! 0600) and reuses it afterwards, so that configured clients keep working across
//! restarts. It also (re)writes `<data-dir>/punnet.yaml` (mode 0600) with the server
//! address and token, which `punnet` reads when run on the controller's host.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

pub const TOKEN_FILE: &str = "admin.token";
pub const CLIENT_CONFIG_FILE: &str = "punnet.yaml";

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a usable token ({reason}); fix it, or delete it to have a new one generated (clients must then be given the new token)")]
    Unusable { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The admin token: read from `<data_dir>/admin.token`, or generated and written there
/// on first start.
pub fn load_or_create(data_dir: &Path) -> Result<String, TokenError> {
    let path = data_dir.join(TOKEN_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            check_token(token).map_err(|reason| TokenError::Unusable {
                path: path.clone(),
                reason,
            })?;
            restrict_mode(&path)?;
            Ok(token.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
            let token = hex::encode(rand::random::<[u8; 32]>());
            write_private(&path, format!("{token}\n").as_bytes())?;
            tracing::info!("created the admin token in {}", path.display());
            Ok(token)
        }
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Writes `<data_dir>/punnet.yaml` for the CLI and returns its path.
pub fn write_client_config(
    data_dir: &Path,
    http_addr: SocketAddr,
    token: &str,
) -> Result<PathBuf, TokenError> {
    write_client_config_with(data_dir, &client_url(http_addr), token, None)
}

/// Writes `<data_dir>/punnet.yaml` naming `url` and, with TLS, the CA file to trust.
pub fn write_client_config_with(
    data_dir: &Path,
    url: &str,
    token: &str,
    ca: Option<&Path>,
) -> Result<PathBuf, TokenError> {
    let path = data_dir.join(CLIENT_CONFIG_FILE);
    let mut text = format!(
        "# Written by punnet-controller on every start: how `punnet` reaches this controller.\n\
         server: {url}\n\
         token: {token}\n"
    );
    if let Some(ca) = ca {
        text.push_str(&format!("ca: {}\n", ca.display()));
    }
    write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// `client_url`, with `https://` when the API serves TLS.
pub fn client_url_with(addr: SocketAddr, tls: bool) -> String {
    let url = client_url(addr);
    if tls {
        url.replacen("http://", "https://", 1)
    } else {
        url
    }
}

/// The URL a client on this host uses: a wildcard listen address is reached over
/// loopback.
pub fn client_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the file is empty".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("it contains spaces or non-ASCII characters".into());
    }
    if token.len() < 16 {
        return Err("it is shorter than 16 characters".into());
    }
    Ok(())
}

/// A token file readable by others is fixed rather than refused: the token may already
/// have leaked, but refusing to start would not help.
fn restrict_mode(path: &Path) -> Result<(), TokenError> {
    let mode = fs::metadata(path)
        .map_err(io_error(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "{} was readable by other users (mode {:o}); setting it to 0600",
            path.display(),
            mode & 0o777
        );
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_error(path))?;
    }
    Ok(())
}

/// Writes a file readable only by its owner, atomically (temporary file, fsync,
/// rename), so that a crash leaves the old content or the new, never half of it.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), TokenError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(contents).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        // The rename is durable once the directory is synced.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_reuses_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let token = load_or_create(&data).unwrap();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        let path = data.join(TOKEN_FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create(&data).unwrap(), token);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create(&data).unwrap(), token);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn an_unusable_token_file_is_an_error_not_a_new_token() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOKEN_FILE), "\n").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, TokenError::Unusable { .. }), "{err}");
        assert!(err.to_string().contains("delete it"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap(),
            "\n"
        );
    }

    #[test]
    fn client_config_points_at_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_client_config(dir.path(), "0.0.0.0:6443".parse().unwrap(), "abc").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\nserver: http://127.0.0.1:6443\n"), "{text}");
        assert!(text.ends_with("token: abc\n"), "{text}");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(client_url("[::]:80".parse().unwrap()), "http://[::1]:80");
        assert_eq!(
            client_url("10.0.0.2:6443".parse().unwrap()),
            "http://10.0.0.2:6443"
        );
    }
}
