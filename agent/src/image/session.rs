//! One pull's connection to a registry through oci-client: manifests and small blobs
//! fetched and verified, blob streams for [`super::fetch`], and oci-client's errors
//! turned into [`PullError`]s that name the registry, the image and the fix.

use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::credentials::normalize_host;
use super::fetch;
use super::oci::{self, Descriptor};
use super::pull::{PullError, PullOptions};
use super::reference::Reference;

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
    pub(super) oci_ref: oci_client::Reference,
    has_credentials: bool,
    insecure_allowed: bool,
}

impl Session {
    pub(super) fn new(parsed: &Reference, opts: &PullOptions) -> Result<Session, PullError> {
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
    pub(super) fn by_digest(&self, digest: &str) -> oci_client::Reference {
        oci_client::Reference::with_digest(
            self.oci_ref.registry().to_string(),
            self.oci_ref.repository().to_string(),
            digest.to_string(),
        )
    }

    /// The manifest's bytes and verified digest.
    pub(super) async fn manifest(
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
    pub(super) async fn small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, PullError> {
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
            OciDistributionError::RequestError(r) => {
                let reason = error_chain(&r);
                match reason.contains("invalid peer certificate") {
                    true => PullError::UntrustedCertificate {
                        registry: self.registry.clone(),
                        reason,
                    },
                    false => self.network(reason),
                }
            }
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

    pub(super) fn unsupported(&self, reason: String) -> PullError {
        PullError::Unsupported {
            reference: self.reference.clone(),
            reason,
        }
    }

    /// Turns a network error on an HTTPS registry that answers plain HTTP into
    /// [`PullError::InsecureNotAllowed`].
    pub(super) async fn explain(&self, err: PullError) -> PullError {
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

/// Whether `host[:port]` (port 443 when none) answers a plain HTTP request as a plain
/// HTTP server. An HTTPS server sends a TLS alert or a 400 saying that plain HTTP was
/// sent to HTTPS (nginx: "...sent to HTTPS port", Go: "...to an HTTPS server"); neither
/// counts.
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
        let mut answer = Vec::new();
        (&mut conn).take(1024).read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer);
        Some(text.starts_with("HTTP/") && !text.contains("HTTPS"))
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_once(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(answer).await;
        });
        addr
    }

    #[tokio::test]
    async fn only_a_real_plain_http_answer_counts_as_plain_http() {
        let plain = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await;
        assert!(speaks_plain_http(&plain).await);
        let nginx = serve_once(
            b"HTTP/1.1 400 Bad Request\r\n\r\nThe plain HTTP request was sent to HTTPS port",
        )
        .await;
        assert!(!speaks_plain_http(&nginx).await);
        let go = serve_once(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )
        .await;
        assert!(!speaks_plain_http(&go).await);
        let tls_alert = serve_once(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]).await;
        assert!(!speaks_plain_http(&tls_alert).await);
    }
}
