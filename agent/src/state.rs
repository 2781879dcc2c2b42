//! The agent's own small store in its data directory, for edge autonomy: the last
//! accepted desired state (so Pods come back after a reboot with no network, and its
//! `(epoch, generation)` stays the floor below which a replayed message is refused), the crash
//! streaks behind restart back-off, and which image archives were already imported.
//! Every write is atomic (temp file, fsync, rename, fsync of the directory): a power cut
//! leaves the old or the new file, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use punnet_api::signing::{self, PublicKey};
use punnet_api::wire::{self, DesiredState, WireError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::reconcile::ContainerKey;

const DESIRED_FILE: &str = "desired.bin";
const STREAKS_FILE: &str = "restart-streaks.json";
const IMPORTS_FILE: &str = "imported-archives.json";

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stored desired state {path} is unreadable ({source}); ignoring it until the controller sends a new one")]
    Desired {
        path: PathBuf,
        #[source]
        source: DesiredError,
    },
}

/// Why a desired-state message was refused.
#[derive(Debug, Error, PartialEq)]
pub enum DesiredError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("desired state is for node {got:?}, this is node {expected:?}")]
    WrongNode { got: String, expected: String },
    #[error("desired state (epoch {got_epoch}, generation {got}) is older than the applied one (epoch {epoch}, generation {applied}): a replayed message, ignored")]
    OldGeneration {
        got_epoch: u64,
        got: u64,
        epoch: u64,
        applied: u64,
    },
    #[error("desired state cannot be checked: this agent has no controller key ({path}); enrol the node, or copy controller.pub from the controller's data directory there")]
    NoControllerKey { path: String },
}

impl DesiredError {
    /// The reason counted in the agent's signature status (`signatures.json`).
    pub fn reason(&self) -> &'static str {
        match self {
            DesiredError::Wire(WireError::Unsigned { .. }) => "unsigned",
            DesiredError::Wire(WireError::BadSignature { .. }) => "bad_signature",
            DesiredError::Wire(_) => "malformed",
            DesiredError::WrongNode { .. } => "wrong_node",
            DesiredError::OldGeneration { .. } => "replayed",
            DesiredError::NoControllerKey { .. } => "no_controller_key",
        }
    }
}

/// The newest desired state accepted: `(epoch, generation)`, compared in that order.
pub type Applied = (u64, u64);

/// Checks a desired-state message: signed by the controller's `key` for this `node`,
/// and not older than `applied` (the same again is accepted: a retained message
/// re-delivered on reconnect). `key_path` only names the file in the error.
pub fn accept_desired(
    bytes: &[u8],
    node: &str,
    key: Option<&PublicKey>,
    key_path: &Path,
    applied: Option<Applied>,
) -> Result<DesiredState, DesiredError> {
    let Some(key) = key else {
        // Still say "wrong version" or "garbage" first when it is that.
        wire::open(bytes)?;
        return Err(DesiredError::NoControllerKey {
            path: key_path.display().to_string(),
        });
    };
    let desired: DesiredState = signing::decode_verified(bytes, node, key)?;
    check_desired(desired, node, applied)
}

/// The checks after the signature: the node named inside, and the replay floor.
fn check_desired(
    desired: DesiredState,
    node: &str,
    applied: Option<Applied>,
) -> Result<DesiredState, DesiredError> {
    if desired.node != node {
        return Err(DesiredError::WrongNode {
            got: desired.node,
            expected: node.to_string(),
        });
    }
    if let Some((epoch, applied)) = applied {
        if (desired.epoch, desired.generation) < (epoch, applied) {
            return Err(DesiredError::OldGeneration {
                got_epoch: desired.epoch,
                got: desired.generation,
                epoch,
                applied,
            });
        }
    }
    Ok(desired)
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

/// Size and modification time of an archive: a changed file is imported again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveStamp {
    pub size: u64,
    pub mtime_nanos: u128,
}

impl ArchiveStamp {
    pub fn of(meta: &std::fs::Metadata) -> ArchiveStamp {
        ArchiveStamp {
            size: meta.len(),
            mtime_nanos: meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos()),
        }
    }
}

pub struct LocalState {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StreakRow {
    pod_uid: String,
    container: String,
    start: u32,
}

impl LocalState {
    pub fn open(data_dir: &Path) -> Result<LocalState, StateError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StateError::Io {
            action: "create data directory",
            path: data_dir.to_path_buf(),
            source,
        })?;
        Ok(LocalState {
            dir: data_dir.to_path_buf(),
        })
    }

    fn read(&self, file: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.dir.join(file);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn write(&self, file: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.dir.join(file);
        write_atomic(&path, bytes).map_err(|source| StateError::Io {
            action: "write",
            path,
            source,
        })
    }

    /// The last accepted desired state. Its signature was checked when it arrived (this
    /// file holds only what was accepted), so it is not checked again: Pods come back
    /// after a reboot even before the controller's key is at hand.
    pub fn load_desired(&self, node: &str) -> Result<Option<DesiredState>, StateError> {
        let Some(bytes) = self.read(DESIRED_FILE)? else {
            return Ok(None);
        };
        wire::decode::<DesiredState>(&bytes)
            .map_err(DesiredError::from)
            .and_then(|d| check_desired(d, node, None))
            .map(Some)
            .map_err(|source| StateError::Desired {
                path: self.dir.join(DESIRED_FILE),
                source,
            })
    }

    /// Keeps the raw message as received, so what is replayed is exactly what was accepted.
    pub fn save_desired(&self, raw: &[u8]) -> Result<(), StateError> {
        self.write(DESIRED_FILE, raw)
    }

    pub fn load_streaks(&self) -> BTreeMap<ContainerKey, u32> {
        let rows: Vec<StreakRow> = self
            .read(STREAKS_FILE)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        rows.into_iter()
            .map(|r| (ContainerKey::new(&r.pod_uid, &r.container), r.start))
            .collect()
    }

    pub fn save_streaks(&self, streaks: &BTreeMap<ContainerKey, u32>) -> Result<(), StateError> {
        let rows: Vec<StreakRow> = streaks
            .iter()
            .map(|(k, s)| StreakRow {
                pod_uid: k.pod_uid.clone(),
                container: k.container.clone(),
                start: *s,
            })
            .collect();
        let json = serde_json::to_vec(&rows).expect("plain rows serialize");
        self.write(STREAKS_FILE, &json)
    }

    pub fn load_imports(&self) -> BTreeMap<String, ArchiveStamp> {
        self.read(IMPORTS_FILE)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_imports(&self, imports: &BTreeMap<String, ArchiveStamp>) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(imports).expect("plain map serializes");
        self.write(IMPORTS_FILE, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::signing::{encode_signed, SigningKey};
    use punnet_api::wire::{encode, encode_envelope, Envelope, MessageKind};

    fn controller() -> SigningKey {
        SigningKey::from_seed(&[9; 32])
    }

    fn signed(node: &str, epoch: u64, generation: u64) -> Vec<u8> {
        encode_signed(
            &DesiredState {
                node: node.into(),
                generation,
                epoch,
                ..Default::default()
            },
            node,
            &controller(),
        )
    }

    fn msg(node: &str, generation: u64) -> Vec<u8> {
        signed(node, 1, generation)
    }

    fn accept(bytes: &[u8], applied: Option<Applied>) -> Result<DesiredState, DesiredError> {
        let key = controller().public_key();
        accept_desired(
            bytes,
            "pi-1",
            Some(&key),
            Path::new("controller.pub"),
            applied,
        )
    }

    #[test]
    fn acceptance_rules() {
        assert_eq!(accept(&msg("pi-1", 3), None).unwrap().generation, 3);
        assert!(accept(&msg("pi-1", 3), Some((1, 3))).is_ok());
        let err = accept(&msg("pi-1", 2), Some((1, 3))).unwrap_err();
        assert_eq!(err.reason(), "replayed");
        assert!(err.to_string().contains("replayed"), "{err}");
        // The payload names another node (and the signature is for it): refused.
        assert!(matches!(
            accept(&msg("pi-2", 9), Some((1, 3))).unwrap_err().reason(),
            "bad_signature"
        ));
        // Signed for pi-1, but naming pi-2 inside: refused too.
        let inside = encode_signed(
            &DesiredState {
                node: "pi-2".into(),
                generation: 9,
                ..Default::default()
            },
            "pi-1",
            &controller(),
        );
        assert!(matches!(
            accept(&inside, None),
            Err(DesiredError::WrongNode { .. })
        ));
        let newer = encode_envelope(&Envelope {
            version: wire::PROTOCOL_VERSION + 1,
            kind: MessageKind::DesiredState,
            payload: vec![],
            signature: vec![],
        });
        let err = accept(&newer, None).unwrap_err();
        assert!(err.to_string().contains("newer than this program"), "{err}");
        assert_eq!(accept(b"garbage!", None).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn unsigned_forged_and_keyless_are_refused() {
        let unsigned = encode(&DesiredState {
            node: "pi-1".into(),
            generation: 5,
            ..Default::default()
        });
        assert_eq!(accept(&unsigned, None).unwrap_err().reason(), "unsigned");
        let forged = encode_signed(
            &DesiredState {
                node: "pi-1".into(),
                generation: 5,
                ..Default::default()
            },
            "pi-1",
            &SigningKey::from_seed(&[1; 32]),
        );
        assert_eq!(accept(&forged, None).unwrap_err().reason(), "bad_signature");
        let err = accept_desired(
            &msg("pi-1", 3),
            "pi-1",
            None,
            Path::new("/d/controller.pub"),
            None,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "no_controller_key");
        assert!(err.to_string().contains("/d/controller.pub"), "{err}");
    }

    #[test]
    fn a_new_epoch_outranks_higher_generations_of_an_older_one() {
        // After the controller's database was restored: generations went back, the
        // epoch went forward.
        assert!(accept(&signed("pi-1", 2, 10), Some((1, 500))).is_ok());
        // A message from before the restore, replayed afterwards.
        let err = accept(&signed("pi-1", 1, 600), Some((2, 10))).unwrap_err();
        assert_eq!(err.reason(), "replayed");
    }

    #[test]
    fn persists_desired_streaks_and_imports() {
        let dir = tempfile::tempdir().unwrap();
        let state = LocalState::open(&dir.path().join("agent")).unwrap();
        assert_eq!(state.load_desired("pi-1").unwrap(), None);
        state.save_desired(&msg("pi-1", 4)).unwrap();
        assert_eq!(state.load_desired("pi-1").unwrap().unwrap().generation, 4);
        assert!(state.load_desired("pi-2").is_err());

        let streaks = BTreeMap::from([(ContainerKey::new("u", "web"), 6)]);
        state.save_streaks(&streaks).unwrap();
        assert_eq!(state.load_streaks(), streaks);

        let imports = BTreeMap::from([(
            "busybox.tar".to_string(),
            ArchiveStamp {
                size: 10,
                mtime_nanos: 5,
            },
        )]);
        state.save_imports(&imports).unwrap();
        assert_eq!(state.load_imports(), imports);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("agent"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
