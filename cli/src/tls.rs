//! The CLI's trust in the controller: a rustls client configuration (ring provider)
//! trusting the CA from `--ca`/`PUNNET_CA`/the config file, else the system's CAs.

use std::path::{Path, PathBuf};

use punnet_api::tls as shared;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source} (set --ca, PUNNET_CA or `ca:` in the config file to the controller's ca.pem)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Shared(#[from] shared::TlsError),
}

pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let path = ca.unwrap_or(Path::new(shared::SYSTEM_CA_BUNDLE));
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(shared::client_config(&pem, &path.display().to_string())?)
}
