//! The agent's own small store in its data directory, for edge autonomy: the last
//! accepted desired state (so Pods come back after a reboot with no network), the crash
//! streaks behind restart back-off, and which image archives were already imported.
//! Every write is atomic (temp file, fsync, rename, fsync of the directory): a power cut
//! leaves the old or the new file, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
    #[error("desired state generation {got} is older than the applied generation {applied}")]
    OldGeneration { got: u64, applied: u64 },
}

/// Decodes and checks a desired-state message. The same generation again is accepted
/// (a retained message re-delivered on reconnect); an older one is not.
pub fn accept_desired(
    bytes: &[u8],
    node: &str,
    applied: Option<u64>,
) -> Result<DesiredState, DesiredError> {
    let desired: DesiredState = wire::decode(bytes)?;
    if desired.node != node {
        return Err(DesiredError::WrongNode {
            got: desired.node,
            expected: node.to_string(),
        });
    }
    if let Some(applied) = applied {
        if desired.generation < applied {
            return Err(DesiredError::OldGeneration {
                got: desired.generation,
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

    /// The last accepted desired state, checked as if it had just arrived.
    pub fn load_desired(&self, node: &str) -> Result<Option<DesiredState>, StateError> {
        let Some(bytes) = self.read(DESIRED_FILE)? else {
            return Ok(None);
        };
        accept_desired(&bytes, node, None)
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
    use punnet_api::wire::{encode, encode_envelope, Envelope, MessageKind};

    fn msg(node: &str, generation: u64) -> Vec<u8> {
        encode(&DesiredState {
            node: node.into(),
            generation,
            ..Default::default()
        })
    }

    #[test]
    fn acceptance_rules() {
        assert_eq!(
            accept_desired(&msg("pi-1", 3), "pi-1", None)
                .unwrap()
                .generation,
            3
        );
        assert!(accept_desired(&msg("pi-1", 3), "pi-1", Some(3)).is_ok());
        assert_eq!(
            accept_desired(&msg("pi-1", 2), "pi-1", Some(3)),
            Err(DesiredError::OldGeneration { got: 2, applied: 3 })
        );
        assert!(matches!(
            accept_desired(&msg("pi-2", 9), "pi-1", Some(3)),
            Err(DesiredError::WrongNode { .. })
        ));
        let newer = encode_envelope(&Envelope {
            version: wire::PROTOCOL_VERSION + 1,
            kind: MessageKind::DesiredState,
            payload: vec![],
            signature: vec![],
        });
        let err = accept_desired(&newer, "pi-1", None).unwrap_err();
        assert!(err.to_string().contains("newer than this program"), "{err}");
        assert!(matches!(
            accept_desired(b"garbage!", "pi-1", None),
            Err(DesiredError::Wire(_))
        ));
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
