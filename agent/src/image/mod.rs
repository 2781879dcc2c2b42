//! The node's image store: content-addressed blobs, layers unpacked once and shared by
//! every container through overlayfs, and an index from image references to manifests.
//!
//! Layout under `<data-dir>/images`:
//! ```text
//! blobs/sha256/<hex>   manifests, configs and layer blobs, verified against their digest
//! layers/<diff-id hex>/ one unpacked layer (an overlayfs lower dir), never modified
//! index.json           {"images": {"docker.io/library/busybox:1.36": "sha256:..."}}
//! index.lock           flock(2)ed while index.json is rewritten
//! tmp/                 partial blobs and layers; renamed into place when complete
//! ```
//! Every write lands in `tmp/` first and is renamed into place, so another process (the
//! agent, `punnet-agent image load`) can read or load at the same time, and a crash
//! never leaves half a blob or half a layer where a reader would find it.

mod archive;
mod layer;
mod oci;
mod reference;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub use layer::UnpackError;
pub use oci::ImageConfig;
pub use reference::Reference;

/// One reference an archive load stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Normalised (`docker.io/library/busybox:1.36`).
    pub reference: String,
    /// The manifest digest (`sha256:...`).
    pub digest: String,
}

/// What a runtime needs to run a container of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// The manifest digest (`sha256:...`).
    pub digest: String,
    /// Unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
}

/// One row of [`ImageStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub reference: String,
    pub digest: String,
    /// Bytes of the image's blobs as distributed (config plus compressed layers).
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference:?} is not in the image store {store}: load it with `punnet-agent image load FILE`")]
    NotPresent { reference: String, store: PathBuf },
    #[error("image reference {reference:?} is not valid: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("archive {archive}: blob {digest} is corrupt (its content hashes to {actual}); re-create or re-copy the archive")]
    DigestMismatch {
        archive: PathBuf,
        digest: String,
        actual: String,
    },
    #[error("archive {archive}: {reason}")]
    InvalidArchive { archive: PathBuf, reason: String },
    #[error("archive {archive}: image {digest} has no repository name (ref.name {ref_name:?}); load it with a name, e.g. `punnet-agent image load --name busybox:1.36 FILE`")]
    NeedsName {
        archive: PathBuf,
        digest: String,
        ref_name: Option<String>,
    },
    #[error("image {image}: layer {layer}: {source}")]
    Layer {
        image: String,
        layer: String,
        #[source]
        source: UnpackError,
    },
    #[error("image {image}: layer {layer} unpacks to diff-id {actual}, but the image config expects {expected}; the archive is corrupt")]
    DiffIdMismatch {
        image: String,
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("image {image}: {what} is missing or unreadable in the image store ({reason}); load the image again")]
    Damaged {
        image: String,
        what: String,
        reason: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// The on-disk `index.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    /// Normalised reference → manifest digest.
    #[serde(default)]
    images: BTreeMap<String, String>,
}

/// Temp entries older than this belong to a loader that died; younger ones may be in use.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) the store rooted at `root` (`<data-dir>/images`).
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
        };
        for dir in [store.blob_dir(), store.layers_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(io_ctx(format!("creating {}", dir.display())))?;
        }
        store.remove_stale_tmp();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Loads every image of an OCI image-layout archive (`skopeo copy ... oci-archive:F:name:tag`).
    pub fn load_archive(&self, path: &Path) -> Result<Vec<LoadedImage>, ImageError> {
        self.load_archive_as(path, None)
    }

    /// Like [`load_archive`](Self::load_archive), naming the image `name` (`busybox` or
    /// `busybox:1.36`). Needed when the archive names its image only by a tag (what
    /// `oci-archive:F:latest` writes) or not at all; for a single-image archive that carries
    /// a full name the image is stored under both. A `name` without a tag takes the
    /// archive's tag.
    pub fn load_archive_as(
        &self,
        path: &Path,
        name: Option<&str>,
    ) -> Result<Vec<LoadedImage>, ImageError> {
        archive::load(self, path, name)
    }

    /// Finds a stored image by reference (any Docker spelling, or `name@sha256:...`).
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let digest = self.lookup(reference)?;
        let (_, config) = self.read_manifest_and_config(&digest, reference)?;
        let mut layers = Vec::with_capacity(config.rootfs.diff_ids.len());
        for diff_id in &config.rootfs.diff_ids {
            let dir = self.layer_dir(diff_id).ok_or_else(|| ImageError::Damaged {
                image: reference.to_string(),
                what: format!("layer {diff_id}"),
                reason: "not a sha256 digest".into(),
            })?;
            if !dir.is_dir() {
                return Err(ImageError::Damaged {
                    image: reference.to_string(),
                    what: format!("unpacked layer {}", dir.display()),
                    reason: "no such directory".into(),
                });
            }
            layers.push(dir);
        }
        Ok(ResolvedImage {
            digest,
            layers,
            config: config.config.unwrap_or_default().into(),
        })
    }

    /// Every stored reference with its manifest digest and size, sorted by reference.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let index = self.read_index()?;
        Ok(index
            .images
            .into_iter()
            .map(|(reference, digest)| {
                let size = self
                    .read_blob_json::<oci::Manifest>(&digest)
                    .map(|m| m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>())
                    .unwrap_or(0);
                ImageSummary {
                    reference,
                    digest,
                    size,
                }
            })
            .collect())
    }

    /// The manifest digest `reference` names.
    fn lookup(&self, reference: &str) -> Result<String, ImageError> {
        let not_present = || ImageError::NotPresent {
            reference: reference.to_string(),
            store: self.root.clone(),
        };
        if let Some(hex) = oci::sha256_hex(reference) {
            return match self.blob_path_hex(hex).is_file() {
                true => Ok(reference.to_string()),
                false => Err(not_present()),
            };
        }
        let parsed =
            Reference::parse(reference).map_err(|reason| ImageError::InvalidReference {
                reference: reference.to_string(),
                reason,
            })?;
        if let Some(digest) = parsed.digest {
            let hex = oci::sha256_hex(&digest).unwrap_or_default();
            return match self.blob_path_hex(hex).is_file() {
                true => Ok(digest),
                false => Err(not_present()),
            };
        }
        let key = parsed.tagged_name().ok_or_else(not_present)?;
        self.read_index()?
            .images
            .remove(&key)
            .ok_or_else(not_present)
    }

    fn read_manifest_and_config(
        &self,
        digest: &str,
        image: &str,
    ) -> Result<(oci::Manifest, oci::ImageConfigBlob), ImageError> {
        let damaged = |what: String| {
            move |reason: String| ImageError::Damaged {
                image: image.to_string(),
                what,
                reason,
            }
        };
        let manifest: oci::Manifest = self
            .read_blob_json(digest)
            .map_err(damaged(format!("manifest {digest}")))?;
        let config: oci::ImageConfigBlob = self
            .read_blob_json(&manifest.config.digest)
            .map_err(damaged(format!("config {}", manifest.config.digest)))?;
        Ok((manifest, config))
    }

    fn read_blob_json<T: serde::de::DeserializeOwned>(&self, digest: &str) -> Result<T, String> {
        let path = self
            .blob_path(digest)
            .ok_or_else(|| format!("{digest:?} is not a sha256 digest"))?;
        let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn read_index(&self) -> Result<IndexFile, ImageError> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Io {
                context: format!(
                    "parsing {}; remove it and load the images again",
                    path.display()
                ),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(e) => Err(io_ctx(format!("reading {}", path.display()))(e)),
        }
    }

    /// Adds `entries` to the index under an exclusive lock, so concurrent loaders
    /// (agent and CLI) do not lose each other's references.
    fn add_to_index(&self, entries: &[LoadedImage]) -> Result<(), ImageError> {
        let lock_path = self.root.join("index.lock");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_ctx(format!("opening {}", lock_path.display())))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| {
            io_ctx(format!("locking {}", lock_path.display()))(io::Error::from(e))
        })?;
        let mut index = self.read_index()?;
        for e in entries {
            index.images.insert(e.reference.clone(), e.digest.clone());
        }
        let json = serde_json::to_vec_pretty(&index).map_err(|e| ImageError::Io {
            context: "encoding the image index".into(),
            source: io::Error::other(e),
        })?;
        self.write_atomically(&self.index_path(), &json, true)
    }

    /// Writes `bytes` to `dest` through a temp file and a rename; `sync` makes it durable first.
    fn write_atomically(&self, dest: &Path, bytes: &[u8], sync: bool) -> Result<(), ImageError> {
        let tmp = self.tmp_path("write");
        let mut f =
            fs::File::create(&tmp).map_err(io_ctx(format!("creating {}", tmp.display())))?;
        f.write_all(bytes)
            .and_then(|()| if sync { f.sync_all() } else { Ok(()) })
            .map_err(io_ctx(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_ctx(format!("renaming {} to {}", tmp.display(), dest.display()))(e)
        })
    }

    fn remove_stale_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP);
            if old {
                let path = entry.path();
                let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
            }
        }
    }

    /// A fresh path in `tmp/`, unique across processes and threads.
    fn tmp_path(&self, what: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        self.tmp_dir()
            .join(format!("{what}-{}-{n}-{nanos}", std::process::id()))
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        oci::sha256_hex(digest).map(|hex| self.blob_path_hex(hex))
    }

    fn blob_path_hex(&self, hex: &str) -> PathBuf {
        self.blob_dir().join(hex)
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn layer_dir(&self, diff_id: &str) -> Option<PathBuf> {
        oci::sha256_hex(diff_id).map(|hex| self.layers_dir().join(hex))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }
}
