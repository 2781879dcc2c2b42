//! The controller's state in sled: one tree per kind (keys `namespace/name`), a global
//! revision bumped by every write and used as `resourceVersion`, optimistic concurrency,
//! and an in-process watch of committed changes (step 3 of the Pod flow).
//!
//! Objects are stored as JSON so that adding a field to a type never makes stored data
//! unreadable. Writes are durable against `kill -9` once `sync()` returns; the API calls
//! it before acknowledging, the controllers do not need to (what they write is derived
//! and re-derived after a restart).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use punnet_api::{ConfigMap, Deployment, Node, Object, Pod, ReplicaSet, Resource, Secret, Time};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use thiserror::Error;
use tokio::sync::broadcast;

use crate::events::Events;

const REVISION_KEY: &[u8] = b"revision";

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
    /// The object after the change (before it, for `Deleted`).
    pub object: Object,
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
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
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
            ReplicaSet::PLURAL,
        ] {
            trees.insert(plural, db.open_tree(plural)?);
        }
        let meta = db.open_tree("meta")?;
        let revision = meta
            .get(REVISION_KEY)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let (events, _) = broadcast::channel(4096);
        Ok(Store {
            db,
            trees,
            meta,
            revision: AtomicU64::new(revision),
            write_lock: Mutex::new(()),
            events,
            recorder: Events::default(),
        })
    }

    /// The revision of the newest committed write.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    /// Committed changes from now on. A receiver that lags gets `Lagged` and must re-list.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
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
        let key = Self::key_of::<T>(namespace, name);
        match self.tree::<T>().get(key.as_bytes())? {
            Some(bytes) => Ok(Some(Self::decode(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Objects of one kind, in one namespace or all, with the revision they were read at.
    pub fn list<T: Resource>(&self, namespace: Option<&str>) -> Result<(Vec<T>, u64), StoreError> {
        // Reading the revision first means the list is at least as new as it.
        let revision = self.revision();
        let iter = match namespace.filter(|_| T::NAMESPACED) {
            Some(ns) => self.tree::<T>().scan_prefix(format!("{ns}/").as_bytes()),
            None => self.tree::<T>().iter(),
        };
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            out.push(Self::decode(&String::from_utf8_lossy(&k), &v)?);
        }
        Ok((out, revision))
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
        let rev_bytes = revision.to_be_bytes();
        (self.tree::<T>(), &self.meta)
            .transaction(|(tree, meta)| {
                tree.insert(key.as_bytes(), bytes.as_slice())?;
                meta.insert(REVISION_KEY, &rev_bytes)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        self.revision.store(revision, Ordering::SeqCst);
        let _ = self.events.send(WatchEvent {
            revision,
            change,
            object: obj.clone().into_object(),
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
        let current: T = match self.tree::<T>().get(key.as_bytes())? {
            Some(bytes) => Self::decode(&key, &bytes)?,
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
        let current: T = match self.tree::<T>().get(key.as_bytes())? {
            Some(bytes) => Self::decode(&key, &bytes)?,
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
        let current: T = match self.tree::<T>().get(key.as_bytes())? {
            Some(bytes) => Self::decode(&key, &bytes)?,
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
        self.revision.store(revision, Ordering::SeqCst);
        let _ = self.events.send(WatchEvent {
            revision,
            change: Change::Deleted,
            object: current.clone().into_object(),
        });
        Ok(Some(current))
    }
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
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.spec.containers.push(punnet_api::Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn create_get_list_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut rx = store.subscribe();
        let a = store.create(pod("a")).unwrap();
        assert_eq!(a.metadata.resource_version.as_deref(), Some("1"));
        assert!(a.metadata.uid.is_some());
        assert!(matches!(
            store.create(pod("a")),
            Err(StoreError::AlreadyExists { .. })
        ));
        store.create(pod("b")).unwrap();
        let (list, rev) = store.list::<Pod>(Some("default")).unwrap();
        assert_eq!((list.len(), rev), (2, 2));
        assert!(store.list::<Pod>(Some("other")).unwrap().0.is_empty());

        // Stale resourceVersion is a conflict; none means "last writer wins".
        let mut stale = a.clone();
        stale.spec.containers[0].image = "other".into();
        store.update(stale.clone()).unwrap();
        let err = store.update(stale).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

        let got: Pod = store.get(Some("default"), "a").unwrap().unwrap();
        assert_eq!(got.metadata.generation, Some(2));
        assert_eq!(got.metadata.uid, a.metadata.uid);

        // No-op update keeps the revision.
        let same = store.update(got.clone()).unwrap();
        assert_eq!(
            same.metadata.resource_version,
            got.metadata.resource_version
        );

        let gone: Option<Pod> = store.delete(Some("default"), "a", None).unwrap();
        assert!(gone.is_some());
        assert!(store.get::<Pod>(Some("default"), "a").unwrap().is_none());
        assert!(store
            .delete::<Pod>(Some("default"), "a", None)
            .unwrap()
            .is_none());

        let kinds: Vec<(u64, Change)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| (e.revision, e.change))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (1, Change::Added),
                (2, Change::Added),
                (3, Change::Modified),
                (4, Change::Deleted)
            ]
        );
    }

    #[test]
    fn revision_and_objects_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.create(pod("a")).unwrap();
            store.delete::<Pod>(Some("default"), "a", None).unwrap();
            store.create(pod("b")).unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.revision(), 3);
        assert!(store.get::<Pod>(Some("default"), "b").unwrap().is_some());
        let c = store.create(pod("c")).unwrap();
        assert_eq!(c.metadata.resource_version.as_deref(), Some("4"));
    }

    #[test]
    fn modify_and_uid_guarded_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.create(pod("a")).unwrap();
        let m = store
            .modify::<Pod>(Some("default"), "a", |p| {
                p.status.phase = Some("Running".into())
            })
            .unwrap()
            .unwrap();
        assert_eq!(m.status.phase.as_deref(), Some("Running"));
        assert_eq!(
            m.metadata.generation,
            Some(1),
            "status changes keep the generation"
        );
        assert!(store
            .delete::<Pod>(Some("default"), "a", Some("other-uid"))
            .unwrap()
            .is_none());
        assert!(store
            .delete::<Pod>(Some("default"), "a", a.metadata.uid.as_deref())
            .unwrap()
            .is_some());
    }
}
