//! Backup and restore of the whole database as JSON lines: a header with the revision,
//! then one line per stored entry with its bytes as stored (Secrets stay sealed, so a
//! backup is no more sensitive than the database; restoring it needs the same key file,
//! which is backed up separately).
//!
//! `Store::export` runs under the write lock, so the snapshot is one consistent
//! revision even while the controller serves writes (the running controller exports
//! through its API, `GET /backup`). `restore` writes into a new database directory; the
//! restored revision never goes below the one of a database it replaces, so
//! resourceVersions keep going up.

use std::io::{BufRead, Write};
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Store, StoreError, REVISION_KEY};

/// The version of the backup format in the header line.
pub const FORMAT: u32 = 1;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backup line {line}: {message}")]
    Format { line: usize, message: String },
    #[error("data directory {path} already holds a database: restore into an empty directory, or pass --force to replace it")]
    NotEmpty { path: String },
    #[error("database at {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    punnet_backup: u32,
    revision: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    tree: String,
    /// Keys and values in base64: values may be sealed bytes.
    key: String,
    value: String,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub entries: usize,
    pub revision: u64,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Store {
    /// Writes a consistent snapshot of every tree to `out`; returns its revision.
    /// Volatile changes are written first, so the snapshot has them.
    pub fn export(&self, out: &mut impl Write) -> std::io::Result<u64> {
        self.write_volatile()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let _guard = self.lock();
        export_db(&self.db, out)
    }
}

/// Writes every tree of `db` to `out` (the caller makes sure nothing writes meanwhile:
/// the store's lock, or a database no controller has open). Returns the revision.
pub fn export_db(db: &sled::Db, out: &mut impl Write) -> std::io::Result<u64> {
    let sled_io = |e: sled::Error| std::io::Error::other(e.to_string());
    let revision = db
        .open_tree("meta")
        .and_then(|m| m.get(REVISION_KEY))
        .map_err(sled_io)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    let header = Header {
        punnet_backup: FORMAT,
        revision,
    };
    writeln!(out, "{}", serde_json::to_string(&header)?)?;
    for name in db.tree_names() {
        let tree = db.open_tree(&name).map_err(sled_io)?;
        for item in tree.iter() {
            let (k, v) = item.map_err(sled_io)?;
            let entry = Entry {
                tree: String::from_utf8_lossy(&name).into_owned(),
                key: b64().encode(&k),
                value: b64().encode(&v),
            };
            writeln!(out, "{}", serde_json::to_string(&entry)?)?;
        }
    }
    out.flush()?;
    Ok(revision)
}

/// Whether `dir` holds anything (a database to be replaced).
fn has_contents(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Restores the backup in `input` into the database directory `db_dir`. A non-empty
/// `db_dir` is refused unless `force`, which replaces it (keeping its revision as a
/// floor). Nothing is opened with the Secrets' key here: the next open checks it.
pub fn restore(db_dir: &Path, input: impl BufRead, force: bool) -> Result<Restored, BackupError> {
    let db_err = |source| BackupError::Db {
        path: db_dir.display().to_string(),
        source,
    };
    let mut floor = 0;
    if has_contents(db_dir) {
        if !force {
            return Err(BackupError::NotEmpty {
                path: db_dir.display().to_string(),
            });
        }
        let old = sled::open(db_dir).map_err(db_err)?;
        floor = old
            .open_tree("meta")
            .and_then(|m| m.get(REVISION_KEY))
            .map_err(db_err)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        drop(old);
        std::fs::remove_dir_all(db_dir).map_err(|source| BackupError::Io {
            path: db_dir.display().to_string(),
            source,
        })?;
    }
    let mut lines = input.lines().enumerate();
    let format = |line: usize, message: String| BackupError::Format {
        line: line + 1,
        message,
    };
    let io = |source| BackupError::Io {
        path: "backup".into(),
        source,
    };
    let header: Header = match lines.next() {
        Some((i, line)) => {
            let line = line.map_err(io)?;
            serde_json::from_str(&line)
                .map_err(|e| format(i, format!("not a Punnet backup header: {e}")))?
        }
        None => return Err(format(0, "the file is empty".into())),
    };
    if header.punnet_backup != FORMAT {
        return Err(format(
            0,
            format!(
                "backup format {} is not supported (this controller reads format {FORMAT})",
                header.punnet_backup
            ),
        ));
    }
    // Into a fresh database only once the whole file has been read: a broken backup
    // must not leave a half-restored directory behind.
    let mut entries = Vec::new();
    for (i, line) in lines {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(&line).map_err(|e| format(i, e.to_string()))?;
        let key = b64()
            .decode(&e.key)
            .map_err(|e| format(i, format!("key: {e}")))?;
        let value = b64()
            .decode(&e.value)
            .map_err(|e| format(i, format!("value: {e}")))?;
        entries.push((e.tree, key, value));
    }
    let db = sled::open(db_dir).map_err(db_err)?;
    for (tree, key, value) in &entries {
        db.open_tree(tree)
            .and_then(|t| t.insert(key.as_slice(), value.as_slice()))
            .map_err(db_err)?;
    }
    let revision = header.revision.max(floor);
    db.open_tree("meta")
        .and_then(|m| m.insert(REVISION_KEY, &revision.to_be_bytes()))
        .map_err(db_err)?;
    // Generations may go back now: a new epoch makes agents believe them (see `signing`).
    crate::signing::bump_epoch_on_restore(&db).map_err(db_err)?;
    db.flush().map_err(db_err)?;
    Ok(Restored {
        entries: entries.len(),
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{ConfigMap, Secret};

    #[test]
    fn round_trip_keeps_objects_revision_and_sealed_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("secrets.key");
        let mut backup = Vec::new();
        let revision = {
            let store = Store::open_with_key_file(&dir.path().join("db"), &key_file).unwrap();
            let mut c = ConfigMap::default();
            c.metadata.name = "cfg".into();
            c.metadata.namespace = Some("default".into());
            c.data.insert("a".into(), "1".into());
            store.create(c).unwrap();
            let mut s = Secret::default();
            s.metadata.name = "pw".into();
            s.metadata.namespace = Some("default".into());
            s.string_data.insert("pw".into(), "hunter2".into());
            s.fold_string_data();
            store.create(s).unwrap();
            store.export(&mut backup).unwrap()
        };
        let text = String::from_utf8(backup.clone()).unwrap();
        assert!(
            !text.contains("aHVudGVyMg"),
            "the Secret's data stays sealed"
        );

        let target = dir.path().join("restored");
        std::fs::create_dir_all(&target).unwrap();
        let done = restore(&target, backup.as_slice(), false).unwrap();
        assert_eq!(done.revision, revision);
        let err = restore(&target, backup.as_slice(), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");

        let store = Store::open_with_key_file(&target, &key_file).unwrap();
        assert_eq!(store.revision(), revision);
        let s: Secret = store.get(Some("default"), "pw").unwrap().unwrap();
        assert_eq!(s.entries()["pw"], b"hunter2");
        assert!(store
            .get::<ConfigMap>(Some("default"), "cfg")
            .unwrap()
            .is_some());
        let next = store
            .modify::<ConfigMap>(Some("default"), "cfg", |c| {
                c.data.insert("b".into(), "2".into());
            })
            .unwrap()
            .unwrap();
        assert_eq!(
            next.metadata.resource_version,
            Some((revision + 1).to_string())
        );
        let later = store.revision();
        drop(store);

        // Replacing a newer database keeps its revision as the floor.
        let again = restore(&target, backup.as_slice(), true).unwrap();
        assert_eq!(again.revision, later);

        // Another key cannot read the restored Secrets, and says which file it used.
        let wrong = dir.path().join("wrong.key");
        crypto_wrong_key(&target, &wrong);
    }

    fn crypto_wrong_key(db: &Path, wrong: &Path) {
        super::super::crypto::SecretKey::create(wrong).unwrap();
        let err = Store::open_with_key_file(db, wrong)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("wrong.key") && err.contains("not the key"),
            "{err}"
        );
    }

    #[test]
    fn a_broken_backup_restores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("db");
        let err = restore(
            &target,
            &b"{\"punnetBackup\":1,\"revision\":3}\nnot json\n"[..],
            false,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("backup line 2:"), "{err}");
        assert!(!has_contents(&target));
    }
}
