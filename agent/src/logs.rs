//! Serving container logs over MQTT (`punnet logs`, the controller's `/log` endpoint).
//! A `LogRequest` names a Pod; the agent reads the newest run's CRI log file, strips the
//! CRI prefix, and publishes `LogChunk`s on the request's reply topic. A following
//! request keeps polling the file until it is cancelled, its container exits and the
//! file is drained, or the controller stops repeating the request.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use punnet_api::pod::Pod;
use punnet_api::wire::{LogChunk, LogRequest};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::reconcile::pod_dir;
use crate::runtime::logfmt::parse_log_line;
use crate::runtime::{ContainerInfo, ContainerState};

/// Largest `data` of one chunk.
pub const MAX_CHUNK: usize = 64 * 1024;
/// How often a followed file is polled for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// A followed log with no repeat of its request for this long is dropped (the controller
/// repeats every 20 s while its HTTP client listens).
pub const FOLLOW_IDLE: Duration = Duration::from_secs(60);

/// Which container of the Pod the request means.
pub fn pick_container(pod: &Pod, name: Option<&str>) -> Result<String, String> {
    let names: Vec<&str> = pod
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let key = pod.metadata.key();
    match name {
        Some(n) if names.contains(&n) => Ok(n.to_string()),
        Some(n) => Err(format!(
            "container {n} is not valid for pod {key}, choose one of: [{}]",
            names.join(" ")
        )),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(format!(
            "a container name must be specified for pod {key}, choose one of: [{}]",
            names.join(" ")
        )),
    }
}

/// The newest run's log file in a container's log directory (`<restart>.log`).
pub fn newest_log(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u32 = name.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// The text of complete CRI records, prefixes removed; partial (`P`) records are joined
/// with the record that completes them. Lines that are not CRI records pass unchanged.
pub fn strip_cri(records: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(records);
    let mut out = Vec::with_capacity(records.len());
    for line in text.split_inclusive('\n') {
        match parse_log_line(line) {
            Some(l) => {
                out.extend_from_slice(l.content.as_bytes());
                if !l.partial {
                    out.push(b'\n');
                }
            }
            None => {
                out.extend_from_slice(line.trim_end_matches('\n').as_bytes());
                out.push(b'\n');
            }
        }
    }
    out
}

/// The offset where the last `lines` records of the file begin.
pub fn tail_offset<R: Read + Seek>(file: &mut R, lines: u64) -> std::io::Result<u64> {
    const BLOCK: u64 = 8192;
    let len = file.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut seen = 0u64;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut first = true;
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let n = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        for i in (0..n).rev() {
            if buf[i] != b'\n' {
                continue;
            }
            // The newline that ends the file closes the last line; it does not start one.
            if first && start + i as u64 == len - 1 {
                continue;
            }
            seen += 1;
            if seen == lines {
                return Ok(start + i as u64 + 1);
            }
        }
        first = false;
        pos = start;
    }
    Ok(0)
}

/// Splits `data` into chunks of at most `max` bytes, at line ends where possible.
pub fn split_chunks(mut data: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() > max {
        let cut = data[..max]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(max, |i| i + 1);
        out.push(data[..cut].to_vec());
        data = &data[cut..];
    }
    if !data.is_empty() {
        out.push(data.to_vec());
    }
    out
}

fn error_chunk(id: &str, message: String) -> LogChunk {
    LogChunk {
        id: id.to_string(),
        seq: 0,
        data: Vec::new(),
        done: true,
        error: Some(message),
    }
}

/// What a log stream needs besides its file.
pub struct Stream {
    pub id: String,
    pub path: PathBuf,
    pub follow: bool,
    pub tail_lines: Option<u64>,
    pub cancel: CancellationToken,
    /// When the request was last seen; a follow stops `FOLLOW_IDLE` after it.
    pub last_seen: Arc<Mutex<Instant>>,
    /// What the runtime lists, refreshed by the agent; tells when the container exited.
    pub containers: watch::Receiver<Arc<Vec<ContainerInfo>>>,
    pub poll: Duration,
    pub idle: Duration,
}

fn still_running(containers: &[ContainerInfo], path: &Path) -> bool {
    containers
        .iter()
        .any(|c| c.config.log_path == path && matches!(c.state, ContainerState::Running { .. }))
}

/// Sends the file's lines as chunks, then a last chunk with `done`.
pub async fn serve(stream: Stream, out: mpsc::Sender<LogChunk>) {
    let mut seq = 0u64;
    let result = pump(&stream, &out, &mut seq).await;
    let last = match result {
        Ok(()) => LogChunk {
            id: stream.id.clone(),
            seq,
            data: Vec::new(),
            done: true,
            error: None,
        },
        Err(message) => LogChunk {
            seq,
            ..error_chunk(&stream.id, message)
        },
    };
    let _ = out.send(last).await;
}

async fn pump(stream: &Stream, out: &mpsc::Sender<LogChunk>, seq: &mut u64) -> Result<(), String> {
    let path = stream.path.clone();
    let tail = stream.tail_lines;
    let open = tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, u64)> {
        let mut f = std::fs::File::open(&path)?;
        let start = match tail {
            Some(n) => tail_offset(&mut f, n)?,
            None => 0,
        };
        Ok((f, start))
    })
    .await
    .map_err(|e| e.to_string())?;
    let (file, mut pos) =
        open.map_err(|e| format!("cannot read log {}: {e}", stream.path.display()))?;
    let file = Arc::new(file);
    let mut carry: Vec<u8> = Vec::new();
    let mut draining = false;
    loop {
        let f = file.clone();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; MAX_CHUNK];
            let n = f.read_at(&mut buf, pos)?;
            buf.truncate(n);
            Ok(buf)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read log {}: {e}", stream.path.display()))?;
        if !read.is_empty() {
            pos += read.len() as u64;
            carry.extend_from_slice(&read);
            // Only whole records: the shim may be half way through writing one.
            if let Some(end) = carry.iter().rposition(|&b| b == b'\n') {
                let rest = carry.split_off(end + 1);
                let text = strip_cri(&carry);
                carry = rest;
                for data in split_chunks(&text, MAX_CHUNK) {
                    let chunk = LogChunk {
                        id: stream.id.clone(),
                        seq: *seq,
                        data,
                        done: false,
                        error: None,
                    };
                    *seq += 1;
                    if out.send(chunk).await.is_err() {
                        return Ok(());
                    }
                }
            }
            continue;
        }
        if !stream.follow || draining {
            return Ok(());
        }
        if stream.cancel.is_cancelled() {
            return Ok(());
        }
        let idle = stream
            .last_seen
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        if idle > stream.idle {
            tracing::debug!(id = %stream.id, "log follow not renewed; stopping");
            return Ok(());
        }
        if !still_running(&stream.containers.borrow(), &stream.path) {
            // One more read picks up what the container wrote before it exited.
            draining = true;
            continue;
        }
        tokio::select! {
            _ = stream.cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(stream.poll) => {}
        }
    }
}

struct Active {
    cancel: CancellationToken,
    last_seen: Arc<Mutex<Instant>>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

/// Keeps the log streams of one agent.
pub struct LogServer {
    data_dir: PathBuf,
    node: String,
    active: HashMap<String, Active>,
    containers: watch::Receiver<Arc<Vec<ContainerInfo>>>,
    out: mpsc::Sender<LogChunk>,
    pub poll: Duration,
    pub idle: Duration,
}

impl LogServer {
    /// `out` carries chunks to the MQTT link (see `forward`).
    pub fn new(
        data_dir: &Path,
        node: &str,
        containers: watch::Receiver<Arc<Vec<ContainerInfo>>>,
        out: mpsc::Sender<LogChunk>,
    ) -> LogServer {
        LogServer {
            data_dir: data_dir.to_path_buf(),
            node: node.to_string(),
            active: HashMap::new(),
            containers,
            out,
            poll: FOLLOW_POLL,
            idle: FOLLOW_IDLE,
        }
    }

    /// Handles one request against the current desired Pods.
    pub fn handle(&mut self, req: LogRequest, pods: &[Pod]) {
        let idle = self.idle;
        self.active.retain(|_, a| {
            !a.done.load(std::sync::atomic::Ordering::Relaxed)
                || a.last_seen
                    .lock()
                    .map(|t| t.elapsed() < idle)
                    .unwrap_or(false)
        });
        if req.cancel {
            if let Some(a) = self.active.remove(&req.id) {
                a.cancel.cancel();
            }
            return;
        }
        if let Some(a) = self.active.get(&req.id) {
            // The controller's periodic repeat: the listener is still there.
            if let Ok(mut t) = a.last_seen.lock() {
                *t = Instant::now();
            }
            return;
        }
        let found = pods.iter().find(|p| {
            p.metadata.name == req.pod && p.metadata.namespace_or_default() == req.namespace
        });
        let Some(pod) = found else {
            self.reply_error(
                &req.id,
                format!(
                    "pod {}/{} is not on node {}",
                    req.namespace, req.pod, self.node
                ),
            );
            return;
        };
        let container = match pick_container(pod, req.container.as_deref()) {
            Ok(c) => c,
            Err(message) => return self.reply_error(&req.id, message),
        };
        let Some(path) = newest_log(&pod_dir(&self.data_dir, pod).join(&container)) else {
            self.reply_error(
                &req.id,
                format!(
                    "container {container:?} in pod {:?} is waiting to start",
                    pod.metadata.key()
                ),
            );
            return;
        };
        let active = Active {
            cancel: CancellationToken::new(),
            last_seen: Arc::new(Mutex::new(Instant::now())),
            done: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let stream = Stream {
            id: req.id.clone(),
            path,
            follow: req.follow,
            tail_lines: req.tail_lines,
            cancel: active.cancel.clone(),
            last_seen: active.last_seen.clone(),
            containers: self.containers.clone(),
            poll: self.poll,
            idle: self.idle,
        };
        let (out, done) = (self.out.clone(), active.done.clone());
        tokio::spawn(async move {
            serve(stream, out).await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        self.active.insert(req.id, active);
    }

    fn reply_error(&self, id: &str, message: String) {
        tracing::info!(id, %message, "log request refused");
        let _ = self.out.try_send(error_chunk(id, message));
    }

    /// Stops every stream (agent shutdown).
    pub fn cancel_all(&mut self) {
        for (_, a) in self.active.drain() {
            a.cancel.cancel();
        }
    }
}

/// Publishes chunks on their reply topics, in order.
pub async fn forward(link: crate::link::Link, mut chunks: mpsc::Receiver<LogChunk>) {
    while let Some(chunk) = chunks.recv().await {
        let topic = link.topics().log_reply(link.node(), &chunk.id);
        if let Err(e) = link.publish(topic, punnet_api::wire::encode(&chunk)).await {
            tracing::warn!(error = %e, "could not publish a log chunk");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const LOG: &str = "2026-11-24T17:47:59.123456789Z stdout F one\n\
2026-11-24T17:48:00.000000000Z stderr P tw\n\
2026-11-24T17:48:00.000000001Z stderr F o\n\
2026-11-24T17:48:01.000000000Z stdout F three\n";

    #[test]
    fn strips_cri_prefixes_and_joins_partials() {
        assert_eq!(strip_cri(LOG.as_bytes()), b"one\ntwo\nthree\n");
        assert_eq!(strip_cri(b"not cri\n"), b"not cri\n");
        assert_eq!(strip_cri(b"2026-11-24T17:48:01Z stdout F \n"), b"\n");
    }

    #[test]
    fn tail_finds_the_last_records() {
        let mut c = Cursor::new(LOG.as_bytes());
        let off = tail_offset(&mut c, 1).unwrap() as usize;
        assert_eq!(strip_cri(&LOG.as_bytes()[off..]), b"three\n");
        let off = tail_offset(&mut c, 2).unwrap() as usize;
        assert_eq!(strip_cri(&LOG.as_bytes()[off..]), b"o\nthree\n");
        assert_eq!(tail_offset(&mut c, 10).unwrap(), 0);
        assert_eq!(tail_offset(&mut c, 0).unwrap(), LOG.len() as u64);
        // Across block boundaries.
        let big: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let mut c = Cursor::new(big.as_bytes());
        let off = tail_offset(&mut c, 3).unwrap() as usize;
        assert_eq!(&big[off..], "line 4997\nline 4998\nline 4999\n");
    }

    #[test]
    fn chunks_stay_under_the_limit_and_cut_at_lines() {
        let data = b"aaaa\nbbbb\ncccccccccc";
        let chunks = split_chunks(data, 8);
        assert_eq!(chunks[0], b"aaaa\n");
        assert!(chunks.iter().all(|c| c.len() <= 8));
        assert_eq!(chunks.concat(), data);
    }

    fn pod(containers: &[&str]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = "web".into();
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some("u-1".into());
        p.spec.containers = containers
            .iter()
            .map(|n| punnet_api::pod::Container {
                name: n.to_string(),
                ..Default::default()
            })
            .collect();
        p
    }

    #[test]
    fn container_choice() {
        assert_eq!(pick_container(&pod(&["a"]), None).unwrap(), "a");
        assert_eq!(
            pick_container(&pod(&["a", "b"]), None).unwrap_err(),
            "a container name must be specified for pod default/web, choose one of: [a b]"
        );
        assert_eq!(pick_container(&pod(&["a", "b"]), Some("b")).unwrap(), "b");
        assert!(pick_container(&pod(&["a"]), Some("x")).is_err());
    }

    async fn collect(mut rx: mpsc::Receiver<LogChunk>) -> (Vec<u8>, Vec<LogChunk>) {
        let mut all = Vec::new();
        while let Some(c) = rx.recv().await {
            let done = c.done;
            all.push(c);
            if done {
                break;
            }
        }
        (all.iter().flat_map(|c| c.data.clone()).collect(), all)
    }

    fn request(id: &str, follow: bool, tail: Option<u64>) -> LogRequest {
        LogRequest {
            id: id.into(),
            namespace: "default".into(),
            pod: "web".into(),
            container: None,
            follow,
            tail_lines: tail,
            cancel: false,
        }
    }

    #[tokio::test]
    async fn serves_the_newest_run_and_follows_until_exit() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(&["web"]);
        let cdir = pod_dir(dir.path(), &p).join("web");
        std::fs::create_dir_all(&cdir).unwrap();
        std::fs::write(cdir.join("0.log"), "2026-11-24T17:00:00Z stdout F old\n").unwrap();
        let log = cdir.join("1.log");
        std::fs::write(&log, LOG).unwrap();
        let mut config = crate::reconcile::container_config(
            &crate::podspec::PodContext::bare(dir.path()),
            &p,
            &p.spec.containers[0],
            1,
        )
        .unwrap()
        .0;
        config.log_path = log.clone();
        let running = ContainerInfo {
            config: config.clone(),
            state: ContainerState::Running {
                pid: 1,
                started_at: std::time::SystemTime::now(),
            },
        };
        let (list_tx, list_rx) = watch::channel(Arc::new(vec![running.clone()]));
        let (tx, rx) = mpsc::channel(16);
        let mut server = LogServer::new(dir.path(), "pi-1", list_rx, tx);
        server.poll = Duration::from_millis(20);

        // Plain read with tail.
        server.handle(request("r1", false, Some(2)), std::slice::from_ref(&p));
        let (text, chunks) = collect(rx).await;
        assert_eq!(text, b"o\nthree\n");
        assert!(chunks.last().unwrap().done);
        assert!(chunks.windows(2).all(|w| w[1].seq == w[0].seq + 1));

        // Follow: new lines arrive, then the container exits and the stream ends.
        let (tx, mut rx) = mpsc::channel(16);
        server.out = tx;
        server.handle(request("r2", true, Some(0)), std::slice::from_ref(&p));
        tokio::time::sleep(Duration::from_millis(60)).await;
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"2026-11-24T17:49:00Z stdout F four\n")
            .unwrap();
        let c = rx.recv().await.unwrap();
        assert_eq!(c.data, b"four\n");
        assert!(!c.done);
        // A repeat of the request does not start a second stream.
        server.handle(request("r2", true, Some(0)), std::slice::from_ref(&p));
        f.write_all(b"2026-11-24T17:49:01Z stdout F five\n")
            .unwrap();
        let mut exited = running.clone();
        exited.state = ContainerState::Exited {
            exit_code: 0,
            reason: crate::runtime::ExitReason::Completed,
            started_at: None,
            finished_at: std::time::SystemTime::now(),
        };
        list_tx.send(Arc::new(vec![exited])).unwrap();
        let (text, chunks) = collect(rx).await;
        assert_eq!(text, b"five\n");
        assert!(chunks.last().unwrap().done);
        assert!(chunks.last().unwrap().error.is_none());
    }

    #[tokio::test]
    async fn errors_are_one_done_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (_list_tx, list_rx) = watch::channel(Arc::new(vec![]));
        let (tx, mut rx) = mpsc::channel(16);
        let mut server = LogServer::new(dir.path(), "pi-1", list_rx, tx);
        server.handle(request("e1", false, None), &[pod(&["a", "b"])]);
        let c = rx.recv().await.unwrap();
        assert!(c.done);
        assert!(c.error.unwrap().contains("choose one of: [a b]"));
        server.handle(request("e2", false, None), &[]);
        let c = rx.recv().await.unwrap();
        assert_eq!(c.error.unwrap(), "pod default/web is not on node pi-1");
    }

    #[tokio::test]
    async fn cancel_ends_a_follow() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(&["web"]);
        let cdir = pod_dir(dir.path(), &p).join("web");
        std::fs::create_dir_all(&cdir).unwrap();
        let log = cdir.join("0.log");
        std::fs::write(&log, LOG).unwrap();
        let mut config = crate::reconcile::container_config(
            &crate::podspec::PodContext::bare(dir.path()),
            &p,
            &p.spec.containers[0],
            0,
        )
        .unwrap()
        .0;
        config.log_path = log;
        let info = ContainerInfo {
            config,
            state: ContainerState::Running {
                pid: 1,
                started_at: std::time::SystemTime::now(),
            },
        };
        let (_list_tx, list_rx) = watch::channel(Arc::new(vec![info]));
        let (tx, rx) = mpsc::channel(16);
        let mut server = LogServer::new(dir.path(), "pi-1", list_rx, tx);
        server.poll = Duration::from_millis(20);
        server.handle(request("f", true, None), std::slice::from_ref(&p));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut cancel = request("f", true, None);
        cancel.cancel = true;
        server.handle(cancel, std::slice::from_ref(&p));
        let (text, chunks) = tokio::time::timeout(Duration::from_secs(5), collect(rx))
            .await
            .unwrap();
        assert_eq!(text, b"one\ntwo\nthree\n");
        assert!(chunks.last().unwrap().done);
    }
}
