//! The board page: the board's own read-only view, served by the agent
//! (`punnet-agent --web ADDR`, on 0.0.0.0:6480 by default). It reads only the agent's
//! own state, so it works while the controller or broker is unreachable.
//!
//! The agent hands `BoardState` a `Snapshot` with every status change and heartbeat
//! (`update`) and a chart sample with every heartbeat (`record`); a request adds what
//! it reads itself (clock, disk health, the newest log lines) and `model::board`
//! turns it all into the JSON the page polls.

pub mod doctor;
pub mod health;
pub mod history;
pub mod model;
pub mod redact;
pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use punnet_api::wire::NodeFacts;
use punnet_api::Secret;

use crate::config::AgentConfig;
use crate::link::{Link, LinkHealth};
use history::{History, Sample};
use model::Snapshot;
use redact::Redactor;

/// Log lines per container on the page.
pub const LOG_LINES: u64 = 20;
/// Longer lines are cut (a page of base64 in one line helps nobody).
pub const LOG_LINE_MAX: usize = 400;

/// What the page shows, shared between the agent's loop and the HTTP handlers.
pub struct BoardState {
    node_name: String,
    broker: String,
    plaintext: bool,
    data_dir: PathBuf,
    /// `--web-token`: asked for before anything is shown.
    pub(crate) token: Option<String>,
    /// Read at request time: the link goes down without the agent's loop noticing.
    link: Box<dyn Fn() -> LinkHealth + Send + Sync>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    snapshot: Arc<Snapshot>,
    history: History,
    redactor: Arc<Redactor>,
}

impl BoardState {
    pub fn new(config: &AgentConfig, link: Link) -> Arc<BoardState> {
        BoardState::with_link(config, move || link.health())
    }

    /// With any source of the link's state (tests).
    pub fn with_link(
        config: &AgentConfig,
        link: impl Fn() -> LinkHealth + Send + Sync + 'static,
    ) -> Arc<BoardState> {
        Arc::new(BoardState {
            node_name: config.node_name.clone(),
            broker: config.broker.clone(),
            plaintext: config.plaintext(),
            data_dir: config.data_dir.clone(),
            token: config.web_token.clone(),
            link: Box::new(link),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent's latest state.
    pub fn update(&self, snapshot: Snapshot) {
        self.lock().snapshot = Arc::new(snapshot);
    }

    /// The Secrets of the desired state, whose values are masked wherever they turn up.
    pub fn set_secrets(&self, secrets: &[Secret]) {
        self.lock().redactor = Arc::new(Redactor::new(secrets));
    }

    /// A chart sample from the heartbeat's facts.
    pub fn record(&self, facts: &NodeFacts, now: SystemTime) {
        let at = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.lock().history.push(Sample {
            at,
            cpu_millis: facts.cpu_usage_millis,
            memory_used_bytes: facts
                .memory_bytes
                .saturating_sub(facts.memory_available_bytes),
            temperature_millicelsius: facts.temperature_millicelsius,
        });
    }

    /// The newest `tail` lines of a desired Pod's container (the only one when
    /// `container` is `None`), Secret values masked. Blocking.
    pub fn log(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        tail: u64,
    ) -> Result<Vec<String>, String> {
        let (snapshot, redactor) = {
            let inner = self.lock();
            (inner.snapshot.clone(), inner.redactor.clone())
        };
        let pod = snapshot
            .pods
            .iter()
            .find(|p| p.metadata.name == name && p.metadata.namespace_or_default() == namespace)
            .ok_or_else(|| format!("pod {namespace}/{name} is not on node {}", self.node_name))?;
        let container = crate::logs::pick_container(pod, container)?;
        let dir = crate::podspec::pod_dir(&self.data_dir, pod).join(&container);
        let path = crate::logs::newest_log(&dir).ok_or_else(|| {
            format!("container {container:?} in pod {namespace}/{name} has not started yet")
        })?;
        let lines = tail_lines(&path, tail)
            .ok_or_else(|| format!("cannot read the log {}", path.display()))?;
        Ok(lines.iter().map(|l| redactor.redact(l)).collect())
    }

    /// The page's data. Blocking: reads the clock, sysfs and log files.
    pub fn view(&self) -> model::Board {
        let (snapshot, series, redactor) = {
            let inner = self.lock();
            (
                inner.snapshot.clone(),
                inner.history.series(),
                inner.redactor.clone(),
            )
        };
        let clock = health::read_clock();
        let storage = health::read_storage(&self.data_dir);
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| model::parse_uptime(&t));
        let logs = read_logs(&self.data_dir, &snapshot);
        model::board(&model::Input {
            now: SystemTime::now(),
            node_name: &self.node_name,
            broker: &self.broker,
            plaintext: self.plaintext,
            link: &(self.link)(),
            snapshot: &snapshot,
            clock: &clock,
            storage: &storage,
            uptime_seconds: uptime,
            history: series,
            logs: &logs,
            redactor: &redactor,
        })
    }
}

/// The newest lines of each desired container's newest run.
fn read_logs(data_dir: &Path, snapshot: &Snapshot) -> BTreeMap<(String, String), Vec<String>> {
    let mut out = BTreeMap::new();
    for pod in &snapshot.pods {
        let dir = crate::podspec::pod_dir(data_dir, pod);
        let uid = crate::podspec::pod_uid(pod);
        for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
            let Some(path) = crate::logs::newest_log(&dir.join(&c.name)) else {
                continue;
            };
            if let Some(lines) = tail_lines(&path, LOG_LINES) {
                out.insert((uid.clone(), c.name.clone()), lines);
            }
        }
    }
    out
}

/// The last `n` lines of a CRI log file, prefixes stripped, long lines cut.
pub fn tail_lines(path: &Path, n: u64) -> Option<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let start = crate::logs::tail_offset(&mut f, n).ok()?;
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut raw = Vec::new();
    // A bound in case the tail is one endless line.
    f.take(256 * 1024).read_to_end(&mut raw).ok()?;
    let text = crate::logs::strip_cri(&raw);
    Some(
        String::from_utf8_lossy(&text)
            .lines()
            .map(|l| {
                if l.chars().count() > LOG_LINE_MAX {
                    let cut: String = l.chars().take(LOG_LINE_MAX).collect();
                    format!("{cut}…")
                } else {
                    l.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails_strip_the_cri_prefix_and_cut_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut text = String::new();
        for i in 0..30 {
            text.push_str(&format!(
                "2026-12-02T08:00:00.000000000Z stdout F line {i}\n"
            ));
        }
        text.push_str(&format!(
            "2026-12-02T08:00:01.000000000Z stderr F {}\n",
            "x".repeat(1000)
        ));
        std::fs::write(&path, text).unwrap();
        let lines = tail_lines(&path, LOG_LINES).unwrap();
        assert_eq!(lines.len(), LOG_LINES as usize);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines[18], "line 29");
        assert_eq!(lines[19].chars().count(), LOG_LINE_MAX + 1);
        assert!(tail_lines(&dir.path().join("missing.log"), 5).is_none());
    }

    #[test]
    fn the_view_masks_secrets_and_records_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AgentConfig::new("pi-9");
        config.data_dir = dir.path().to_path_buf();
        let board = BoardState::with_link(&config, LinkHealth::default);
        let mut s = Secret::default();
        s.string_data.insert("pw".into(), "sw0rdfish".into());
        board.set_secrets(&[s]);
        let facts = NodeFacts {
            memory_bytes: 100,
            memory_available_bytes: 40,
            ..NodeFacts::default()
        };
        board.record(&facts, UNIX_EPOCH + std::time::Duration::from_secs(1000));
        board.record(&facts, UNIX_EPOCH + std::time::Duration::from_secs(1010));
        board.update(Snapshot {
            facts,
            ..Snapshot::default()
        });
        let v = board.view();
        assert_eq!(v.node.name, "pi-9");
        assert_eq!(v.history.memory_used_bytes, vec![60, 60]);
        assert!(!serde_json::to_string(&v).unwrap().contains("sw0rdfish"));
    }
}
