//! The controller's state in sled: one tree per kind (keys `namespace/name`), a global
//! revision bumped by every write and used as `resourceVersion`, optimistic concurrency,
//! and an in-process watch of committed changes (step 3 of the Pod flow).
//!
//! Objects are stored as JSON so that adding a field to a type never makes stored data
//! unreadable. Writes are durable against `kill -9` once `sync()` returns; the API calls
//! it before acknowledging, the controllers do not need to (what they write is derived
//! and re-derived after a restart).
//!
//! Secrets are sealed before they reach sled (`crypto`); a namespaced object can only be
//! created in a Namespace that exists and is not terminating; changes a caller marks
//! volatile (node heartbeats) stay in memory and reach the disk at a bounded rate
//! (`volatile`), so an idle fleet does not wear an SD card; `backup` exports and imports
//! a consistent snapshot.

pub mod backup;
pub mod crypto;
pub mod peek;
mod raw;
mod scope;
mod volatile;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use punnet_api::{
    ConfigMap, DaemonSet, Deployment, Job, Namespace, Node, Object, Pod, ReplicaSet, Resource,
    Secret, Time, DEFAULT_NAMESPACE,
};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use thiserror::Error;
use tokio::sync::broadcast;

use crate::events::Events;
use crypto::{KeyError, SecretKey};
use volatile::Volatile;

const REVISION_KEY: &[u8] = b"revision";
/// In `meta`: a value sealed with the Secrets' key, to tell a wrong key file at open.
const KEY_CHECK_KEY: &[u8] = b"secrets-key-check";
/// Where `Store::open` keeps the key when the caller names no key file (tests, tools).
pub const KEY_FILE: &str = "secrets.key";
/// Trees whose values are sealed with the key (see `crypto`).
const SEALED: &[&str] = &[Secret::PLURAL];
/// How often volatile changes (heartbeats) are written at most, by default.
pub const VOLATILE_PERSIST_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{kind} {key} not found")]
    NotFound { kind: &'static str, key: String },
    #[error("{kind} {key} already exists")]
    AlreadyExists { kind: &'static str, key: String },
    #[error("{kind} {key}: the object has been modified (resourceVersion {given} is stale, the current one is {current}); read it again and retry")]
    Conflict {
        kind: &'static str,
        key: String,
        given: String,
        current: String,
    },
    #[error("{kind} {key}: {message}")]
    Invalid {
        kind: &'static str,
        key: String,
        message: String,
    },
    #[error("stored {kind} {key} cannot be decoded: {source}")]
    Corrupt {
        kind: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("{kind} {key} is forbidden: {message}")]
    Forbidden {
        kind: &'static str,
        key: String,
        message: String,
    },
    #[error("namespaces \"{namespace}\" not found")]
    NamespaceNotFound { namespace: String },
    #[error("{kind} {key}: unable to create new content in namespace {namespace} because it is being terminated")]
    NamespaceTerminating {
        kind: &'static str,
        key: String,
        namespace: String,
    },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("stored {kind} {key} cannot be decrypted with the key in {path}: {source}")]
    Sealed {
        kind: &'static str,
        key: String,
        path: String,
        #[source]
        source: crypto::OpenError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

/// One committed change, in revision order.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub revision: u64,
    pub change: Change,
    /// The object after the change (before it, for `Deleted`). Shared: every watcher
    /// gets the same copy (a Pod is ~7 KiB in memory, and a dozen parts watch).
    pub object: Arc<Object>,
}

pub struct Store {
    db: sled::Db,
    trees: HashMap<&'static str, sled::Tree>,
    meta: sled::Tree,
    revision: AtomicU64,
    /// Serialises read-modify-write cycles so revisions are assigned in commit order.
    write_lock: Mutex<()>,
    events: broadcast::Sender<WatchEvent>,
    /// Kubernetes-style Events; in memory, see `events`.
    recorder: Events,
    /// Seals the values of the `SEALED` trees.
    key: SecretKey,
    /// Changes kept in memory until they are worth a disk write (see `volatile`).
    volatile: Volatile,
    /// The public keys node status must be signed with (see `signing`).
    node_keys: crate::signing::NodeKeys,
    /// This database's desired-state epoch (see `signing`).
    desired_epoch: u64,
}

impl Store {
    /// Opens the database in `dir` with the Secrets' key in `dir/secrets.key` (tests and
    /// tools; the controller keeps the key outside the database: `open_with_key_file`).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with_key_file(dir, &dir.join(KEY_FILE))
    }

    /// Opens the database in `dir`; Secrets are sealed with the key in `key_file`
    /// (created when the database has never sealed anything). Plaintext Secrets from
    /// before encryption are sealed now. A missing or wrong key fails before anything
    /// is written. The `default` Namespace is created on first open.
    pub fn open_with_key_file(dir: &Path, key_file: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // A Pi has little memory: sled's default cache is 1 GB.
            .cache_capacity(8 * 1024 * 1024)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        let mut trees = HashMap::new();
        for plural in [
            Pod::PLURAL,
            Deployment::PLURAL,
            Node::PLURAL,
            ConfigMap::PLURAL,
            Secret::PLURAL,
            DaemonSet::PLURAL,
            Job::PLURAL,
            Namespace::PLURAL,
            ReplicaSet::PLURAL,
        ] {
            trees.insert(plural, db.open_tree(plural)?);
        }
        let meta = db.open_tree("meta")?;
        let revision = meta
            .get(REVISION_KEY)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let check = meta.get(KEY_CHECK_KEY)?;
        let key = crypto::load_or_create(key_file, check.is_some())?;
        match &check {
            Some(check) => key.verify(check)?,
            None => {
                meta.insert(KEY_CHECK_KEY, key.check_value())?;
            }
        }
        let (events, _) = broadcast::channel(4096);
        let node_keys = crate::signing::NodeKeys::open(&db)?;
        let desired_epoch = crate::signing::load_or_init_epoch(&db)?;
        let store = Store {
            db,
            trees,
            meta,
            revision: AtomicU64::new(revision),
            write_lock: Mutex::new(()),
            events,
            recorder: Events::default(),
            key,
            volatile: Volatile::new(VOLATILE_PERSIST_EVERY),
            node_keys,
            desired_epoch,
        };
        store.seal_plaintext()?;
        if store.get::<Namespace>(None, DEFAULT_NAMESPACE)?.is_none() {
            store.create(Namespace::new(DEFAULT_NAMESPACE))?;
        }
        store.db.flush()?;
        Ok(store)
    }

    /// Seals values written before encryption at rest (the migration on open).
    fn seal_plaintext(&self) -> Result<(), StoreError> {
        for plural in SEALED {
            let Some(tree) = self.trees.get(plural) else {
                continue;
            };
            let mut sealed = 0;
            for item in tree.iter() {
                let (k, v) = item?;
                if !crypto::is_sealed(&v) {
                    tree.insert(&k, self.key.seal(&seal_context(plural, &k), &v))?;
                    sealed += 1;
                }
            }
            if sealed > 0 {
                tracing::info!("encrypted {sealed} {plural} stored before encryption at rest");
            }
        }
        Ok(())
    }

    /// Changes marked volatile are written at most this often (default 10 minutes).
    pub fn set_volatile_interval(&self, every: Duration) {
        self.volatile.set_interval(every);
    }

    /// A tree of the same database for data that is not an API object (tokens, node
    /// identities): no revisions, no watch events, not in backups.
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// The revision of the newest committed write.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    /// Committed changes from now on. A receiver that lags gets `Lagged` and must re-list.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
    }

    /// How many objects each tree holds, by resource (plural), sorted: for `/metrics`.
    pub fn counts(&self) -> Result<Vec<(&'static str, usize)>, StoreError> {
        let mut out: Vec<(&'static str, usize)> =
            self.trees.iter().map(|(k, t)| (*k, t.len())).collect();
        out.sort();
        Ok(out)
    }

    /// The registry of node public keys: enrolment registers, deleting a node revokes,
    /// status ingest verifies against it.
    pub fn node_keys(&self) -> &crate::signing::NodeKeys {
        &self.node_keys
    }

    /// The epoch desired state carries (Unix seconds of creation or last restore).
    pub fn desired_epoch(&self) -> u64 {
        self.desired_epoch
    }

    /// Where every part of the controller records Kubernetes-style Events.
    pub fn recorder(&self) -> &Events {
        &self.recorder
    }

    /// Makes every write so far durable (survives `kill -9` of the controller).
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Writes every volatile change now (at shutdown) and makes it durable.
    pub async fn persist_volatile(&self) -> Result<(), StoreError> {
        self.write_volatile()?;
        self.sync().await
    }

    /// The write lock. A caller's closure that panicked under it left nothing half
    /// written (sled transactions are atomic), so a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn tree<T: Resource>(&self) -> &sled::Tree {
        &self.trees[T::PLURAL]
    }

    /// The stored JSON of one entry: its volatile version if it has one, else what sled
    /// holds, opened if the tree is sealed.
    fn read_raw(&self, plural: &'static str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.volatile.get(plural, key) {
            return Ok(Some(v));
        }
        match self.trees[plural].get(key.as_bytes())? {
            Some(v) => self.unseal(plural, key.as_bytes(), v).map(Some),
            None => Ok(None),
        }
    }

    fn unseal(
        &self,
        plural: &'static str,
        key: &[u8],
        value: sled::IVec,
    ) -> Result<Vec<u8>, StoreError> {
        if !SEALED.contains(&plural) {
            return Ok(value.to_vec());
        }
        self.key
            .open(&seal_context(plural, key), &value)
            .map_err(|source| StoreError::Sealed {
                kind: plural,
                key: String::from_utf8_lossy(key).into_owned(),
                path: self.key.path().display().to_string(),
                source,
            })
    }

    /// What goes into sled for an entry's JSON.
    fn seal(&self, plural: &'static str, key: &str, json: Vec<u8>) -> Vec<u8> {
        if SEALED.contains(&plural) {
            self.key.seal(&seal_context(plural, key.as_bytes()), &json)
        } else {
            json
        }
    }

    fn read<T: Resource>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.read_raw(T::PLURAL, key)? {
            Some(bytes) => Ok(Some(Self::decode(key, &bytes)?)),
            None => Ok(None),
        }
    }

    fn key_of<T: Resource>(namespace: Option<&str>, name: &str) -> String {
        match (T::NAMESPACED, namespace) {
            (true, Some(ns)) => format!("{ns}/{name}"),
            _ => name.to_string(),
        }
    }

    fn decode<T: Resource>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
            kind: T::KIND,
            key: key.to_string(),
            source,
        })
    }

    pub fn get<T: Resource>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        self.read(&Self::key_of::<T>(namespace, name))
    }

    /// Objects of one kind, in one namespace or all, with the revision they were read at.
    pub fn list<T: Resource>(&self, namespace: Option<&str>) -> Result<(Vec<T>, u64), StoreError> {
        let mut out = Vec::new();
        let revision = self.visit(namespace, |obj| out.push(obj))?;
        Ok((out, revision))
    }

    /// Like `list`, one object at a time: for the passes over every Pod of a large
    /// fleet that keep only a little of each (50,000 decoded Pods are ~350 MiB at once).
    pub fn visit<T: Resource>(
        &self,
        namespace: Option<&str>,
        mut f: impl FnMut(T),
    ) -> Result<u64, StoreError> {
        self.walk::<T>(namespace, |key, bytes| {
            f(Self::decode(key, bytes)?);
            Ok(())
        })
    }

    /// Like `visit`, for the objects whose fields `P` (a small view of `T`: the few
    /// fields the caller filters on, everything else skipped) pass `keep`. Reading `P`
    /// allocates next to nothing, so a walk that keeps a few Pods of 50,000 costs a parse
    /// of each, not a full decode (~7 KiB in memory per Pod).
    pub fn visit_where<T: Resource, P: serde::de::DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        mut keep: impl FnMut(&P) -> bool,
        mut f: impl FnMut(T),
    ) -> Result<u64, StoreError> {
        self.walk::<T>(namespace, |key, bytes| {
            let view: P = serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
                kind: T::KIND,
                key: key.to_string(),
                source,
            })?;
            if keep(&view) {
                f(Self::decode(key, bytes)?);
            }
            Ok(())
        })
    }

    /// Every stored `T`'s view `P` (see `visit_where`), with no full decode at all.
    pub fn peek<T: Resource, P: serde::de::DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        mut f: impl FnMut(&P),
    ) -> Result<u64, StoreError> {
        self.visit_where::<T, P>(
            namespace,
            |view| {
                f(view);
                false
            },
            |_| {},
        )
    }

    /// Every stored `T` (of `namespace`) as its key and JSON, newest volatile copy first.
    fn walk<T: Resource>(
        &self,
        namespace: Option<&str>,
        mut f: impl FnMut(&str, &[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        // Reading the revision first means what is visited is at least as new as it.
        let revision = self.revision();
        let iter = match namespace.filter(|_| T::NAMESPACED) {
            Some(ns) => self.tree::<T>().scan_prefix(format!("{ns}/").as_bytes()),
            None => self.tree::<T>().iter(),
        };
        for item in iter {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k);
            match self.volatile.get(T::PLURAL, &key) {
                Some(newer) => f(&key, &newer)?,
                None => f(&key, &self.unseal(T::PLURAL, &k, v)?)?,
            }
        }
        Ok(revision)
    }

    fn check_key<T: Resource>(obj: &T) -> Result<String, StoreError> {
        let meta = obj.meta();
        if meta.name.is_empty() {
            return Err(StoreError::Invalid {
                kind: T::KIND,
                key: String::new(),
                message: "metadata.name must not be empty".into(),
            });
        }
        if T::NAMESPACED && meta.namespace.is_none() {
            return Err(StoreError::Invalid {
                kind: T::KIND,
                key: meta.name.clone(),
                message: "metadata.namespace must be set".into(),
            });
        }
        Ok(Self::key_of::<T>(meta.namespace.as_deref(), &meta.name))
    }

    /// Writes `obj` under `key` with the next revision, in one transaction with the
    /// revision counter, and tells watchers. Callers hold `write_lock`.
    fn commit<T: Resource>(&self, key: &str, mut obj: T, change: Change) -> Result<T, StoreError> {
        let revision = self.revision() + 1;
        obj.meta_mut().resource_version = Some(revision.to_string());
        obj.set_type_meta();
        let bytes = serde_json::to_vec(&obj).expect("resource types always serialise");
        let bytes = self.seal(T::PLURAL, key, bytes);
        let rev_bytes = revision.to_be_bytes();
        (self.tree::<T>(), &self.meta)
            .transaction(|(tree, meta)| {
                tree.insert(key.as_bytes(), bytes.as_slice())?;
                meta.insert(REVISION_KEY, &rev_bytes)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        self.volatile.remove(T::PLURAL, key);
        self.revision.store(revision, Ordering::SeqCst);
        let _ = self.events.send(WatchEvent {
            revision,
            change,
            object: Arc::new(obj.clone().into_object()),
        });
        Ok(obj)
    }

    /// Creates an object: assigns uid, creation time, generation and resourceVersion.
    pub fn create<T: Resource>(&self, mut obj: T) -> Result<T, StoreError> {
        let key = Self::check_key(&obj)?;
        let _guard = self.lock();
        if self.tree::<T>().contains_key(key.as_bytes())? {
            return Err(StoreError::AlreadyExists { kind: T::KIND, key });
        }
        if T::NAMESPACED {
            self.check_namespace::<T>(&key, obj.meta().namespace.as_deref().unwrap_or_default())?;
        }
        let meta = obj.meta_mut();
        meta.uid = Some(new_uid());
        meta.creation_timestamp = Some(Time::now());
        meta.generation = Some(1);
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        self.commit(&key, obj, Change::Added)
    }

    /// Replaces an object. A set `resourceVersion` must match the stored one. Server-owned
    /// metadata (uid, creation time) is kept; `generation` goes up when the spec changes.
    /// An update that changes nothing is not written and keeps the resourceVersion.
    pub fn update<T: Resource>(&self, obj: T) -> Result<T, StoreError> {
        let key = Self::check_key(&obj)?;
        let _guard = self.lock();
        let current: T = match self.read(&key)? {
            Some(current) => current,
            None => return Err(StoreError::NotFound { kind: T::KIND, key }),
        };
        self.update_locked(&key, current, obj)
    }

    fn update_locked<T: Resource>(
        &self,
        key: &str,
        current: T,
        mut obj: T,
    ) -> Result<T, StoreError> {
        let cur_rv = current.meta().resource_version.clone().unwrap_or_default();
        if let Some(given) = &obj.meta().resource_version {
            if !given.is_empty() && *given != cur_rv {
                return Err(StoreError::Conflict {
                    kind: T::KIND,
                    key: key.to_string(),
                    given: given.clone(),
                    current: cur_rv,
                });
            }
        }
        let cur_meta = current.meta().clone();
        {
            let meta = obj.meta_mut();
            meta.uid = cur_meta.uid.clone();
            meta.creation_timestamp = cur_meta.creation_timestamp;
            meta.generation = cur_meta.generation;
            meta.resource_version = cur_meta.resource_version.clone();
            if meta.deletion_timestamp.is_none() {
                meta.deletion_timestamp = cur_meta.deletion_timestamp;
                meta.deletion_grace_period_seconds = cur_meta.deletion_grace_period_seconds;
            }
        }
        obj.set_type_meta();
        let old = serde_json::to_value(&current).expect("serialisable");
        let new = serde_json::to_value(&obj).expect("serialisable");
        if old == new {
            return Ok(current);
        }
        if old.get("spec") != new.get("spec") {
            obj.meta_mut().generation = Some(cur_meta.generation.unwrap_or(0) + 1);
        }
        self.commit(key, obj, Change::Modified)
    }

    /// Read-modify-write: applies `f` to the stored object and writes the result (only
    /// if it changed). `Ok(None)` when the object does not exist.
    pub fn modify<T: Resource>(
        &self,
        namespace: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut T),
    ) -> Result<Option<T>, StoreError> {
        let key = Self::key_of::<T>(namespace, name);
        let _guard = self.lock();
        let current: T = match self.read(&key)? {
            Some(current) => current,
            None => return Ok(None),
        };
        let mut next = current.clone();
        f(&mut next);
        next.meta_mut().resource_version = None;
        self.update_locked(&key, current, next).map(Some)
    }

    /// Deletes an object and returns it; `Ok(None)` when it did not exist. With
    /// `uid`, deletes only that incarnation (a controller never deletes a same-named
    /// object created after it decided).
    pub fn delete<T: Resource>(
        &self,
        namespace: Option<&str>,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Option<T>, StoreError> {
        let key = Self::key_of::<T>(namespace, name);
        let _guard = self.lock();
        let current: T = match self.read(&key)? {
            Some(current) => current,
            None => return Ok(None),
        };
        if uid.is_some() && current.meta().uid.as_deref() != uid {
            return Ok(None);
        }
        let revision = self.revision() + 1;
        let rev_bytes = revision.to_be_bytes();
        (self.tree::<T>(), &self.meta)
            .transaction(|(tree, meta)| {
                tree.remove(key.as_bytes())?;
                meta.insert(REVISION_KEY, &rev_bytes)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        self.volatile.remove(T::PLURAL, &key);
        self.revision.store(revision, Ordering::SeqCst);
        let _ = self.events.send(WatchEvent {
            revision,
            change: Change::Deleted,
            object: Arc::new(current.clone().into_object()),
        });
        Ok(Some(current))
    }
}

/// The associated data a sealed value is bound to: its tree and key.
fn seal_context(plural: &str, key: &[u8]) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(plural.len() + 1 + key.len());
    ctx.extend_from_slice(plural.as_bytes());
    ctx.push(b'/');
    ctx.extend_from_slice(key);
    ctx
}

fn tx_error(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::Db(e),
        TransactionError::Abort(()) => unreachable!("no transaction here aborts"),
    }
}

/// A random RFC 4122 version 4 UUID, as Kubernetes uids look.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests;
