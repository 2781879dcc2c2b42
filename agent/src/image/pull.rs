//! Pulling an image from an OCI/Docker registry into the store: the manifest (picked
//! for the board's platform from an image index), the config, and the layers, each
//! verified against its digest and unpacked once. Registry I/O goes through
//! `oci-client` ([`super::session`]); layer downloads are in [`super::fetch`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};

use super::credentials::RegistryCredentials;
use super::oci::{self, Descriptor};
use super::progress::Progress;
use super::reference::Reference;
use super::session::Session;
use super::{fetch, select, ImageError, ImageStore, LoadedImage};
use crate::platform::Platform;

/// Called with the pull's progress; called often, so keep it cheap.
pub type ProgressFn = Arc<dyn Fn(PullProgress) + Send + Sync>;

/// How to pull: for which board, with which credentials, from which plain-HTTP registries.
#[derive(Clone)]
pub struct PullOptions {
    /// The board's platform ([`crate::platform::detect`], or `--platform`).
    pub platform: Platform,
    /// For the image's registry (see [`super::docker_config_credentials`]); `None` pulls
    /// anonymously (Docker Hub still hands out an anonymous token).
    pub auth: Option<RegistryCredentials>,
    /// `HOST:PORT` of registries that may be reached over plain HTTP; all others use HTTPS.
    pub insecure_registries: Vec<String>,
    /// Layers downloaded at once (at least 1).
    pub max_concurrent_layers: usize,
    pub progress: Option<ProgressFn>,
}

pub const DEFAULT_MAX_CONCURRENT_LAYERS: usize = 3;

impl PullOptions {
    pub fn new(platform: Platform) -> PullOptions {
        PullOptions {
            platform,
            auth: None,
            insecure_registries: Vec::new(),
            max_concurrent_layers: DEFAULT_MAX_CONCURRENT_LAYERS,
            progress: None,
        }
    }
}

impl Default for PullOptions {
    /// For this board ([`crate::platform::detect`]), anonymous, HTTPS only.
    fn default() -> Self {
        PullOptions::new(crate::platform::detect())
    }
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("platform", &self.platform.to_string())
            .field("auth", &self.auth)
            .field("insecure_registries", &self.insecure_registries)
            .field("max_concurrent_layers", &self.max_concurrent_layers)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Bytes and layers of a pull so far. Layers already in the store count as done from
/// the start, so a pull of a present image reports 100% at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PullProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub layers_done: usize,
    pub layers_total: usize,
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The normalised reference the image is indexed under (`docker.io/library/busybox:1.36`,
    /// or `...@sha256:...` for a pull by digest); [`ImageStore::resolve`] finds it.
    pub reference: String,
    /// The platform-specific image manifest's digest ([`super::ResolvedImage::digest`]).
    pub digest: String,
    /// The image index's digest when the reference named a multi-platform index.
    pub index_digest: Option<String>,
    /// For Pod status `imageID`: `repository@sha256:...` with the digest the registry
    /// knows the image by (the index's for a multi-platform image). Resolvable too.
    pub image_id: String,
    /// The platform of the chosen manifest, as its config declares it.
    pub platform: String,
    /// Compressed bytes downloaded by this pull (0 when every layer was present).
    pub bytes_fetched: u64,
    /// Layers this pull downloaded and unpacked.
    pub layers_fetched: usize,
}

/// Why a pull failed. Each maps to Kubernetes' `ErrImagePull`; the variants let the
/// agent tell them apart (and back off on the retryable ones).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("image reference {reference:?} is not valid: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error(
        "registry {registry} refused the credentials for {reference}: check the imagePullSecret"
    )]
    Unauthorized { registry: String, reference: String },
    #[error("registry {registry} requires credentials to pull {reference}: add an imagePullSecret for it")]
    CredentialsRequired { registry: String, reference: String },
    #[error("image {reference} not found in registry {registry}: check the name and tag")]
    NotFound { registry: String, reference: String },
    #[error("image {reference} has no variant for {wanted}: it offers {}", offered.join(", "))]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        offered: Vec<String>,
    },
    #[error("image {reference} is built for {image_platform}, which does not run on this {wanted} board; use an image (or index) with a {wanted} variant")]
    PlatformMismatch {
        reference: String,
        wanted: String,
        image_platform: String,
    },
    #[error("image {reference}: blob {digest} from registry {registry} hashes to {actual}; the download was deleted; the registry's copy is corrupt or was tampered with")]
    DigestMismatch {
        registry: String,
        reference: String,
        digest: String,
        actual: String,
    },
    #[error("registry {registry} presented a TLS certificate this board does not trust ({reason}); add its CA to the board's trust store (/usr/local/share/ca-certificates, then update-ca-certificates)")]
    UntrustedCertificate { registry: String, reason: String },
    #[error("registry {registry} uses plain HTTP; add --insecure-registry {registry}")]
    InsecureNotAllowed { registry: String },
    #[error("pulling {reference} from registry {registry} failed on the network ({reason}); it will be retried and resumes where it stopped")]
    Network {
        registry: String,
        reference: String,
        reason: String,
    },
    #[error("registry {registry} failed to serve {reference}: {reason}")]
    Registry {
        registry: String,
        reference: String,
        reason: String,
    },
    #[error("image {reference}: {reason}")]
    Unsupported { reference: String, reason: String },
    #[error("image {reference}: storing it failed: {source}")]
    Store {
        reference: String,
        #[source]
        source: ImageError,
    },
}

impl PullError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PullError::Network { .. } | PullError::Registry { .. })
    }
}

/// The top-level JSON of what a manifest URL returns: an index or an image manifest.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

pub(super) async fn pull(
    store: &ImageStore,
    reference: &str,
    opts: &PullOptions,
) -> Result<PulledImage, PullError> {
    let parsed = Reference::parse(reference).map_err(|reason| PullError::InvalidReference {
        reference: reference.to_string(),
        reason,
    })?;
    let session = Session::new(&parsed, opts)?;
    match fetch_and_store(store, &parsed, &session, opts).await {
        Ok(image) => Ok(image),
        Err(e) => Err(session.explain(e).await),
    }
}

/// The platform manifest a reference leads to.
struct ChosenManifest {
    bytes: Vec<u8>,
    digest: String,
    /// The index it was picked from, if the reference named one.
    index_digest: Option<String>,
}

async fn fetch_and_store(
    store: &ImageStore,
    parsed: &Reference,
    session: &Session,
    opts: &PullOptions,
) -> Result<PulledImage, PullError> {
    let store_err = |source: ImageError| PullError::Store {
        reference: session.reference.clone(),
        source,
    };
    let chosen = choose_manifest(session, &opts.platform).await?;
    let manifest: oci::Manifest = serde_json::from_slice(&chosen.bytes).map_err(|e| {
        session.unsupported(format!(
            "manifest {} is not an image manifest: {e}",
            chosen.digest
        ))
    })?;
    let config_bytes = session.small_blob(&manifest.config).await?;
    let config: oci::ImageConfigBlob = serde_json::from_slice(&config_bytes).map_err(|e| {
        session.unsupported(format!(
            "config {} is not an image config: {e}",
            manifest.config.digest
        ))
    })?;
    check_image(session, opts, &chosen, &manifest, &config)?;

    // Held until the index names the image, so a concurrent gc cannot delete a layer
    // this pull found present and skipped.
    let _guard = store.clone().pull_guard().await.map_err(store_err)?;
    store
        .put_blob(&manifest.config.digest, config_bytes)
        .await
        .map_err(store_err)?;
    let layers: Vec<(Descriptor, String)> = manifest
        .layers
        .iter()
        .cloned()
        .zip(config.rootfs.diff_ids.iter().cloned())
        .collect();
    let (layers_fetched, bytes_fetched) = fetch_layers(store, session, opts, layers).await?;
    store
        .put_blob(&chosen.digest, chosen.bytes)
        .await
        .map_err(store_err)?;

    let repo = format!("{}/{}", parsed.domain, parsed.path);
    let key = match &parsed.digest {
        Some(d) => format!("{repo}@{d}"),
        None => parsed.tagged_name().unwrap_or_else(|| repo.clone()),
    };
    let repo_digest = chosen.index_digest.as_deref().unwrap_or(&chosen.digest);
    let image_id = format!("{repo}@{repo_digest}");
    let mut entries = vec![LoadedImage {
        reference: key.clone(),
        digest: chosen.digest.clone(),
    }];
    if image_id != key {
        entries.push(LoadedImage {
            reference: image_id.clone(),
            digest: chosen.digest.clone(),
        });
    }
    let index_store = store.clone();
    let touch_digest = chosen.digest.clone();
    tokio::task::spawn_blocking(move || {
        index_store.add_to_index(&entries)?;
        index_store.touch(&touch_digest);
        Ok::<(), ImageError>(())
    })
    .await
    .map_err(|e| store_err(join_error(e)))?
    .map_err(store_err)?;

    Ok(PulledImage {
        reference: key,
        digest: chosen.digest,
        index_digest: chosen.index_digest,
        image_id,
        platform: config.platform_string(),
        bytes_fetched,
        layers_fetched,
    })
}

/// Fetches what the reference names and, for an index, the manifest for `platform`.
async fn choose_manifest(
    session: &Session,
    platform: &Platform,
) -> Result<ChosenManifest, PullError> {
    let (top_bytes, top_digest) = session.manifest(&session.oci_ref).await?;
    let top: AnyManifest = serde_json::from_slice(&top_bytes).map_err(|e| {
        session.unsupported(format!("manifest {top_digest} is not valid JSON: {e}"))
    })?;
    if top.schema_version.is_some_and(|v| v != 2) {
        return Err(session.unsupported(format!(
            "manifest schema version {:?} is not supported (only 2); re-push the image with a current tool",
            top.schema_version
        )));
    }
    let is_index = top.manifests.is_some()
        || matches!(
            top.media_type.as_deref(),
            Some(oci::MEDIA_TYPE_INDEX | oci::MEDIA_TYPE_DOCKER_LIST)
        );
    if !is_index {
        return Ok(ChosenManifest {
            bytes: top_bytes,
            digest: top_digest,
            index_digest: None,
        });
    }
    let entries = top.manifests.unwrap_or_default();
    let entry =
        select::pick(platform, &entries).map_err(|offered| PullError::NoMatchingPlatform {
            reference: session.reference.clone(),
            wanted: platform.to_string(),
            offered,
        })?;
    let (bytes, digest) = session.manifest(&session.by_digest(&entry.digest)).await?;
    if digest != entry.digest {
        return Err(session.digest_mismatch(&entry.digest, &digest));
    }
    Ok(ChosenManifest {
        bytes,
        digest,
        index_digest: Some(top_digest),
    })
}

/// Refuses an image this agent cannot run or unpack. A single-platform image is checked
/// by its config, since no index entry vouched for its platform.
fn check_image(
    session: &Session,
    opts: &PullOptions,
    chosen: &ChosenManifest,
    manifest: &oci::Manifest,
    config: &oci::ImageConfigBlob,
) -> Result<(), PullError> {
    let runs_here = opts
        .platform
        .accepts(
            config.os.as_deref().unwrap_or("linux"),
            config.architecture.as_deref().unwrap_or_default(),
            config.variant.as_deref(),
        )
        .is_some();
    if chosen.index_digest.is_none() && !runs_here {
        return Err(PullError::PlatformMismatch {
            reference: session.reference.clone(),
            wanted: opts.platform.to_string(),
            image_platform: config.platform_string(),
        });
    }
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(session.unsupported(format!(
            "manifest {} has {} layers but its config lists {} diff-ids",
            chosen.digest,
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    match manifest
        .layers
        .iter()
        .find(|l| !fetch::is_supported_layer(&l.media_type))
    {
        Some(layer) => Err(session.unsupported(format!(
            "layer {} has media type {}, which this agent cannot unpack (gzip or plain tar only); re-push the image with gzip layers",
            layer.digest, layer.media_type
        ))),
        None => Ok(()),
    }
}

/// Downloads and unpacks the layers the store lacks, `max_concurrent_layers` at once.
/// Returns how many layers and bytes were fetched.
async fn fetch_layers(
    store: &ImageStore,
    session: &Session,
    opts: &PullOptions,
    layers: Vec<(Descriptor, String)>,
) -> Result<(usize, u64), PullError> {
    let progress = Arc::new(Progress::new(&layers, opts.progress.clone()));
    // A layer listed twice is fetched once; its second entry counts as done.
    let mut seen = HashSet::new();
    let missing: Vec<(Descriptor, String)> = layers
        .into_iter()
        .filter(|(_, diff_id)| !store.has_layer(diff_id) && seen.insert(diff_id.clone()))
        .collect();
    for (desc, _) in &missing {
        progress.forget_layer(desc.size);
    }
    progress.report();
    let count = missing.len();
    futures_util::stream::iter(missing.into_iter().map(|(desc, diff_id)| {
        let progress = progress.clone();
        async move {
            let blob = fetch::download(store, session, &desc, &progress).await?;
            fetch::unpack(store, &session.reference, blob, desc, diff_id)
                .await
                .map_err(|source| PullError::Store {
                    reference: session.reference.clone(),
                    source,
                })?;
            progress.layer_done();
            Ok::<(), PullError>(())
        }
    }))
    .buffer_unordered(opts.max_concurrent_layers.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    Ok((count, progress.fetched_bytes()))
}

pub(super) fn join_error(e: tokio::task::JoinError) -> ImageError {
    ImageError::Io {
        context: "a blocking image-store task".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_can_run_on_a_spawned_task() {
        fn is_send<T: Send>(_: &T) {}
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        let opts = PullOptions::new("linux/arm/v7".parse().unwrap());
        let pull = store.pull("busybox", &opts);
        is_send(&pull);
    }

    #[tokio::test]
    async fn a_bad_reference_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        let opts = PullOptions::new("linux/arm64".parse().unwrap());
        let err = store.pull("Bad/Name", &opts).await.unwrap_err();
        assert!(matches!(err, PullError::InvalidReference { .. }), "{err}");
        assert!(err.to_string().contains("Bad/Name"), "{err}");
    }
}
