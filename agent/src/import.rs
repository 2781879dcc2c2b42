//! Offline fleets: OCI archives dropped into `<data-dir>/images/import/` (by the board
//! image, a USB stick script, `scp`) are loaded into the image store when the agent
//! starts. An archive already loaded with the same size and modification time is
//! skipped, so a reboot does not re-read hundreds of megabytes from an SD card.

use std::collections::BTreeMap;
use std::path::Path;

use crate::image::ImageStore;
use crate::state::{ArchiveStamp, LocalState};

/// Archives (by file name) that are new or changed since they were last loaded.
pub fn archives_to_load(
    found: &BTreeMap<String, ArchiveStamp>,
    loaded: &BTreeMap<String, ArchiveStamp>,
) -> Vec<String> {
    found
        .iter()
        .filter(|(name, stamp)| loaded.get(*name) != Some(stamp))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Loads new archives from `dir`; failures are logged and retried at the next start.
pub fn import_archives(store: &ImageStore, state: &LocalState, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let found: BTreeMap<String, ArchiveStamp> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let name = e.file_name().into_string().ok()?;
            (meta.is_file() && !name.starts_with('.')).then(|| (name, ArchiveStamp::of(&meta)))
        })
        .collect();
    let mut loaded = state.load_imports();
    let todo = archives_to_load(&found, &loaded);
    // Forget archives that were deleted, so the ledger does not grow forever.
    let before = loaded.len();
    loaded.retain(|name, _| found.contains_key(name));
    let mut changed = loaded.len() != before;
    for name in todo {
        let path = dir.join(&name);
        match store.load_archive(&path) {
            Ok(images) => {
                let refs: Vec<_> = images.iter().map(|i| i.reference.as_str()).collect();
                tracing::info!(archive = %path.display(), images = ?refs, "imported image archive");
                loaded.insert(name.clone(), found[&name]);
                changed = true;
            }
            Err(e) => {
                tracing::warn!(archive = %path.display(), error = %e, "could not import image archive")
            }
        }
    }
    if changed {
        if let Err(e) = state.save_imports(&loaded) {
            tracing::warn!(error = %e, "could not record imported archives");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_or_changed_archives_load() {
        let s = |size, mtime_nanos| ArchiveStamp { size, mtime_nanos };
        let found = BTreeMap::from([
            ("a.tar".to_string(), s(10, 1)),
            ("b.tar".to_string(), s(20, 2)),
            ("c.tar".to_string(), s(30, 3)),
        ]);
        let loaded = BTreeMap::from([
            ("a.tar".to_string(), s(10, 1)),
            ("b.tar".to_string(), s(20, 9)),
        ]);
        assert_eq!(archives_to_load(&found, &loaded), vec!["b.tar", "c.tar"]);
    }
}
