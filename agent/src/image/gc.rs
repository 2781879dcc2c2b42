//! Garbage collection: when the store's filesystem has less free space than asked for,
//! remove the least recently used images that no Pod uses, with the blobs and unpacked
//! layers no kept image shares, until there is enough.
//!
//! "Used" is the manifest blob's mtime, which [`ImageStore::resolve`] and pulls touch.
//! GC holds `gc.lock` exclusively while pulls and archive loads hold it shared, so it
//! never deletes a layer that a running pull found present and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::oci::{self, ImageConfigBlob, Manifest};
use super::reference::Reference;
use super::{io_ctx, ImageError, ImageStore, IndexFile};

/// What a [`ImageStore::gc`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Every index reference removed, in removal order.
    pub removed_references: Vec<String>,
    /// Manifest digests of the removed images, least recently used first.
    pub removed_images: Vec<String>,
    pub free_bytes_before: u64,
    pub free_bytes_after: u64,
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, ImageError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| {
        io_ctx(format!("reading free space of {}", path.display()))(io::Error::from(e))
    })?;
    // Both are 32-bit on 32-bit ARM, 64-bit elsewhere.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.blocks_available()) * u64::from(st.fragment_size()))
}

pub(super) fn gc(
    store: &ImageStore,
    in_use: &[String],
    min_free_bytes: u64,
    free: &mut dyn FnMut() -> Result<u64, ImageError>,
) -> Result<GcReport, ImageError> {
    let _gc = store.lock_file("gc.lock", true)?;
    let mut report = GcReport {
        free_bytes_before: free()?,
        ..GcReport::default()
    };
    report.free_bytes_after = report.free_bytes_before;
    if report.free_bytes_before >= min_free_bytes {
        return Ok(report);
    }
    let _index_lock = store.lock_file("index.lock", true)?;
    let mut index = store.read_index()?;
    let keep = in_use_digests(&index, in_use);
    let mut candidates: Vec<(SystemTime, String)> = index
        .images
        .values()
        .filter(|d| !keep.contains(*d))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|d| (store.last_used(d), d.clone()))
        .collect();
    candidates.sort();

    for (_, digest) in candidates {
        if report.free_bytes_after >= min_free_bytes {
            break;
        }
        let refs: Vec<String> = index
            .images
            .iter()
            .filter(|(_, d)| **d == digest)
            .map(|(r, _)| r.clone())
            .collect();
        for r in &refs {
            index.images.remove(r);
        }
        store.write_index(&index)?;
        remove_unshared(store, &index, &digest)?;
        report.removed_references.extend(refs);
        report.removed_images.push(digest);
        report.free_bytes_after = free()?;
    }
    Ok(report)
}

/// Manifest digests named by `in_use` (references in any spelling, `name@digest`, or
/// bare digests). A reference the index does not know protects nothing, since nothing
/// of it is stored.
fn in_use_digests(index: &IndexFile, in_use: &[String]) -> BTreeSet<String> {
    let mut keep = BTreeSet::new();
    for item in in_use {
        if oci::sha256_hex(item).is_some() {
            keep.insert(item.clone());
            // An index digest (from an imageID) maps to its platform manifest.
            keep.extend(
                index
                    .images
                    .iter()
                    .filter(|(k, _)| k.ends_with(&format!("@{item}")))
                    .map(|(_, d)| d.clone()),
            );
            continue;
        }
        if let Some(d) = index.images.get(item) {
            keep.insert(d.clone());
        }
        let Ok(parsed) = Reference::parse(item) else {
            continue;
        };
        if let Some(digest) = &parsed.digest {
            keep.insert(digest.clone());
            let key = format!("{}/{}@{digest}", parsed.domain, parsed.path);
            keep.extend(index.images.get(&key).cloned());
        }
        if let Some(key) = parsed.tagged_name() {
            keep.extend(index.images.get(&key).cloned());
        }
    }
    keep
}

/// Blob digests and diff-ids an image uses; unreadable parts are simply not listed.
fn parts_of(store: &ImageStore, digest: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut blobs = BTreeSet::from([digest.to_string()]);
    let mut diff_ids = BTreeSet::new();
    if let Ok(manifest) = store.read_blob_json::<Manifest>(digest) {
        blobs.insert(manifest.config.digest.clone());
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        if let Ok(config) = store.read_blob_json::<ImageConfigBlob>(&manifest.config.digest) {
            diff_ids.extend(config.rootfs.diff_ids);
        }
    }
    (blobs, diff_ids)
}

/// Deletes the blobs and layers of `digest` that no image left in `index` uses.
fn remove_unshared(store: &ImageStore, index: &IndexFile, digest: &str) -> Result<(), ImageError> {
    let (blobs, diff_ids) = parts_of(store, digest);
    let mut kept_blobs = BTreeSet::new();
    let mut kept_layers = BTreeSet::new();
    let remaining: BTreeMap<&String, ()> = index.images.values().map(|d| (d, ())).collect();
    for d in remaining.keys() {
        let (b, l) = parts_of(store, d);
        kept_blobs.extend(b);
        kept_layers.extend(l);
    }
    // Layers first, manifest last: a crash halfway leaves an image that fails to
    // resolve ("load it again"), never a manifest pointing at half-deleted layers
    // that still looks complete.
    for diff_id in diff_ids.difference(&kept_layers) {
        if let Some(dir) = store.layer_dir(diff_id) {
            remove_path(&dir)?;
        }
    }
    let mut blobs: Vec<&String> = blobs.difference(&kept_blobs).collect();
    blobs.sort_by_key(|b| *b == digest);
    for blob in blobs {
        if let Some(path) = store.blob_path(blob) {
            remove_path(&path)?;
        }
    }
    Ok(())
}

fn remove_path(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_ctx(format!("removing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::LoadedImage;
    use std::time::Duration;

    /// Stores a fake image (manifest, config, one layer blob and dir per layer name)
    /// under `reference`, used `age_secs` ago; layers named alike are shared.
    fn fake_image(store: &ImageStore, reference: &str, layers: &[&str], age_secs: u64) -> String {
        let put = |bytes: &[u8]| {
            let digest = super::super::fetch::sha256_digest(bytes);
            fs::write(store.blob_path(&digest).unwrap(), bytes).unwrap();
            digest
        };
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for name in layers {
            let blob = put(format!("layer-{name}").as_bytes());
            let diff_id = super::super::fetch::sha256_digest(format!("diff-{name}").as_bytes());
            fs::create_dir_all(store.layer_dir(&diff_id).unwrap().join("etc")).unwrap();
            descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob, "size": 7}));
            diff_ids.push(diff_id);
        }
        let config = put(
            serde_json::json!({"architecture": "amd64", "os": "linux", "note": reference, "rootfs": {"type": "layers", "diff_ids": diff_ids}})
                .to_string()
                .as_bytes(),
        );
        let manifest = put(
            serde_json::json!({"schemaVersion": 2, "config": {"digest": config, "size": 1}, "layers": descs})
                .to_string()
                .as_bytes(),
        );
        store
            .add_to_index(&[LoadedImage {
                reference: reference.into(),
                digest: manifest.clone(),
            }])
            .unwrap();
        let when = SystemTime::now() - Duration::from_secs(age_secs);
        fs::File::open(store.blob_path(&manifest).unwrap())
            .unwrap()
            .set_modified(when)
            .unwrap();
        manifest
    }

    /// A filesystem that gains 100 bytes of free space per removed image.
    fn fake_free(store: &ImageStore, start: u64) -> impl FnMut() -> Result<u64, ImageError> + '_ {
        move || Ok(start + 100 * (3 - store.read_index().unwrap().images.len() as u64))
    }

    #[test]
    fn least_recently_used_unused_images_go_first_and_shared_layers_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        let old = fake_image(&store, "docker.io/library/old:1", &["base", "old"], 300);
        let mid = fake_image(&store, "docker.io/library/mid:1", &["base", "mid"], 200);
        let used = fake_image(&store, "docker.io/library/used:1", &["base"], 400);

        // Needs one image's worth: only the oldest unused one goes.
        let report = gc(
            &store,
            &["used:1".to_string()],
            150,
            &mut fake_free(&store, 50),
        )
        .unwrap();
        assert_eq!(report.removed_images, vec![old.clone()]);
        assert_eq!(report.removed_references, vec!["docker.io/library/old:1"]);
        assert_eq!(
            (report.free_bytes_before, report.free_bytes_after),
            (50, 150)
        );
        assert!(!store.blob_path(&old).unwrap().exists());
        let layer = |n: &str| {
            store
                .layer_dir(&super::super::fetch::sha256_digest(
                    format!("diff-{n}").as_bytes(),
                ))
                .unwrap()
        };
        assert!(!layer("old").exists());
        assert!(
            layer("base").is_dir(),
            "a layer shared with kept images stays"
        );
        assert!(store.blob_path(&mid).unwrap().exists());

        // Asking for far more never removes the image in use, named here by digest.
        let report = gc(
            &store,
            std::slice::from_ref(&used),
            10_000,
            &mut fake_free(&store, 50),
        )
        .unwrap();
        assert_eq!(report.removed_images, vec![mid]);
        assert!(store.resolve("used:1").is_ok());
        assert!(layer("base").is_dir());
        assert!(!layer("mid").exists());
    }

    #[test]
    fn enough_free_space_removes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        fake_image(&store, "docker.io/library/a:1", &["a"], 10);
        let report = gc(&store, &[], 100, &mut || Ok(100)).unwrap();
        assert!(report.removed_images.is_empty());
        assert!(store.resolve("a:1").is_ok());
    }
}
