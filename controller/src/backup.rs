//! `punnet-controller backup FILE` and `restore FILE`: disaster recovery of the store.
//!
//! A backup of a running controller goes through its API (`GET /backup`, with the
//! admin token from `<data-dir>/punnet.yaml`), because sled lets one process at a time
//! open the database; the controller exports a snapshot of one revision under its
//! write lock. A stopped controller's database is exported directly. Either way the
//! file holds the database as stored: Secrets stay encrypted, and restoring them needs
//! the same key file (`<data-dir>/secrets.key`), which must be backed up separately.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth_token::CLIENT_CONFIG_FILE;
use crate::http::{ApiError, ApiState};
use crate::store::backup::{self, Restored};
use crate::store::KEY_FILE;

/// The database directory under a data directory.
pub fn db_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// `GET /backup`: the whole store as JSON lines, one consistent revision.
pub async fn serve(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let body = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        store.export(&mut out).map(|rev| (rev, out))
    })
    .await
    .map_err(|e| ApiError::internal(format!("backup: {e}")))?
    .map_err(|e| ApiError::internal(format!("backup: {e}")))?;
    tracing::info!(
        "backup of revision {} served ({} bytes)",
        body.0,
        body.1.len()
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/jsonl")],
        body.1,
    )
        .into_response())
}

/// Writes a backup of the controller whose data directory is `data_dir` to `file`.
/// Returns the revision and whether it came from the running controller.
pub fn backup(data_dir: &Path, file: &Path) -> anyhow::Result<(u64, bool)> {
    let db = db_dir(data_dir);
    if !db.join("conf").exists() {
        bail!(
            "no database in {} (is --data-dir right?)",
            data_dir.display()
        );
    }
    let tmp = file.with_extension("partial");
    let result = match sled::open(&db) {
        Ok(db) => {
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot write {}", tmp.display()))?,
            );
            let rev = backup::export_db(&db, &mut out)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            (rev, false)
        }
        Err(sled::Error::Io(e))
            if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") =>
        {
            let body = fetch_from_running(data_dir)?;
            std::fs::write(&tmp, &body)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            (revision_of(&body)?, true)
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the database in {}", db.display()))
        }
    };
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(result)
}

fn revision_of(body: &[u8]) -> anyhow::Result<u64> {
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let header: serde_json::Value =
        serde_json::from_slice(first).context("the controller's backup has no header")?;
    header["revision"]
        .as_u64()
        .context("the controller's backup header has no revision")
}

/// `GET /backup` from the controller that holds the database, found through the client
/// config it wrote (`server:` and `token:` lines).
fn fetch_from_running(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let config_path = data_dir.join(CLIENT_CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).with_context(|| {
        format!(
            "the database is in use, so the backup goes through the running controller, but {} cannot be read",
            config_path.display()
        )
    })?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let (Some(server), Some(token)) = (field("server:"), field("token:")) else {
        bail!("{} has no server: and token: lines", config_path.display());
    };
    let (addr, tls) = match (
        server.strip_prefix("https://"),
        server.strip_prefix("http://"),
    ) {
        (Some(addr), _) => (addr, true),
        (None, Some(addr)) => (addr, false),
        _ => bail!(
            "{}: server {server:?} is not an https:// or http:// URL",
            config_path.display()
        ),
    };
    let addr = addr.trim_end_matches('/');
    let tcp = TcpStream::connect(addr)
        .with_context(|| format!("the database is in use but no controller answers on {server}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut stream: Box<dyn crate::tls::client::ReadWrite> = if tls {
        let ca = field("ca:").map(std::path::PathBuf::from);
        Box::new(crate::tls::client::blocking_tls(tcp, addr, ca.as_deref())?)
    } else {
        Box::new(tcp)
    };
    write!(
        stream,
        "GET /backup HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading the backup from {server}"));
        }
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the controller's answer has no HTTP header")?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let body = response[split + 4..].to_vec();
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!(
            "the controller at {server} refused the backup: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("the controller at {server} sent a chunked answer, which this client does not read");
    }
    Ok(body)
}

/// Restores `file` into `data_dir`'s database; with `force`, replaces one that is there.
/// Checks the restored Secrets open with `key_file` when it exists.
pub fn restore(
    data_dir: &Path,
    file: &Path,
    key_file: Option<&Path>,
    force: bool,
) -> anyhow::Result<(Restored, Option<String>)> {
    let input = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
    );
    let db = db_dir(data_dir);
    let restored = backup::restore(&db, input, force).with_context(|| {
        format!(
            "cannot restore {} into {}",
            file.display(),
            data_dir.display()
        )
    })?;
    let key_file = key_file.map_or_else(|| data_dir.join(KEY_FILE), Path::to_path_buf);
    let note = if key_file.exists() {
        crate::store::Store::open_with_key_file(&db, &key_file).with_context(|| {
            format!(
                "restored, but the controller will not start with this key file: {}",
                key_file.display()
            )
        })?;
        None
    } else {
        Some(format!(
            "copy the encryption key file of the backed-up controller to {} (or pass --encryption-key-file) before starting it; the restored Secrets cannot be read without it",
            key_file.display()
        ))
    };
    // Agents trust only the controller key they were given: a new one would be refused.
    let signing_key = data_dir.join(crate::signing::SIGNING_KEY_FILE);
    let note = if signing_key.exists() {
        note
    } else {
        let signing = format!(
            "copy the signing key of the backed-up controller to {} before starting it; with a new key every agent refuses its desired state until it is given the new controller.pub",
            signing_key.display()
        );
        Some(match note {
            Some(n) => format!("{n}; {signing}"),
            None => signing,
        })
    };
    Ok((restored, note))
}
