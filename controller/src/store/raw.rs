//! Writes by tree name rather than by type, for the paths that handle every kind alike:
//! volatile changes reaching the disk, a Namespace's contents being deleted, and a
//! backup being read. Callers hold the write lock. Watchers get the same events as for
//! typed writes (the JSON is decoded into an `Object` of its kind).

use punnet_api::manifest;
use serde_json::Value;
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::{tx_error, Change, Store, StoreError, WatchEvent, REVISION_KEY};

impl Store {
    /// The tree of a kind by its plural, if the store has one.
    pub(super) fn tree_named(&self, plural: &str) -> Option<(&'static str, &sled::Tree)> {
        self.trees.get_key_value(plural).map(|(k, t)| (*k, t))
    }

    /// Writes each `(key, json)` as the new version of an existing entry of one kind,
    /// all in one transaction (one revision each, then one event each). Entries deleted
    /// meanwhile are skipped: there is nothing left to update.
    pub(super) fn write_entries(
        &self,
        plural: &'static str,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let Some((_, tree)) = self.tree_named(plural) else {
            return Ok(());
        };
        let mut revision = self.revision();
        let mut writes = Vec::new();
        for (key, json) in entries {
            if !tree.contains_key(key.as_bytes())? {
                self.volatile.remove(plural, &key);
                continue;
            }
            let mut value: Value =
                serde_json::from_slice(&json).map_err(|source| StoreError::Corrupt {
                    kind: plural,
                    key: key.clone(),
                    source,
                })?;
            revision += 1;
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert(
                    "resourceVersion".into(),
                    Value::String(revision.to_string()),
                );
            }
            let bytes = serde_json::to_vec(&value).expect("JSON values always serialise");
            let sealed = self.seal(plural, &key, bytes);
            writes.push((key, sealed, revision, value));
        }
        if writes.is_empty() {
            return Ok(());
        }
        let rev_bytes = revision.to_be_bytes();
        (tree, &self.meta)
            .transaction(|(tree, meta)| {
                for (key, sealed, _, _) in &writes {
                    tree.insert(key.as_bytes(), sealed.as_slice())?;
                }
                meta.insert(REVISION_KEY, &rev_bytes)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        self.revision
            .store(revision, std::sync::atomic::Ordering::SeqCst);
        for (key, _, revision, value) in writes {
            self.volatile.remove(plural, &key);
            self.announce(revision, Change::Modified, value);
        }
        Ok(())
    }

    /// Removes an entry of any kind (next revision, `Deleted` event). Whether it existed.
    pub(super) fn remove_entry(&self, plural: &'static str, key: &str) -> Result<bool, StoreError> {
        let Some((_, tree)) = self.tree_named(plural) else {
            return Ok(false);
        };
        let Some(current) = self.read_raw(plural, key)? else {
            return Ok(false);
        };
        let revision = self.revision() + 1;
        let rev_bytes = revision.to_be_bytes();
        (tree, &self.meta)
            .transaction(|(tree, meta)| {
                tree.remove(key.as_bytes())?;
                meta.insert(REVISION_KEY, &rev_bytes)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        self.volatile.remove(plural, key);
        self.revision
            .store(revision, std::sync::atomic::Ordering::SeqCst);
        if let Ok(value) = serde_json::from_slice(&current) {
            self.announce(revision, Change::Deleted, value);
        }
        Ok(true)
    }

    fn announce(&self, revision: u64, change: Change, value: Value) {
        match manifest::parse_value(value) {
            Ok(object) => {
                let _ = self.events.send(WatchEvent {
                    revision,
                    change,
                    object: std::sync::Arc::new(object),
                });
            }
            // A kind with a tree but no manifest decoding has no watchers to tell.
            Err(e) => tracing::debug!("revision {revision}: no watch event: {e}"),
        }
    }

    /// Keys of every object in namespace `ns`, by tree (cluster-scoped trees have no
    /// `ns/` keys, so every tree can be asked).
    pub(super) fn keys_in_namespace(
        &self,
        ns: &str,
    ) -> Result<Vec<(&'static str, String)>, StoreError> {
        let prefix = format!("{ns}/");
        let mut out = Vec::new();
        for (plural, tree) in &self.trees {
            for item in tree.scan_prefix(prefix.as_bytes()).keys() {
                out.push((*plural, String::from_utf8_lossy(&item?).into_owned()));
            }
        }
        Ok(out)
    }
}
