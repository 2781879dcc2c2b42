//! The agent's side of signed messages: its own key (status reports are signed with
//! it) and the controller's public key it trusts (desired state must verify with it).
//!
//! - `<agent-data>/node.key`: ed25519 in PKCS#8 (mode 0600), made on first start and
//!   kept; `<agent-data>/node.pub` holds its public half in hex, for an operator (or
//!   enrolment) to register with the controller.
//! - The controller's key: `--controller-key FILE` / `controller-key:` in the config
//!   file, else `<agent-data>/controller.pub` (64 hex digits; enrolment writes it).
//!   Until there is one every desired state is refused, so nothing runs that the
//!   controller did not sign.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use punnet_api::signing::{parse_public_key_hex, public_key_hex, KeyError, PublicKey, SigningKey};
use thiserror::Error;

use crate::config::AgentConfig;
use crate::state::write_atomic;

pub const NODE_KEY_FILE: &str = "node.key";
pub const NODE_PUB_FILE: &str = "node.pub";
pub const CONTROLLER_PUB_FILE: &str = "controller.pub";
/// The agent's signature status as JSON, for the board's status page and operators.
pub const SIGNATURES_FILE: &str = "signatures.json";
/// At most one log line per reason, and one write of `signatures.json`, this often.
const QUIET: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node key {path}: {source}; delete the file to make a new key (the node must then be registered again)")]
    NodeKey {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("controller key {path}: {source} (copy controller.pub from the controller's data directory, or enrol the node again)")]
    ControllerKey {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
}

/// This node's private key.
#[derive(Debug)]
pub struct NodeKey {
    key: SigningKey,
}

/// Why a key file could not be read or made.
#[derive(Debug)]
pub enum KeyFileError {
    Io(PathBuf, std::io::Error),
    Key(PathBuf, KeyError),
}

/// Reads the ed25519 key (PKCS#8) at `path`, or makes one there (mode 0600, synced) when
/// there is none; true when it was made. The agent's node key and the controller's
/// signing key are both kept this way.
pub fn load_or_create_key(path: &Path) -> Result<(SigningKey, bool), KeyFileError> {
    let io = |source| KeyFileError::Io(path.to_path_buf(), source);
    let key_err = |source| KeyFileError::Key(path.to_path_buf(), source);
    match std::fs::read(path) {
        Ok(bytes) => Ok((SigningKey::from_pkcs8(&bytes).map_err(key_err)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| KeyFileError::Io(dir.to_path_buf(), e))?;
            }
            let pkcs8 = SigningKey::generate_pkcs8().map_err(key_err)?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(&pkcs8).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((SigningKey::from_pkcs8(&pkcs8).map_err(key_err)?, true))
        }
        Err(e) => Err(io(e)),
    }
}

impl NodeKey {
    /// Loads `<data_dir>/node.key`, or makes it (mode 0600) and `node.pub` on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<NodeKey, IdentityError> {
        let path = data_dir.join(NODE_KEY_FILE);
        let io = |path: &Path, source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (key, created) = load_or_create_key(&path).map_err(|e| match e {
            KeyFileError::Io(path, source) => IdentityError::Io { path, source },
            KeyFileError::Key(path, source) => IdentityError::NodeKey { path, source },
        })?;
        if created {
            tracing::info!("created this node's key {}", path.display());
        }
        let pub_path = data_dir.join(NODE_PUB_FILE);
        let line = public_key_hex(&key.public_key()) + "\n";
        if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(line.as_str()) {
            write_atomic(&pub_path, line.as_bytes()).map_err(|e| io(&pub_path, e))?;
        }
        Ok(NodeKey { key })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.public_key()
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message)
    }

    /// For `punnet_api::signing::encode_signed`.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

/// Where the controller's public key is read from: the configured file, else
/// `<data-dir>/controller.pub`.
pub fn controller_key_path(config: &AgentConfig) -> PathBuf {
    config
        .controller_key
        .clone()
        .unwrap_or_else(|| config.data_dir.join(CONTROLLER_PUB_FILE))
}

/// The controller key the agent trusts; `None` when the file does not exist (yet).
pub fn load_controller_key(config: &AgentConfig) -> Result<Option<PublicKey>, IdentityError> {
    let path = controller_key_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_public_key_hex(&text)
            .map(Some)
            .map_err(|source| IdentityError::ControllerKey { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io { path, source }),
    }
}

/// Writes the controller's key to `<data_dir>/controller.pub` (enrolment, and the
/// controller's embedded agent).
pub fn write_controller_key(data_dir: &Path, key: &PublicKey) -> Result<(), IdentityError> {
    let path = data_dir.join(CONTROLLER_PUB_FILE);
    std::fs::create_dir_all(data_dir).map_err(|source| IdentityError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    write_atomic(&path, (public_key_hex(key) + "\n").as_bytes())
        .map_err(|source| IdentityError::Io { path, source })
}

/// What the signature checks did since start: counted per reason, in
/// `<agent-data>/signatures.json` (written at most every 10 s, so a flood of forged
/// messages does not wear the SD card) and as node Events in the status report.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureStatus {
    pub node_key: String,
    pub controller_key: Option<String>,
    /// The newest desired state accepted: the replay floor.
    pub accepted_epoch: Option<u64>,
    pub accepted_generation: Option<u64>,
    /// Refused desired-state messages by reason (`unsigned`, `bad_signature`,
    /// `replayed`, `wrong_node`, `no_controller_key`, `malformed`).
    pub rejected_desired: BTreeMap<&'static str, u64>,
    pub rejected_desired_total: u64,
    pub last_rejection: Option<String>,
    #[serde(skip)]
    dirty: bool,
    #[serde(skip)]
    last_written: Option<Instant>,
    /// Reason → when it was last logged and how many were not logged since.
    #[serde(skip)]
    logged: BTreeMap<&'static str, (Instant, u64)>,
}

impl SignatureStatus {
    pub fn new(node_key: &PublicKey, controller_key: Option<&PublicKey>) -> SignatureStatus {
        SignatureStatus {
            node_key: public_key_hex(node_key),
            controller_key: controller_key.map(public_key_hex),
            dirty: true,
            ..Default::default()
        }
    }

    pub fn set_controller_key(&mut self, key: Option<&PublicKey>) {
        self.controller_key = key.map(public_key_hex);
        self.dirty = true;
    }

    pub fn accepted(&mut self, epoch: u64, generation: u64) {
        self.accepted_epoch = Some(epoch);
        self.accepted_generation = Some(generation);
        self.dirty = true;
    }

    /// Counts a refusal; `Some(held back)` when it should be logged now (once per
    /// reason every 10 s, with how many were not logged in between).
    pub fn rejected(&mut self, reason: &'static str, message: &str, now: Instant) -> Option<u64> {
        *self.rejected_desired.entry(reason).or_default() += 1;
        self.rejected_desired_total += 1;
        self.last_rejection = Some(message.to_string());
        self.dirty = true;
        match self.logged.get_mut(reason) {
            Some((at, held)) if now.duration_since(*at) < QUIET => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                (*at, *held) = (now, 0);
                Some(n)
            }
            None => {
                self.logged.insert(reason, (now, 0));
                Some(0)
            }
        }
    }

    /// The JSON to write, when something changed and the last write is 10 s old.
    pub fn take_if_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        let due = self
            .last_written
            .is_none_or(|at| now.duration_since(at) >= QUIET);
        if !self.dirty || !due {
            return None;
        }
        self.dirty = false;
        self.last_written = Some(now);
        Some(serde_json::to_vec_pretty(self).expect("plain fields serialize"))
    }
}

/// The node Event a refusal is reported as (a stable text per reason, so repeats fold
/// into one Event with a count).
pub fn rejection_event(reason: &str) -> (&'static str, &'static str) {
    match reason {
        "unsigned" => ("UnsignedDesiredState", "refused a desired state that is not signed: something other than the controller publishes on this node's topic"),
        "bad_signature" => ("ForgedDesiredState", "refused a desired state whose signature does not match the controller's key: forged, or the controller's key changed (check controller.pub)"),
        "replayed" => ("ReplayedDesiredState", "refused a desired state older than the one applied: a replayed message"),
        "wrong_node" => ("MisaddressedDesiredState", "refused a desired state naming another node"),
        "no_controller_key" => ("NoControllerKey", "refused a desired state: this agent has no controller key to check it with (enrol the node or copy controller.pub)"),
        _ => ("MalformedDesiredState", "refused a desired state that cannot be read (another protocol version, or garbage)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn node_key_is_made_once_with_its_public_half_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(NODE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let text = std::fs::read_to_string(dir.path().join(NODE_PUB_FILE)).unwrap();
        assert_eq!(parse_public_key_hex(&text).unwrap(), a.public_key());
        assert_eq!(a.sign(b"x").len(), 64);
    }

    #[test]
    fn signature_status_counts_and_holds_back_logs_and_writes() {
        let k = SigningKey::from_seed(&[1; 32]).public_key();
        let mut st = SignatureStatus::new(&k, None);
        let t = Instant::now();
        assert!(st.take_if_due(t).is_some());
        assert!(st.take_if_due(t).is_none(), "nothing changed");
        assert_eq!(st.rejected("unsigned", "a", t), Some(0));
        assert_eq!(
            st.rejected("unsigned", "b", t + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            st.rejected("replayed", "c", t + Duration::from_secs(1)),
            Some(0)
        );
        assert!(
            st.take_if_due(t + Duration::from_secs(2)).is_none(),
            "too soon"
        );
        assert_eq!(
            st.rejected("unsigned", "d", t + Duration::from_secs(11)),
            Some(1)
        );
        let json: serde_json::Value =
            serde_json::from_slice(&st.take_if_due(t + Duration::from_secs(11)).unwrap()).unwrap();
        assert_eq!(json["rejectedDesired"]["unsigned"], 3);
        assert_eq!(json["rejectedDesired"]["replayed"], 1);
        assert_eq!(json["rejectedDesiredTotal"], 4);
        assert_eq!(json["lastRejection"], "d");
        assert_eq!(json["nodeKey"], public_key_hex(&k));
    }

    #[test]
    fn controller_key_from_data_dir_or_flag() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AgentConfig::new("pi-1");
        config.data_dir = dir.path().to_path_buf();
        assert_eq!(load_controller_key(&config).unwrap(), None);
        let key = SigningKey::from_seed(&[7; 32]).public_key();
        write_controller_key(dir.path(), &key).unwrap();
        assert_eq!(load_controller_key(&config).unwrap(), Some(key));
        let other = dir.path().join("other.pub");
        std::fs::write(&other, "not hex\n").unwrap();
        config.controller_key = Some(other);
        let err = load_controller_key(&config).unwrap_err();
        assert!(err.to_string().contains("other.pub"), "{err}");
    }
}
