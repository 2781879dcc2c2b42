//! Pulling an image from an OCI/Docker registry into the store: the manifest (picked
//! for the board's platform from an image index), the config, and the layers, each
//! verified against its digest and unpacked once. Registry I/O goes through
//! `oci-client` (token flow, Basic auth); downloads are in [`super::fetch`].

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::credentials::{normalize_host, RegistryCredentials};
use super::oci::{self, Descriptor};
use super::reference::Reference;
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

const MEDIA_TYPES: &[&str] = &[
    oci::MEDIA_TYPE_INDEX,
    oci::MEDIA_TYPE_DOCKER_LIST,
    oci::MEDIA_TYPE_MANIFEST,
    oci::MEDIA_TYPE_DOCKER_MANIFEST,
];

/// Manifests and configs bigger than this are not images.
const MAX_JSON_BYTES: u64 = 4 << 20;

/// One pull's connection to one registry, and the names errors carry.
pub(super) struct Session {
    client: oci_client::Client,
    auth: RegistryAuth,
    pub(super) registry: String,
    pub(super) reference: String,
    oci_ref: oci_client::Reference,
    has_credentials: bool,
    insecure_allowed: bool,
}

impl Session {
    fn new(parsed: &Reference, opts: &PullOptions) -> Result<Session, PullError> {
        // reqwest is built without a default provider (aws-lc-rs is C); an earlier
        // install by someone else is as good, hence the ignored result.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let insecure: Vec<String> = opts
            .insecure_registries
            .iter()
            .map(|r| normalize_host(r))
            .collect();
        let registry = parsed.domain.clone();
        let config = ClientConfig {
            protocol: if insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(insecure.clone())
            },
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            // Per read, not per request: a stalled connection fails and the download
            // resumes, while a slow one keeps going.
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("punnet-agent/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| PullError::Registry {
            registry: registry.clone(),
            reference: parsed.to_string(),
            reason: format!("cannot set up an HTTPS client: {e}"),
        })?;
        let repository = parsed.path.clone();
        let oci_ref = match (&parsed.digest, &parsed.tag) {
            (Some(d), _) => {
                oci_client::Reference::with_digest(registry.clone(), repository, d.clone())
            }
            (None, Some(t)) => {
                oci_client::Reference::with_tag(registry.clone(), repository, t.clone())
            }
            (None, None) => {
                return Err(PullError::InvalidReference {
                    reference: parsed.to_string(),
                    reason: "it names neither a tag nor a digest".into(),
                })
            }
        };
        let insecure_allowed = insecure.contains(&normalize_host(&registry));
        Ok(Session {
            client,
            auth: match &opts.auth {
                Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
                None => RegistryAuth::Anonymous,
            },
            registry,
            reference: parsed.to_string(),
            oci_ref,
            has_credentials: opts.auth.is_some(),
            insecure_allowed,
        })
    }

    /// The reference for another manifest in the same repository.
    fn by_digest(&self, digest: &str) -> oci_client::Reference {
        oci_client::Reference::with_digest(
            self.oci_ref.registry().to_string(),
            self.oci_ref.repository().to_string(),
            digest.to_string(),
        )
    }

    /// The manifest's bytes and verified digest.
    async fn manifest(
        &self,
        reference: &oci_client::Reference,
    ) -> Result<(Vec<u8>, String), PullError> {
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(reference, &self.auth, MEDIA_TYPES)
            .await
            .map_err(|e| self.map_err(e))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(self.unsupported(format!("manifest {digest} is larger than 4 MiB")));
        }
        // oci-client checks the header and a pinned digest; this checks the bytes we keep.
        let actual = fetch::sha256_digest(&bytes);
        if actual != digest {
            return Err(self.digest_mismatch(&digest, &actual));
        }
        Ok((bytes.to_vec(), digest))
    }

    /// A small blob (the image config) read whole into memory and verified.
    async fn small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, PullError> {
        if desc.size > MAX_JSON_BYTES {
            return Err(self.unsupported(format!(
                "config {} is {} bytes, more than an image config can be",
                desc.digest, desc.size
            )));
        }
        let mut stream = self
            .client
            .pull_blob_stream(&self.oci_ref, desc.digest.as_str())
            .await
            .map_err(|e| self.map_err(e))?;
        let mut bytes = Vec::with_capacity(desc.size as usize);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => bytes.extend_from_slice(&c),
                // The verifying stream's digest error comes after the last byte.
                Err(_) if bytes.len() as u64 == desc.size => break,
                Err(e) => return Err(self.network(e.to_string())),
            }
            if bytes.len() as u64 > desc.size {
                break;
            }
        }
        let actual = fetch::sha256_digest(&bytes);
        if actual != desc.digest {
            return Err(self.digest_mismatch(&desc.digest, &actual));
        }
        Ok(bytes)
    }

    pub(super) async fn blob_from(
        &self,
        digest: &str,
        offset: u64,
    ) -> Result<oci_client::client::BlobResponse, PullError> {
        self.client
            .pull_blob_stream_partial(&self.oci_ref, digest, offset, None)
            .await
            .map_err(|e| self.map_err(e))
    }

    pub(super) fn map_err(&self, e: OciDistributionError) -> PullError {
        let unauthorized = || match self.has_credentials {
            true => PullError::Unauthorized {
                registry: self.registry.clone(),
                reference: self.reference.clone(),
            },
            false => PullError::CredentialsRequired {
                registry: self.registry.clone(),
                reference: self.reference.clone(),
            },
        };
        let not_found = || PullError::NotFound {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
        };
        let registry = |reason: String| PullError::Registry {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            reason,
        };
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized()
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    not_found()
                } else {
                    registry(envelope.to_string())
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => not_found(),
            OciDistributionError::ServerError { code: 401 | 403, .. } => unauthorized(),
            OciDistributionError::ServerError { code, message, .. } => {
                registry(format!("HTTP {code}: {}", message.trim()))
            }
            OciDistributionError::DigestError(d) => {
                let (expected, actual) = match d {
                    oci_client::errors::DigestError::VerificationError { expected, actual } => {
                        (expected, actual)
                    }
                    other => (String::new(), other.to_string()),
                };
                self.digest_mismatch(&expected, &actual)
            }
            OciDistributionError::RequestError(r) => self.network(error_chain(&r)),
            OciDistributionError::IoError(io) => self.network(io.to_string()),
            OciDistributionError::UnsupportedMediaTypeError(m) => {
                self.unsupported(format!("media type {m} is not an image"))
            }
            OciDistributionError::UnsupportedSchemaVersionError(v) => self.unsupported(format!(
                "manifest schema version {v} is not supported (only 2); re-push the image with a current tool"
            )),
            other => registry(other.to_string()),
        }
    }

    pub(super) fn network(&self, reason: String) -> PullError {
        PullError::Network {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            reason,
        }
    }

    pub(super) fn digest_mismatch(&self, digest: &str, actual: &str) -> PullError {
        PullError::DigestMismatch {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            digest: digest.to_string(),
            actual: actual.to_string(),
        }
    }

    fn unsupported(&self, reason: String) -> PullError {
        PullError::Unsupported {
            reference: self.reference.clone(),
            reason,
        }
    }

    /// Turns a network error on an HTTPS registry that answers plain HTTP into
    /// [`PullError::InsecureNotAllowed`].
    async fn explain(&self, err: PullError) -> PullError {
        if matches!(err, PullError::Network { .. })
            && !self.insecure_allowed
            && speaks_plain_http(&self.registry).await
        {
            return PullError::InsecureNotAllowed {
                registry: self.registry.clone(),
            };
        }
        err
    }
}

/// The messages of `e` and its sources: reqwest's own message hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether `host[:port]` (port 443 when none) answers a plain HTTP request.
async fn speaks_plain_http(registry: &str) -> bool {
    let addr = if registry.contains(':') {
        registry.to_string()
    } else {
        format!("{registry}:443")
    };
    let probe = async {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.ok()?;
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {registry}\r\n\r\n");
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 5];
        conn.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
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
    let (top_bytes, top_digest) = session.manifest(&session.oci_ref).await?;
    let top: AnyManifest = serde_json::from_slice(&top_bytes).map_err(|e| {
        session.unsupported(format!("manifest {top_digest} is not valid JSON: {e}"))
    })?;
    if top.schema_version.is_some_and(|v| v != 2) {
        return Err(session.unsupported(format!(
            "manifest schema version {:?} is not supported (only 2)",
            top.schema_version
        )));
    }
    let is_index = top.manifests.is_some()
        || matches!(
            top.media_type.as_deref(),
            Some(oci::MEDIA_TYPE_INDEX | oci::MEDIA_TYPE_DOCKER_LIST)
        );
    let (manifest_bytes, manifest_digest, index_digest) = if is_index {
        let entries = top.manifests.unwrap_or_default();
        let chosen = select::pick(&opts.platform, &entries).map_err(|offered| {
            PullError::NoMatchingPlatform {
                reference: session.reference.clone(),
                wanted: opts.platform.to_string(),
                offered,
            }
        })?;
        let (bytes, digest) = session.manifest(&session.by_digest(&chosen.digest)).await?;
        if digest != chosen.digest {
            return Err(session.digest_mismatch(&chosen.digest, &digest));
        }
        (bytes, digest, Some(top_digest))
    } else {
        (top_bytes, top_digest, None)
    };
    let manifest: oci::Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        session.unsupported(format!(
            "manifest {manifest_digest} is not an image manifest: {e}"
        ))
    })?;

    let config_bytes = session.small_blob(&manifest.config).await?;
    let config: oci::ImageConfigBlob = serde_json::from_slice(&config_bytes).map_err(|e| {
        session.unsupported(format!(
            "config {} is not an image config: {e}",
            manifest.config.digest
        ))
    })?;
    let image_platform = config.platform_string();
    if !is_index
        && opts
            .platform
            .accepts(
                config.os.as_deref().unwrap_or("linux"),
                config.architecture.as_deref().unwrap_or_default(),
                config.variant.as_deref(),
            )
            .is_none()
    {
        return Err(PullError::PlatformMismatch {
            reference: session.reference.clone(),
            wanted: opts.platform.to_string(),
            image_platform,
        });
    }
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(session.unsupported(format!(
            "manifest {manifest_digest} has {} layers but its config lists {} diff-ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    for layer in &manifest.layers {
        if !fetch::is_supported_layer(&layer.media_type) {
            return Err(session.unsupported(format!(
                "layer {} has media type {}, which this agent cannot unpack (gzip or plain tar only); re-push the image with gzip layers",
                layer.digest, layer.media_type
            )));
        }
    }

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
    let progress = Arc::new(Progress::new(&layers, opts.progress.clone()));
    let missing: Vec<(Descriptor, String)> = layers
        .into_iter()
        .filter(|(_, diff_id)| !store.has_layer(diff_id))
        .collect();
    for (desc, _) in &missing {
        progress.forget_layer(desc.size);
    }
    progress.report();
    let fetched = missing.len();
    let image_name = session.reference.clone();
    futures_util::stream::iter(missing.into_iter().map(|(desc, diff_id)| {
        let progress = progress.clone();
        let image_name = image_name.clone();
        async move {
            let blob = fetch::download(store, session, &desc, &*progress).await?;
            fetch::unpack(store, &image_name, blob, desc.clone(), diff_id)
                .await
                .map_err(|source| PullError::Store {
                    reference: image_name.clone(),
                    source,
                })?;
            progress.layer_done();
            Ok::<(), PullError>(())
        }
    }))
    .buffer_unordered(opts.max_concurrent_layers.max(1))
    .try_collect::<Vec<()>>()
    .await?;

    store
        .put_blob(&manifest_digest, manifest_bytes)
        .await
        .map_err(store_err)?;
    let repo = format!("{}/{}", parsed.domain, parsed.path);
    let mut entries = Vec::new();
    let key = match &parsed.digest {
        Some(d) => format!("{repo}@{d}"),
        None => parsed.tagged_name().unwrap_or_else(|| repo.clone()),
    };
    entries.push(LoadedImage {
        reference: key.clone(),
        digest: manifest_digest.clone(),
    });
    let repo_digest = index_digest
        .clone()
        .unwrap_or_else(|| manifest_digest.clone());
    let image_id = format!("{repo}@{repo_digest}");
    if image_id != key {
        entries.push(LoadedImage {
            reference: image_id.clone(),
            digest: manifest_digest.clone(),
        });
    }
    let index_store = store.clone();
    let touch_digest = manifest_digest.clone();
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
        digest: manifest_digest,
        index_digest,
        image_id,
        platform: image_platform,
        bytes_fetched: progress.fetched_bytes(),
        layers_fetched: fetched,
    })
}

pub(super) fn join_error(e: tokio::task::JoinError) -> ImageError {
    ImageError::Io {
        context: "a blocking image-store task".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Counts bytes and layers across concurrent downloads and reports them.
pub(super) struct Progress {
    bytes_total: u64,
    layers_total: usize,
    bytes_done: AtomicU64,
    /// Bytes this pull downloaded (not those resumed from an earlier pull's partial file).
    fetched: AtomicU64,
    layers_done: AtomicUsize,
    last_reported: AtomicU64,
    callback: Option<ProgressFn>,
}

/// Reports at most once per this many bytes, besides every finished layer.
const REPORT_EVERY: u64 = 256 * 1024;

impl Progress {
    fn new(layers: &[(Descriptor, String)], callback: Option<ProgressFn>) -> Progress {
        let bytes_total = layers.iter().map(|(d, _)| d.size).sum();
        Progress {
            bytes_total,
            layers_total: layers.len(),
            bytes_done: AtomicU64::new(bytes_total),
            fetched: AtomicU64::new(0),
            layers_done: AtomicUsize::new(layers.len()),
            last_reported: AtomicU64::new(0),
            callback,
        }
    }

    /// Marks a layer as still to fetch (all start out done).
    fn forget_layer(&self, size: u64) {
        self.bytes_done.fetch_sub(size, Ordering::Relaxed);
        self.layers_done.fetch_sub(1, Ordering::Relaxed);
    }

    /// `n` more bytes are in; `downloaded` says whether this pull fetched them.
    pub(super) fn add_bytes(&self, n: u64, downloaded: bool) {
        let done = self.bytes_done.fetch_add(n, Ordering::Relaxed) + n;
        if downloaded {
            self.fetched.fetch_add(n, Ordering::Relaxed);
        }
        let last = self.last_reported.load(Ordering::Relaxed);
        if done >= last + REPORT_EVERY
            && self
                .last_reported
                .compare_exchange(last, done, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.report();
        }
    }

    /// A retried download starts a blob over: its bytes are taken back.
    pub(super) fn sub_bytes(&self, n: u64) {
        self.bytes_done.fetch_sub(n, Ordering::Relaxed);
    }

    fn layer_done(&self) {
        self.layers_done.fetch_add(1, Ordering::Relaxed);
        self.report();
    }

    fn fetched_bytes(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    fn report(&self) {
        if let Some(cb) = &self.callback {
            cb(PullProgress {
                bytes_done: self
                    .bytes_done
                    .load(Ordering::Relaxed)
                    .min(self.bytes_total),
                bytes_total: self.bytes_total,
                layers_done: self.layers_done.load(Ordering::Relaxed),
                layers_total: self.layers_total,
            });
        }
    }
}
