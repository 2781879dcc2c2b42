//! Bytes and layers of a pull, counted across concurrent downloads and reported to the
//! caller's callback.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::oci::Descriptor;
use super::pull::{ProgressFn, PullProgress};

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
    pub(super) fn new(layers: &[(Descriptor, String)], callback: Option<ProgressFn>) -> Progress {
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
    pub(super) fn forget_layer(&self, size: u64) {
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

    pub(super) fn layer_done(&self) {
        self.layers_done.fetch_add(1, Ordering::Relaxed);
        self.report();
    }

    pub(super) fn fetched_bytes(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    pub(super) fn report(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn progress_counts_present_layers_as_done() {
        let desc = |size| Descriptor {
            media_type: String::new(),
            digest: String::new(),
            size,
            annotations: None,
            platform: None,
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let progress = Progress::new(
            &[(desc(100), String::new()), (desc(1000), String::new())],
            Some(Arc::new(move |p| sink.lock().unwrap().push(p))),
        );
        progress.forget_layer(1000);
        progress.report();
        progress.add_bytes(400, true);
        progress.sub_bytes(400);
        progress.add_bytes(1000, true);
        progress.layer_done();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.first(),
            Some(&PullProgress {
                bytes_done: 100,
                bytes_total: 1100,
                layers_done: 1,
                layers_total: 2
            })
        );
        assert_eq!(
            seen.last(),
            Some(&PullProgress {
                bytes_done: 1100,
                bytes_total: 1100,
                layers_done: 2,
                layers_total: 2
            })
        );
        assert_eq!(progress.fetched_bytes(), 1400);
    }
}
