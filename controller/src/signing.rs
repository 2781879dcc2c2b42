//! The controller's side of signed messages: its own signing key (desired state), the
//! registry of node public keys (status), the database's desired-state epoch, and how a
//! rejected status report is counted, logged and recorded.
//!
//! - `ControllerKey`: ed25519, PKCS#8 in `<data-dir>/signing.key` (mode 0600), created
//!   on first start and reused; agents trust its public half (`controller.pub`).
//! - `NodeKeys`: node name → public key, in the sled tree `node-keys` of the store's
//!   database (so backups carry it), cached in memory: every status report is checked
//!   against it, 500 a second for 5,000 nodes reporting every 10 s.
//! - The epoch (tree `signing`, key `desired-epoch`): Unix seconds when the database
//!   was created or last restored. Desired state carries it and agents order messages
//!   by `(epoch, generation)`, so after a restore (generations go back) the controller
//!   is believed again, while a replay of a message from before the restore is not.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use punnet_api::signing::{KeyError, PublicKey, SigningKey};
use punnet_api::ObjectReference;
use thiserror::Error;

use crate::store::Store;

/// The controller's private key, under its data directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// The tree of node public keys.
pub const NODE_KEYS_TREE: &str = "node-keys";
const SIGNING_TREE: &str = "signing";
const EPOCH_KEY: &[u8] = b"desired-epoch";
/// One log line per node and reason at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum SigningError {
    #[error("controller signing key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("controller signing key {path}: {source}; restore the file from a backup, or delete it to make a new key (every agent must then be given the new controller.pub)")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("node keys: {0}")]
    Db(#[from] sled::Error),
}

/// The key desired state is signed with.
#[derive(Debug)]
pub struct ControllerKey {
    key: SigningKey,
    path: PathBuf,
}

impl ControllerKey {
    /// Loads `<data_dir>/signing.key`, or creates it (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<ControllerKey, SigningError> {
        use punnet_agent::identity::{load_or_create_key, KeyFileError};
        let path = data_dir.join(SIGNING_KEY_FILE);
        let (key, created) = load_or_create_key(&path).map_err(|e| match e {
            KeyFileError::Io(path, source) => SigningError::Io { path, source },
            KeyFileError::Key(path, source) => SigningError::Key { path, source },
        })?;
        if created {
            tracing::info!("created the controller's signing key {}", path.display());
        }
        Ok(ControllerKey { key, path })
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

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The public half beside the key, for operators to copy to an agent's data directory.
pub const PUBLIC_KEY_FILE: &str = "controller.pub";

/// Writes `<data_dir>/controller.pub` (64 hex digits) when it is missing or different.
pub fn write_public_key(data_dir: &Path, key: &ControllerKey) -> Result<(), SigningError> {
    let path = data_dir.join(PUBLIC_KEY_FILE);
    let line = punnet_api::signing::public_key_hex(&key.public_key()) + "\n";
    if std::fs::read_to_string(&path).ok().as_deref() == Some(line.as_str()) {
        return Ok(());
    }
    std::fs::write(&path, line).map_err(|source| SigningError::Io { path, source })
}

/// Node name → public key, persisted in the store's database and cached in memory.
#[derive(Debug)]
pub struct NodeKeys {
    tree: sled::Tree,
    cache: RwLock<HashMap<String, PublicKey>>,
}

impl NodeKeys {
    /// Opens the registry in `db` and reads it whole into memory (32 bytes a node).
    pub fn open(db: &sled::Db) -> Result<NodeKeys, sled::Error> {
        let tree = db.open_tree(NODE_KEYS_TREE)?;
        let mut cache = HashMap::new();
        for item in tree.iter() {
            let (k, v) = item?;
            // A value of the wrong length is skipped: that node must register again.
            if let Ok(key) = <PublicKey>::try_from(v.as_ref()) {
                cache.insert(String::from_utf8_lossy(&k).into_owned(), key);
            }
        }
        Ok(NodeKeys {
            tree,
            cache: RwLock::new(cache),
        })
    }

    /// Trusts `pubkey` for `node`'s status from now on (replacing a key it had), durably.
    pub fn register(&self, node: &str, pubkey: [u8; 32]) -> Result<(), sled::Error> {
        self.tree.insert(node.as_bytes(), &pubkey[..])?;
        self.tree.flush()?;
        self.write_cache().insert(node.to_string(), pubkey);
        Ok(())
    }

    /// Registers many keys with one flush (a simulator's whole fleet).
    pub fn register_many(&self, keys: &[(String, [u8; 32])]) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for (node, key) in keys {
            batch.insert(node.as_bytes(), &key[..]);
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        let mut cache = self.write_cache();
        for (node, key) in keys {
            cache.insert(node.clone(), *key);
        }
        Ok(())
    }

    /// Every registered key (for the API's list).
    pub fn all(&self) -> Vec<(String, [u8; 32])> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, k)| (n.clone(), *k))
            .collect()
    }

    /// Forgets `node`'s key: its status is refused until it registers again. Returns
    /// whether it had one.
    pub fn revoke(&self, node: &str) -> Result<bool, sled::Error> {
        let had = self.tree.remove(node.as_bytes())?.is_some();
        self.tree.flush()?;
        self.write_cache().remove(node);
        Ok(had)
    }

    pub fn get(&self, node: &str) -> Option<[u8; 32]> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .copied()
    }

    pub fn len(&self) -> usize {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, PublicKey>> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_epoch(db: &sled::Db) -> Result<Option<u64>, sled::Error> {
    Ok(db
        .open_tree(SIGNING_TREE)?
        .get(EPOCH_KEY)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
}

fn write_epoch(db: &sled::Db, epoch: u64) -> Result<(), sled::Error> {
    db.open_tree(SIGNING_TREE)?
        .insert(EPOCH_KEY, &epoch.to_be_bytes())?;
    Ok(())
}

/// The database's desired-state epoch; a database that has none gets one now.
pub fn load_or_init_epoch(db: &sled::Db) -> Result<u64, sled::Error> {
    match read_epoch(db)? {
        Some(e) => Ok(e),
        None => {
            let e = unix_now().max(1);
            write_epoch(db, e)?;
            Ok(e)
        }
    }
}

/// The epoch after a restore: later than the backup's (even with a clock that is
/// behind, as on a Pi without a real-time clock before NTP), and normally the time now.
pub fn epoch_after_restore(backup_epoch: Option<u64>, now: u64) -> u64 {
    now.max(backup_epoch.map_or(0, |e| e + 1)).max(1)
}

/// Called by a restore, once the backup's entries are in `db`: a new epoch, so agents
/// accept this database's (lower) generations and still refuse older messages.
pub fn bump_epoch_on_restore(db: &sled::Db) -> Result<u64, sled::Error> {
    let epoch = epoch_after_restore(read_epoch(db)?, unix_now());
    write_epoch(db, epoch)?;
    Ok(epoch)
}

/// Why a status report was refused, as counted in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// The node has no registered key (never enrolled, or deleted).
    UnknownNode,
    Unsigned,
    /// Forged, signed by another node's key, or copied from another node's topic.
    BadSignature,
}

impl Rejection {
    pub const ALL: [Rejection; 3] = [
        Rejection::UnknownNode,
        Rejection::Unsigned,
        Rejection::BadSignature,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::UnknownNode => "unknown_node",
            Rejection::Unsigned => "unsigned",
            Rejection::BadSignature => "bad_signature",
        }
    }

    /// The Event reason on the Node.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::UnknownNode => "StatusFromUnknownNode",
            Rejection::Unsigned => "UnsignedStatus",
            Rejection::BadSignature => "ForgedStatus",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

static REJECTED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Refusals by node name, for the fleet page. Names come from topics anyone on the
/// broker can publish to, so the map is bounded: past `BY_NODE_MAX` names, new ones
/// are only counted in the totals.
static BY_NODE: Mutex<Option<HashMap<String, [u64; 3]>>> = Mutex::new(None);
const BY_NODE_MAX: usize = 10_000;

/// Status reports from `node` refused since start, per reason (in `Rejection::ALL`
/// order); zeros for a node never refused.
pub fn rejected_for(node: &str) -> [u64; 3] {
    let guard = BY_NODE.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .as_ref()
        .and_then(|m| m.get(node).copied())
        .unwrap_or_default()
}

fn count_for(node: &str, why: Rejection) {
    let mut guard = BY_NODE.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(counts) = map.get_mut(node) {
        counts[why.index()] += 1;
    } else if map.len() < BY_NODE_MAX {
        let mut counts = [0; 3];
        counts[why.index()] = 1;
        map.insert(node.to_string(), counts);
    }
}

/// Status reports refused for `why` since start (for `/metrics` and tests).
pub fn rejected(why: Rejection) -> u64 {
    REJECTED[why.index()].load(Ordering::Relaxed)
}

/// Appends the rejection counters to a `/metrics` exposition.
pub fn render_metrics(out: &mut String) {
    let name = "punnet_status_rejected_total";
    let _ = writeln!(
        out,
        "# HELP {name} Node status reports refused: no registered node key, unsigned, or a signature that does not verify."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for why in Rejection::ALL {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{}\"}} {}",
            why.label(),
            rejected(why)
        );
    }
}

/// At most one log line per key every `every`; says how many were held back.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: HashMap<String, (Instant, u64)>,
}

impl LogLimiter {
    pub fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: HashMap::new(),
        }
    }

    /// `Some(suppressed since the last line)` when a line for `key` should be written.
    pub fn allow(&mut self, key: &str, now: Instant) -> Option<u64> {
        // A flood from many names must not grow this without bound.
        if self.last.len() > 20_000 {
            self.last.clear();
        }
        match self.last.get_mut(key) {
            Some((at, suppressed)) if now.duration_since(*at) < self.every => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let held = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(held)
            }
            None => {
                self.last.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

static LIMITER: Mutex<Option<LogLimiter>> = Mutex::new(None);

/// A status report from `node` was refused: counted, logged (rate-limited) and recorded
/// as a Warning Event on the Node (repeats fold into its count).
pub fn status_rejected(store: &Store, node: &str, topic: &str, why: Rejection, detail: &str) {
    REJECTED[why.index()].fetch_add(1, Ordering::Relaxed);
    count_for(node, why);
    let held = {
        let mut guard = LIMITER.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .get_or_insert_with(|| LogLimiter::new(LOG_EVERY))
            .allow(&format!("{node}\0{}", why.label()), Instant::now())
    };
    if let Some(held) = held {
        tracing::warn!(
            "node sync: refused status on {topic} ({} refused for this reason since start, {held} like it not logged): {detail}",
            rejected(why)
        );
    }
    let message = match why {
        Rejection::UnknownNode => format!(
            "status from node {node} refused: the node has no registered key (enrol it with a bootstrap token, or register its node.pub with POST /nodekeys)"
        ),
        Rejection::Unsigned => format!(
            "status from node {node} refused: not signed (an agent older than protocol 3, or something else publishing on its topic)"
        ),
        Rejection::BadSignature => format!(
            "status from node {node} refused: its signature does not match the node's registered key (forged, another node's key, or the node made a new key: re-enrol it)"
        ),
    };
    store.recorder().warning(
        ObjectReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.to_string(),
            ..Default::default()
        },
        why.reason(),
        message,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn controller_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = ControllerKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(SIGNING_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = ControllerKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let sig = a.sign(b"hello");
        assert_eq!(
            sig,
            b.sign(b"hello"),
            "ed25519 signatures are deterministic"
        );
        std::fs::write(&path, b"junk").unwrap();
        let err = ControllerKey::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("signing.key"), "{err}");
    }

    #[test]
    fn node_keys_persist_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = SigningKey::from_seed(&[1; 32]).public_key();
        let k2 = SigningKey::from_seed(&[2; 32]).public_key();
        {
            let db = sled::open(dir.path()).unwrap();
            let keys = NodeKeys::open(&db).unwrap();
            assert_eq!(keys.get("pi-1"), None);
            keys.register("pi-1", k1).unwrap();
            keys.register("pi-2", k2).unwrap();
            keys.register("pi-2", k1).unwrap();
            assert!(keys.revoke("pi-1").unwrap());
            assert!(!keys.revoke("pi-1").unwrap());
        }
        let db = sled::open(dir.path()).unwrap();
        let keys = NodeKeys::open(&db).unwrap();
        assert_eq!(keys.get("pi-1"), None);
        assert_eq!(keys.get("pi-2"), Some(k1));
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn epoch_is_kept_and_moves_forward_on_restore() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let e = load_or_init_epoch(&db).unwrap();
        assert!(e > 1_700_000_000);
        assert_eq!(load_or_init_epoch(&db).unwrap(), e);
        assert!(bump_epoch_on_restore(&db).unwrap() > e);
        // A clock that is behind still moves the epoch past the backup's.
        assert_eq!(epoch_after_restore(Some(2_000_000_000), 10), 2_000_000_001);
        assert_eq!(epoch_after_restore(Some(5), 1_900_000_000), 1_900_000_000);
        assert_eq!(epoch_after_restore(None, 0), 1);
    }

    #[test]
    fn log_limiter_holds_back_repeats() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(l.allow("a", t), Some(0));
        assert_eq!(l.allow("a", t + Duration::from_secs(1)), None);
        assert_eq!(l.allow("a", t + Duration::from_secs(2)), None);
        assert_eq!(l.allow("b", t + Duration::from_secs(2)), Some(0));
        assert_eq!(l.allow("a", t + Duration::from_secs(11)), Some(2));
        assert_eq!(l.allow("a", t + Duration::from_secs(12)), None);
    }
}
