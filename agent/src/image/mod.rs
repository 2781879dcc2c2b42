//! The node's image store: content-addressed blobs, layers unpacked once and shared by
//! every container through overlayfs, and an index from image references to manifests.
//!
//! Images come from OCI archives ([`ImageStore::load_archive`]) or registries
//! ([`ImageStore::pull`]). Layout under `<data-dir>/images`:
//! ```text
//! blobs/sha256/<hex>   manifests, configs and (archive-loaded) layer blobs, verified
//!                      against their digest; a manifest's mtime is when it was last used
//! layers/<diff-id hex>/ one unpacked layer (an overlayfs lower dir), never modified
//! index.json           {"images": {"docker.io/library/busybox:1.36": "sha256:..."}}
//!                      (pulls also add `repo@sha256:<index or manifest digest>` keys)
//! index.lock           flock(2)ed while index.json is rewritten
//! gc.lock              shared by pulls and loads, exclusive for garbage collection
//! tmp/                 partial blobs (`partial-<hex>`, resumed by the next pull) and
//!                      layers; renamed into place when complete
//! ```
//! Every write lands in `tmp/` first and is renamed into place, so another process (the
//! agent, `punnet-agent image load`) can read or load at the same time, and a crash
//! never leaves half a blob or half a layer where a reader would find it.

mod archive;
mod credentials;
mod fetch;
mod gc;
mod layer;
mod oci;
mod progress;
mod pull;
mod reference;
mod select;
mod session;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub use credentials::{docker_config_credentials, CredentialsError, RegistryCredentials};
pub use gc::{free_bytes, GcReport};
pub use layer::UnpackError;
pub use oci::ImageConfig;
pub use pull::{
    ProgressFn, PullError, PullOptions, PullProgress, PulledImage, DEFAULT_MAX_CONCURRENT_LAYERS,
};
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
    #[error("image {image}: layer {layer} unpacks to diff-id {actual}, but the image config expects {expected}; the image (its archive or its registry copy) is corrupt")]
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

#[derive(Debug, Clone)]
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
        let _guard = self.lock_file("gc.lock", false)?;
        archive::load(self, path, name)
    }

    /// Pulls `reference` (by tag or digest) from its registry for `opts.platform`, unless
    /// its layers are already here; afterwards [`resolve`](Self::resolve) finds it under
    /// [`PulledImage::reference`] and [`PulledImage::image_id`]. Network and unpacking
    /// run off the async threads' backs (unpacking on `spawn_blocking`).
    pub async fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> Result<PulledImage, PullError> {
        pull::pull(self, reference, opts).await
    }

    /// Removes least recently used images that `in_use` (references in any spelling,
    /// `name@sha256:...`, or digests) does not name, with the blobs and layers no kept
    /// image shares, until the store's filesystem has `min_free_bytes` free or nothing
    /// unused is left. Blocks while a pull or archive load runs: call it from a
    /// blocking thread.
    pub fn gc(&self, in_use: &[String], min_free_bytes: u64) -> Result<GcReport, ImageError> {
        let root = self.root.clone();
        gc::gc(self, in_use, min_free_bytes, &mut || free_bytes(&root))
    }

    /// Finds a stored image by reference (any Docker spelling, or `name@sha256:...`).
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let digest = self.lookup(reference)?;
        let (_, config) = self.read_manifest_and_config(&digest, reference)?;
        self.touch(&digest);
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

    /// The Pod status `imageID` of a stored image: `repository@sha256:...` with the digest
    /// the registry knows it by (a pulled multi-platform image's index digest), else the
    /// manifest digest.
    pub fn image_id(&self, reference: &str) -> Result<String, ImageError> {
        let digest = self.lookup(reference)?;
        let parsed =
            Reference::parse(reference).map_err(|reason| ImageError::InvalidReference {
                reference: reference.to_string(),
                reason,
            })?;
        let repo = format!("{}/{}@", parsed.domain, parsed.path);
        let index = self.read_index()?;
        let pulled = index.images.iter().find(|(key, d)| {
            **d == digest && key.starts_with(&repo) && **key != format!("{repo}{digest}")
        });
        Ok(match pulled {
            Some((key, _)) => key.clone(),
            None => format!("{repo}{digest}"),
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
            // A pull indexes `repo@<index digest>` under the platform manifest it chose.
            let key = format!("{}/{}@{digest}", parsed.domain, parsed.path);
            if let Some(manifest) = self.read_index()?.images.remove(&key) {
                return Ok(manifest);
            }
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
        let _lock = self.lock_file("index.lock", true)?;
        let mut index = self.read_index()?;
        for e in entries {
            index.images.insert(e.reference.clone(), e.digest.clone());
        }
        self.write_index(&index)
    }

    /// Rewrites index.json; the caller holds `index.lock`.
    fn write_index(&self, index: &IndexFile) -> Result<(), ImageError> {
        let json = serde_json::to_vec_pretty(&index).map_err(|e| ImageError::Io {
            context: "encoding the image index".into(),
            source: io::Error::other(e),
        })?;
        self.write_atomically(&self.index_path(), &json, true)
    }

    /// Blocks until `name` in the store root is flock(2)ed, exclusively or shared.
    fn lock_file(&self, name: &str, exclusive: bool) -> Result<Flock<fs::File>, ImageError> {
        let lock_path = self.root.join(name);
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_ctx(format!("opening {}", lock_path.display())))?;
        let arg = match exclusive {
            true => FlockArg::LockExclusive,
            false => FlockArg::LockShared,
        };
        Flock::lock(lock_file, arg).map_err(|(_, e)| {
            io_ctx(format!("locking {}", lock_path.display()))(io::Error::from(e))
        })
    }

    /// The shared `gc.lock` a pull holds while it relies on layers being present.
    async fn pull_guard(self) -> Result<Flock<fs::File>, ImageError> {
        tokio::task::spawn_blocking(move || self.lock_file("gc.lock", false))
            .await
            .map_err(pull::join_error)?
    }

    /// Stores a verified blob unless it is there.
    async fn put_blob(&self, digest: &str, bytes: Vec<u8>) -> Result<(), ImageError> {
        let Some(dest) = self.blob_path(digest) else {
            return Err(ImageError::InvalidReference {
                reference: digest.to_string(),
                reason: "not a sha256 digest".into(),
            });
        };
        if dest.is_file() {
            return Ok(());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_atomically(&dest, &bytes, false))
            .await
            .map_err(pull::join_error)?
    }

    fn has_layer(&self, diff_id: &str) -> bool {
        self.layer_dir(diff_id).is_some_and(|d| d.is_dir())
    }

    /// Marks the image `digest` as used now, for garbage collection's LRU order.
    fn touch(&self, digest: &str) {
        if let Some(path) = self.blob_path(digest) {
            if let Ok(f) = fs::File::open(&path) {
                let _ = f.set_modified(SystemTime::now());
            }
        }
    }

    /// When the image `digest` was last used (the epoch when unknown).
    fn last_used(&self, digest: &str) -> SystemTime {
        self.blob_path(digest)
            .and_then(|p| fs::metadata(p).ok())
            .and_then(|m| m.modified().ok())
            .unwrap_or(SystemTime::UNIX_EPOCH)
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
