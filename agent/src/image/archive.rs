//! Loading an OCI image-layout archive (a tar of `oci-layout`, `index.json` and
//! `blobs/sha256/...`, as `skopeo copy ... oci-archive:FILE:name:tag` writes) into the
//! store: blobs are verified while they are copied, layers unpacked, then the index
//! gains the archive's references.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::layer::{self, HashingReader};
use super::oci::{self, Descriptor, Index};
use super::reference::{self, Reference};
use super::select;
use super::{io_ctx, ImageError, ImageStore, LoadedImage};

/// `index.json` is small; anything bigger is not an image layout.
const MAX_INDEX_BYTES: u64 = 16 << 20;

/// One image the archive holds, with the name it gives it (if any).
struct ArchivedImage {
    manifest_digest: String,
    ref_name: Option<String>,
}

pub(super) fn load(
    store: &ImageStore,
    archive: &Path,
    name: Option<&str>,
) -> Result<Vec<LoadedImage>, ImageError> {
    let name = name
        .map(|n| {
            Reference::parse(n)
                .map(|r| (r, reference::has_explicit_tag(n)))
                .map_err(|reason| ImageError::InvalidReference {
                    reference: n.to_string(),
                    reason,
                })
        })
        .transpose()?;
    let invalid = |reason: String| ImageError::InvalidArchive {
        archive: archive.to_path_buf(),
        reason,
    };

    let index_json = import_blobs(store, archive)?;
    let index: Index = serde_json::from_slice(&index_json)
        .map_err(|e| invalid(format!("index.json is not an OCI image index: {e}")))?;
    let images = select_images(store, archive, &index)?;
    if images.is_empty() {
        return Err(invalid("index.json lists no image manifest".into()));
    }

    // Name every image before unpacking anything, so a missing name fails fast.
    let mut loaded = Vec::new();
    for image in &images {
        for reference in references_for(archive, image, name.as_ref(), images.len())? {
            loaded.retain(|l: &LoadedImage| l.reference != reference);
            loaded.push(LoadedImage {
                reference,
                digest: image.manifest_digest.clone(),
            });
        }
    }
    for image in &images {
        unpack_image(store, archive, &image.manifest_digest)?;
    }
    store.add_to_index(&loaded)?;
    Ok(loaded)
}

/// Copies the archive's blobs into the store, verifying each against its name, and
/// returns the bytes of its `index.json`.
fn import_blobs(store: &ImageStore, archive: &Path) -> Result<Vec<u8>, ImageError> {
    let file = fs::File::open(archive)
        .map_err(io_ctx(format!("opening archive {}", archive.display())))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let gzipped = reader
        .fill_buf()
        .map_err(io_ctx(format!("reading archive {}", archive.display())))?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gzipped {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let read_err = || io_ctx(format!("reading archive {}", archive.display()));
    let mut tar = tar::Archive::new(stream);
    let mut index_json = None;
    for entry in tar.entries().map_err(read_err())? {
        let mut entry = entry.map_err(read_err())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = normalized(&entry.path().map_err(read_err())?);
        if path == "index.json" {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_INDEX_BYTES)
                .read_to_end(&mut bytes)
                .map_err(read_err())?;
            index_json = Some(bytes);
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            if oci::sha256_hex(&format!("sha256:{hex}")).is_some() {
                commit_blob(store, archive, hex, &mut entry)?;
            }
        }
    }
    index_json.ok_or_else(|| ImageError::InvalidArchive {
        archive: archive.to_path_buf(),
        reason: "no index.json: not an OCI image layout archive (convert it with \
                 `skopeo copy docker-archive:FILE oci-archive:OUT:name:tag`)"
            .into(),
    })
}

/// The entry's path without `./` or a leading `/`.
fn normalized(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Streams one blob into `tmp/`, checks its sha256, and renames it into `blobs/`.
fn commit_blob(
    store: &ImageStore,
    archive: &Path,
    hex: &str,
    entry: &mut impl Read,
) -> Result<(), ImageError> {
    let dest = store.blob_path_hex(hex);
    if dest.is_file() {
        return Ok(()); // verified when it was stored
    }
    let tmp = store.tmp_path("blob");
    let result = (|| {
        let mut out =
            fs::File::create(&tmp).map_err(io_ctx(format!("creating {}", tmp.display())))?;
        let mut hashing = HashingReader::new(entry);
        io::copy(&mut hashing, &mut out).map_err(io_ctx(format!(
            "copying blob sha256:{hex} from {} to {}",
            archive.display(),
            tmp.display()
        )))?;
        let (actual, _) = hashing.finish();
        if actual != format!("sha256:{hex}") {
            return Err(ImageError::DigestMismatch {
                archive: archive.to_path_buf(),
                digest: format!("sha256:{hex}"),
                actual,
            });
        }
        fs::rename(&tmp, &dest).map_err(io_ctx(format!(
            "renaming {} to {}",
            tmp.display(),
            dest.display()
        )))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The image manifests `index` names, with nested (multi-platform) indexes resolved to
/// this machine's platform.
fn select_images(
    store: &ImageStore,
    archive: &Path,
    index: &Index,
) -> Result<Vec<ArchivedImage>, ImageError> {
    let mut images = Vec::new();
    for desc in &index.manifests {
        let ref_name = desc.ref_name().map(str::to_string);
        let manifest = if desc.is_index() {
            let nested: Index = read_json(store, archive, desc, "image index")?;
            pick_platform(archive, &nested.manifests)?.clone()
        } else {
            desc.clone()
        };
        images.push(ArchivedImage {
            manifest_digest: manifest.digest,
            ref_name,
        });
    }
    Ok(images)
}

fn pick_platform<'a>(
    archive: &Path,
    manifests: &'a [Descriptor],
) -> Result<&'a Descriptor, ImageError> {
    let platform = crate::platform::detect();
    select::pick(&platform, manifests).map_err(|offered| ImageError::InvalidArchive {
        archive: archive.to_path_buf(),
        reason: format!(
            "no image for {platform} in a multi-platform index (it has {})",
            offered.join(", ")
        ),
    })
}

/// The references to store `image` under (see `ImageStore::load_archive_as`).
fn references_for(
    archive: &Path,
    image: &ArchivedImage,
    name: Option<&(Reference, bool)>,
    image_count: usize,
) -> Result<Vec<String>, ImageError> {
    let archive_ref =
        match image.ref_name.as_deref() {
            Some(r) if !reference::is_bare_word(r) => Some(Reference::parse(r).map_err(
                |reason| ImageError::InvalidArchive {
                    archive: archive.to_path_buf(),
                    reason: format!(
                        "ref.name {r:?} of {} is not a valid reference: {reason}",
                        image.manifest_digest
                    ),
                },
            )?),
            _ => None,
        };
    let archive_tag = match (&archive_ref, image.ref_name.as_deref()) {
        (Some(r), _) => r.tag.clone(),
        (None, Some(bare)) => Some(bare.to_string()),
        (None, None) => None,
    };
    let mut refs = Vec::new();
    if let Some(r) = archive_ref.as_ref().and_then(Reference::tagged_name) {
        refs.push(r);
    }
    let caller_applies = archive_ref.is_none() || image_count == 1;
    match name {
        Some((given, had_tag)) if caller_applies => {
            let mut given = given.clone();
            if !had_tag {
                if let Some(tag) = &archive_tag {
                    given.tag = Some(tag.clone());
                }
            }
            refs.extend(given.tagged_name());
        }
        None if refs.is_empty() => {
            // A bare word could be a tag or a name; Docker treats it as a name.
            let bare = image.ref_name.as_deref().map(Reference::parse);
            match bare {
                Some(Ok(r)) => refs.extend(r.tagged_name()),
                _ => {
                    return Err(ImageError::NeedsName {
                        archive: archive.to_path_buf(),
                        digest: image.manifest_digest.clone(),
                        ref_name: image.ref_name.clone(),
                    })
                }
            }
        }
        _ => {}
    }
    if refs.is_empty() {
        return Err(ImageError::NeedsName {
            archive: archive.to_path_buf(),
            digest: image.manifest_digest.clone(),
            ref_name: image.ref_name.clone(),
        });
    }
    refs.dedup();
    Ok(refs)
}

/// Unpacks the image's layers that the store does not have yet.
fn unpack_image(
    store: &ImageStore,
    archive: &Path,
    manifest_digest: &str,
) -> Result<(), ImageError> {
    let invalid = |reason: String| ImageError::InvalidArchive {
        archive: archive.to_path_buf(),
        reason,
    };
    let manifest_desc = Descriptor {
        media_type: String::new(),
        digest: manifest_digest.to_string(),
        size: 0,
        annotations: None,
        platform: None,
    };
    let manifest: oci::Manifest = read_json(store, archive, &manifest_desc, "manifest")?;
    let config: oci::ImageConfigBlob = read_json(store, archive, &manifest.config, "image config")?;
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(invalid(format!(
            "image {manifest_digest} has {} layers but its config lists {} diff-ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        if desc.media_type.contains("zstd") {
            return Err(invalid(format!(
                "layer {} is zstd-compressed ({}), which this agent cannot unpack; re-copy the image with gzip layers",
                desc.digest, desc.media_type
            )));
        }
        let dest = store
            .layer_dir(diff_id)
            .ok_or_else(|| invalid(format!("diff-id {diff_id:?} is not a sha256 digest")))?;
        if dest.is_dir() {
            continue;
        }
        let blob = blob_checked(store, archive, desc, "layer")?;
        let tmp = store.tmp_path("layer");
        let result = unpack_into(&blob, &tmp, &dest, manifest_digest, desc, diff_id);
        if tmp.exists() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result?;
    }
    Ok(())
}

pub(super) fn unpack_into(
    blob: &Path,
    tmp: &Path,
    dest: &Path,
    image: &str,
    desc: &Descriptor,
    diff_id: &str,
) -> Result<(), ImageError> {
    fs::create_dir(tmp).map_err(io_ctx(format!("creating {}", tmp.display())))?;
    let actual = layer::unpack_layer(blob, tmp).map_err(|source| ImageError::Layer {
        image: image.to_string(),
        layer: desc.digest.clone(),
        source,
    })?;
    if actual != diff_id {
        return Err(ImageError::DiffIdMismatch {
            image: image.to_string(),
            layer: desc.digest.clone(),
            expected: diff_id.to_string(),
            actual,
        });
    }
    match fs::rename(tmp, dest) {
        Ok(()) => Ok(()),
        // Another loader unpacked the same layer first; theirs is as good as ours.
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(io_ctx(format!(
            "renaming {} to {}",
            tmp.display(),
            dest.display()
        ))(e)),
    }
}

/// The stored blob `desc` points to, checked to exist and to have the size it claims.
fn blob_checked(
    store: &ImageStore,
    archive: &Path,
    desc: &Descriptor,
    what: &str,
) -> Result<PathBuf, ImageError> {
    let invalid = |reason: String| ImageError::InvalidArchive {
        archive: archive.to_path_buf(),
        reason,
    };
    let path = store.blob_path(&desc.digest).ok_or_else(|| {
        invalid(format!(
            "{what} digest {:?} is not sha256:<hex>",
            desc.digest
        ))
    })?;
    let len = fs::metadata(&path)
        .map_err(|_| invalid(format!("{what} blob {} is not in the archive", desc.digest)))?
        .len();
    if desc.size != 0 && len != desc.size {
        return Err(invalid(format!(
            "{what} blob {} is {len} bytes but its descriptor says {}",
            desc.digest, desc.size
        )));
    }
    Ok(path)
}

fn read_json<T: serde::de::DeserializeOwned>(
    store: &ImageStore,
    archive: &Path,
    desc: &Descriptor,
    what: &str,
) -> Result<T, ImageError> {
    let path = blob_checked(store, archive, desc, what)?;
    let bytes = fs::read(&path).map_err(io_ctx(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidArchive {
        archive: archive.to_path_buf(),
        reason: format!("{what} {} is not valid JSON for its type: {e}", desc.digest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    /// An uncompressed one-file layer owned by the caller (so unpacking needs no root).
    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_uid(nix::unistd::getuid().as_raw().into());
        h.set_gid(nix::unistd::getgid().as_raw().into());
        b.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    }

    /// An OCI layout archive with `blobs`; `index.json` names the manifest `ref_name`.
    fn archive(blobs: &[(String, Vec<u8>)], manifest: &str, ref_name: &str) -> Vec<u8> {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":0,"annotations":{{"org.opencontainers.image.ref.name":"{ref_name}"}}}}]}}"#
        );
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data).unwrap();
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", index.as_bytes());
        for (d, data) in blobs {
            add(&format!("blobs/sha256/{}", &d["sha256:".len()..]), data);
        }
        b.into_inner().unwrap()
    }

    fn image_blobs(layer: &[u8]) -> (Vec<(String, Vec<u8>)>, String) {
        let config = format!(
            r#"{{"config":{{"Cmd":["/hello"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            digest(layer)
        );
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            digest(config.as_bytes()),
            config.len(),
            digest(layer),
            layer.len()
        );
        let manifest_digest = digest(manifest.as_bytes());
        let blobs = vec![
            (digest(layer), layer.to_vec()),
            (digest(config.as_bytes()), config.into_bytes()),
            (manifest_digest.clone(), manifest.into_bytes()),
        ];
        (blobs, manifest_digest)
    }

    #[test]
    fn an_uncompressed_layer_loads_and_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let (blobs, manifest) = image_blobs(&layer_tar());
        let path = dir.path().join("a.tar");
        fs::write(&path, archive(&blobs, &manifest, "example.org/hello:1")).unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        let loaded = store.load_archive(&path).unwrap();
        assert_eq!(loaded[0].reference, "example.org/hello:1");
        let image = store.resolve("example.org/hello:1").unwrap();
        assert_eq!(image.digest, manifest);
        assert_eq!(image.config.cmd, ["/hello"]);
        assert_eq!(
            fs::read(image.layers[0].join("hello.txt")).unwrap(),
            b"hello"
        );
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let layer = layer_tar();
        let (mut blobs, manifest) = image_blobs(&layer);
        let layer_digest = blobs[0].0.clone();
        blobs[0].1[600] ^= 0xff;
        let path = dir.path().join("bad.tar");
        fs::write(&path, archive(&blobs, &manifest, "example.org/hello:1")).unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        let err = store.load_archive(&path).unwrap_err();
        assert!(
            matches!(&err, ImageError::DigestMismatch { digest, .. } if *digest == layer_digest),
            "{err}"
        );
        assert!(err.to_string().contains(&layer_digest), "{err}");
        assert!(!store.blob_path(&layer_digest).unwrap().exists());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_tag_only_ref_name_needs_or_takes_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let (blobs, manifest) = image_blobs(&layer_tar());
        let store = ImageStore::open(&dir.path().join("images")).unwrap();

        let path = dir.path().join("tagged.tar");
        fs::write(&path, archive(&blobs, &manifest, "3.1")).unwrap();
        let loaded = store.load_archive_as(&path, Some("hello")).unwrap();
        assert_eq!(loaded[0].reference, "docker.io/library/hello:3.1");

        // Without annotation and without a name there is nothing to call the image.
        let index = format!(r#"{{"manifests":[{{"digest":"{manifest}","size":0}}]}}"#);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(index.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "index.json", index.as_bytes())
            .unwrap();
        let unnamed = dir.path().join("unnamed.tar");
        fs::write(&unnamed, b.into_inner().unwrap()).unwrap();
        let err = store.load_archive(&unnamed).unwrap_err();
        assert!(matches!(err, ImageError::NeedsName { .. }), "{err}");
        assert!(err.to_string().contains("--name"), "{err}");
    }
}
