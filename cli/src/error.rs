//! The one error type of the library and how each kind is shown: errors the server
//! reported read `Error from server (Reason): message` like kubectl's, everything else
//! `error: message`.

use punnet_api::manifest::ManifestError;
use punnet_api::validate::ValidationError;
use thiserror::Error;

use crate::client::ClientError;
use crate::config::ConfigError;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Boxed: image errors carry paths and sizes, and would make every Result large.
    #[error(transparent)]
    Image(Box<crate::image::ImageError>),
    /// A command line that cannot be carried out, in kubectl's words where it has some.
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Manifest { file: String, source: ManifestError },
    #[error("{file}: {source}")]
    Invalid {
        file: String,
        source: ValidationError,
    },
    /// The server answered 2xx with a body that is not the object we asked for.
    #[error("cannot read the {what} the server sent: {message}")]
    Decode { what: String, message: String },
    #[error("reading the logs of pod/{pod}: {message}")]
    Stream { pod: String, message: String },
    #[error("timed out after {after} waiting for {what} to be deleted (it is still terminating; --timeout waits longer, --wait=false does not wait)")]
    DeleteTimeout { what: String, after: String },
    /// A rollout that failed or cannot be done (`rollout status`, `undo`, `pause`).
    #[error("{0}")]
    Rollout(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// Commands that go on after one object fails print each failure as it happens and
    /// end with this, so that the process still exits 1.
    #[error("some operations failed")]
    AlreadyReported,
}

impl From<crate::image::ImageError> for Error {
    fn from(e: crate::image::ImageError) -> Error {
        Error::Image(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The line to print on stderr, or `None` when there is nothing more to say.
    pub fn report(&self) -> Option<String> {
        match self {
            Error::AlreadyReported => None,
            Error::Client(e @ ClientError::Api { .. }) => Some(e.to_string()),
            other => Some(format!("error: {other}")),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Client(e) if e.is_not_found())
    }

    pub(crate) fn decode(what: impl Into<String>, e: impl std::fmt::Display) -> Error {
        Error::Decode {
            what: what.into(),
            message: e.to_string(),
        }
    }
}
