//! Downloading one layer blob into the store: into `tmp/partial-<hex>` first, resumed
//! with an HTTP range request after a cut connection (within a pull, and by the next
//! pull when this one gave up), verified against its digest before it is renamed into
//! `blobs/`, then unpacked once on a blocking thread.

use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use nix::fcntl::{Flock, FlockArg};
use oci_client::client::BlobResponse;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::oci::{self, Descriptor};
use super::progress::Progress;
use super::pull::{join_error, PullError};
use super::session::Session;
use super::{archive, io_ctx, ImageError, ImageStore};

/// Attempts in a row that bring no new byte before a download gives up; each attempt
/// that does bring bytes resets the count, so a flaky link still finishes.
const MAX_STALLED_ATTEMPTS: u32 = 4;

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// gzip or plain tar; zstd and foreign layer types are not unpacked by this agent.
pub fn is_supported_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | ""
    )
}

/// The partial file a download writes, locked so that two pulls of one layer at once
/// do not write into the same file (the second gets a fresh file and no resume).
struct Partial {
    path: PathBuf,
    file: fs::File,
    /// Bytes already in the file and their running hash.
    len: u64,
    hasher: Sha256,
    _lock: Option<Flock<fs::File>>,
}

fn open_partial(store: &ImageStore, hex: &str, size: u64) -> Result<Partial, ImageError> {
    let shared = store.tmp_dir().join(format!("partial-{hex}"));
    let open = |path: &PathBuf| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io_ctx(format!("opening {}", path.display())))
    };
    let file = open(&shared)?;
    let lock_handle = file
        .try_clone()
        .map_err(io_ctx(format!("opening {}", shared.display())))?;
    let (path, file, lock) = match Flock::lock(lock_handle, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => (shared, file, Some(lock)),
        Err(_) => {
            let fresh = store.tmp_path("blob");
            let file = open(&fresh)?;
            (fresh, file, None)
        }
    };
    let mut len = file
        .metadata()
        .map_err(io_ctx(format!("inspecting {}", path.display())))?
        .len();
    if len > size {
        file.set_len(0)
            .map_err(io_ctx(format!("truncating {}", path.display())))?;
        len = 0;
    }
    let mut hasher = Sha256::new();
    if len > 0 {
        let mut reader = io::BufReader::new(
            fs::File::open(&path).map_err(io_ctx(format!("opening {}", path.display())))?,
        )
        .take(len);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(io_ctx(format!("reading {}", path.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(Partial {
        path,
        file,
        len,
        hasher,
        _lock: lock,
    })
}

/// Downloads `desc` into `blobs/` (unless it is there) and returns its path there.
pub(super) async fn download(
    store: &ImageStore,
    session: &Session,
    desc: &Descriptor,
    progress: &Progress,
) -> Result<PathBuf, PullError> {
    let store_err = |source: ImageError| PullError::Store {
        reference: session.reference.clone(),
        source,
    };
    let hex = oci::sha256_hex(&desc.digest)
        .ok_or_else(|| PullError::Unsupported {
            reference: session.reference.clone(),
            reason: format!("layer digest {:?} is not sha256:<hex>", desc.digest),
        })?
        .to_string();
    let dest = store.blob_path_hex(&hex);
    if dest.is_file() {
        progress.add_bytes(desc.size, false);
        return Ok(dest);
    }
    let size = desc.size;
    let opener = store.clone();
    let open_hex = hex.clone();
    let partial = tokio::task::spawn_blocking(move || open_partial(&opener, &open_hex, size))
        .await
        .map_err(|e| store_err(join_error(e)))?
        .map_err(store_err)?;
    let Partial {
        path,
        file,
        mut len,
        mut hasher,
        _lock,
    } = partial;
    progress.add_bytes(len, false);
    let write_err = |e: io::Error| store_err(io_ctx(format!("writing {}", path.display()))(e));
    let mut out = tokio::fs::File::from_std(file);

    let mut stalled = 0;
    let mut last_error = String::new();
    while len < size {
        if stalled >= MAX_STALLED_ATTEMPTS {
            return Err(session.network(format!(
                "layer {} stopped at {len} of {size} bytes after {stalled} attempts: {last_error}",
                desc.digest
            )));
        }
        if stalled > 0 {
            tokio::time::sleep(Duration::from_millis(300 * u64::from(stalled))).await;
        }
        let response = match session.blob_from(&desc.digest, len).await {
            Ok(r) => r,
            Err(PullError::Network { reason, .. }) => {
                last_error = reason;
                stalled += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut stream = match response {
            BlobResponse::Partial(s) => s,
            BlobResponse::Full(s) => {
                // The registry ignored the range: start the file over.
                if len > 0 {
                    out.set_len(0).await.map_err(write_err)?;
                    progress.sub_bytes(len);
                    len = 0;
                    hasher = Sha256::new();
                }
                s
            }
        };
        let before = len;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    if len + bytes.len() as u64 > size {
                        drop(out);
                        let _ = fs::remove_file(&path);
                        return Err(session.digest_mismatch(
                            &desc.digest,
                            &format!("a blob longer than the {size} bytes its descriptor says"),
                        ));
                    }
                    out.write_all(&bytes).await.map_err(write_err)?;
                    hasher.update(&bytes);
                    len += bytes.len() as u64;
                    progress.add_bytes(bytes.len() as u64, true);
                }
                // oci-client's own digest check fails after the last byte; ours follows.
                Err(_) if len == size => break,
                Err(e) => {
                    last_error = e.to_string();
                    break;
                }
            }
        }
        if len < size {
            if last_error.is_empty() {
                last_error = "the registry ended the response early".into();
            }
            stalled = if len > before { 1 } else { stalled + 1 };
        }
    }
    out.flush().await.map_err(write_err)?;
    drop(out);

    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != desc.digest {
        let _ = fs::remove_file(&path);
        return Err(session.digest_mismatch(&desc.digest, &actual));
    }
    fs::rename(&path, &dest).map_err(|e| {
        store_err(io_ctx(format!(
            "renaming {} to {}",
            path.display(),
            dest.display()
        ))(e))
    })?;
    Ok(dest)
}

/// Unpacks a verified layer blob into `layers/<diff-id>` on a blocking thread, then drops
/// the compressed blob: containers use the unpacked layer, and a board's SD card is small.
pub(super) async fn unpack(
    store: &ImageStore,
    image: &str,
    blob: PathBuf,
    desc: Descriptor,
    diff_id: String,
) -> Result<(), ImageError> {
    let store = store.clone();
    let image = image.to_string();
    tokio::task::spawn_blocking(move || {
        let dest = store
            .layer_dir(&diff_id)
            .ok_or_else(|| ImageError::Damaged {
                image: image.clone(),
                what: format!("layer {}", desc.digest),
                reason: format!("diff-id {diff_id:?} is not a sha256 digest"),
            })?;
        if !dest.is_dir() {
            let tmp = store.tmp_path("layer");
            let result = archive::unpack_into(&blob, &tmp, &dest, &image, &desc, &diff_id);
            if tmp.exists() {
                let _ = fs::remove_dir_all(&tmp);
            }
            if let Err(e) = result {
                // A concurrent pull of the same layer got there first (and dropped the blob).
                if dest.is_dir() {
                    return Ok(());
                }
                if matches!(e, ImageError::DiffIdMismatch { .. }) {
                    let _ = fs::remove_file(&blob);
                }
                return Err(e);
            }
        }
        let _ = fs::remove_file(&blob);
        Ok(())
    })
    .await
    .map_err(join_error)?
}
