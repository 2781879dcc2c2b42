//! Prometheus `/metrics` of the controller, in the text exposition format (0.0.4),
//! written by hand: a few counters, gauges and histograms do not need a metrics crate
//! on a 1 GB board.
//!
//! Counters and histograms live in one process-wide `Telemetry` so that any part can
//! report without plumbing (`prometheus::observe_reconcile("deployment", took)`);
//! gauges of the fleet's state (objects, Pod phases, ready nodes) are read from the
//! store at scrape time, so they are never stale.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use punnet_api::{Node, Pod};

use crate::store::peek::PodView;
use crate::store::{Store, StoreError};

/// The media type Prometheus scrapes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reconcile passes: most take milliseconds; a pass over a big fleet can take seconds.
const RECONCILE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Creation to binding: immediate when a node fits, minutes when none does.
const SCHEDULING_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// The topic kinds counted; anything else is `other` (topic names come from the
/// network and must not grow the label set).
const TOPIC_KINDS: &[&str] = &["desired", "status", "online", "logs", "cmd"];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// Whether an MQTT message came in or went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

struct Telemetry {
    reconcile: Mutex<BTreeMap<String, Histogram>>,
    scheduling: Mutex<Histogram>,
    mqtt: Mutex<BTreeMap<(Direction, &'static str), u64>>,
    status_reports: AtomicU64,
    /// Messages the controller's inbox skipped (superseded, dropped).
    skipped: [AtomicU64; 2],
    watches_open: AtomicI64,
}

static TELEMETRY: LazyLock<Telemetry> = LazyLock::new(|| Telemetry {
    reconcile: Mutex::default(),
    scheduling: Mutex::new(Histogram::new(SCHEDULING_BUCKETS)),
    mqtt: Mutex::default(),
    status_reports: AtomicU64::new(0),
    skipped: [AtomicU64::new(0), AtomicU64::new(0)],
    watches_open: AtomicI64::new(0),
});

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One reconcile pass of `controller` (`deployment`, `scheduler`, …) took `took`.
pub fn observe_reconcile(controller: &str, took: Duration) {
    lock(&TELEMETRY.reconcile)
        .entry(controller.to_string())
        .or_insert_with(|| Histogram::new(RECONCILE_BUCKETS))
        .observe(took.as_secs_f64());
}

/// Times a reconcile pass: observed when dropped.
pub struct ReconcileTimer {
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        observe_reconcile(self.controller, self.started.elapsed());
    }
}

/// `let _timer = prometheus::reconcile_timer("deployment");` at the top of a pass.
pub fn reconcile_timer(controller: &'static str) -> ReconcileTimer {
    ReconcileTimer {
        controller,
        started: Instant::now(),
    }
}

/// A Pod was bound `latency` after it was created.
pub fn observe_scheduling(latency: Duration) {
    lock(&TELEMETRY.scheduling).observe(latency.as_secs_f64());
}

/// One MQTT message on `topic` (its kind is counted: `status`, `desired`, …).
pub fn mqtt_message(direction: Direction, topic: &str) {
    let kind = topic_kind(topic);
    *lock(&TELEMETRY.mqtt).entry((direction, kind)).or_default() += 1;
}

/// A node status report was taken into the store.
pub fn status_report_ingested() {
    TELEMETRY.status_reports.fetch_add(1, Ordering::Relaxed);
}

/// A received message the controller did not take: `superseded` by a newer one on its
/// topic before node sync got to it, or else dropped from a full queue.
pub fn mqtt_skipped(superseded: bool) {
    TELEMETRY.skipped[usize::from(!superseded)].fetch_add(1, Ordering::Relaxed);
}

/// An open watch stream; counted while it lives.
pub struct WatchGuard(());

impl Drop for WatchGuard {
    fn drop(&mut self) {
        TELEMETRY.watches_open.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn watch_opened() -> WatchGuard {
    TELEMETRY.watches_open.fetch_add(1, Ordering::Relaxed);
    WatchGuard(())
}

/// `punnet/v1/nodes/pi-1/status` → `status`; `punnet/v1/cmd/apply` → `cmd`.
fn topic_kind(topic: &str) -> &'static str {
    let parts: Vec<&str> = topic.split('/').collect();
    let candidate = match parts.iter().position(|p| *p == "nodes") {
        Some(i) => parts.get(i + 2).copied(),
        None => parts.iter().copied().find(|p| *p == "cmd"),
    };
    candidate
        .and_then(|c| TOPIC_KINDS.iter().find(|k| **k == c).copied())
        .unwrap_or("other")
}

fn header(out: &mut String, name: &str, type_: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {type_}");
}

/// Label values escaped as the exposition format wants them.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition: the store's state now, and every counter since start.
pub fn render(store: &Store) -> Result<String, StoreError> {
    let mut out = String::new();
    header(
        &mut out,
        "punnet_objects",
        "gauge",
        "Objects in the store, by resource.",
    );
    for (resource, n) in store.counts()? {
        let _ = writeln!(
            out,
            "punnet_objects{{resource=\"{}\"}} {n}",
            escape(resource)
        );
    }

    let mut phases: BTreeMap<String, u64> =
        ["Pending", "Running", "Succeeded", "Failed", "Unknown"]
            .into_iter()
            .map(|p| (p.to_string(), 0))
            .collect();
    // Each scrape walks every Pod: read the phase only.
    store.peek::<Pod, PodView>(None, |p| match phases.get_mut(p.phase()) {
        Some(n) => *n += 1,
        None => {
            phases.insert(p.phase().to_string(), 1);
        }
    })?;
    header(&mut out, "punnet_pods", "gauge", "Pods, by phase.");
    for (phase, n) in &phases {
        let _ = writeln!(out, "punnet_pods{{phase=\"{}\"}} {n}", escape(phase));
    }

    let (nodes, _) = store.list::<Node>(None)?;
    let mut ready: BTreeMap<&str, u64> = [("true", 0), ("false", 0), ("unknown", 0)].into();
    for n in &nodes {
        let status = match n.condition("Ready").map(|c| c.status.as_str()) {
            Some("True") => "true",
            Some("False") => "false",
            _ => "unknown",
        };
        *ready.entry(status).or_default() += 1;
    }
    header(
        &mut out,
        "punnet_nodes",
        "gauge",
        "Nodes, by the status of their Ready condition.",
    );
    for (status, n) in &ready {
        let _ = writeln!(out, "punnet_nodes{{ready=\"{status}\"}} {n}");
    }

    header(
        &mut out,
        "punnet_store_revision",
        "gauge",
        "The store's newest revision (resourceVersion).",
    );
    let _ = writeln!(out, "punnet_store_revision {}", store.revision());

    header(
        &mut out,
        "punnet_reconcile_duration_seconds",
        "histogram",
        "How long one reconcile pass of a controller took.",
    );
    for (controller, h) in lock(&TELEMETRY.reconcile).iter() {
        let labels = format!("controller=\"{}\"", escape(controller));
        h.render(&mut out, "punnet_reconcile_duration_seconds", &labels);
    }

    header(
        &mut out,
        "punnet_scheduling_latency_seconds",
        "histogram",
        "From a Pod's creation to its binding to a node.",
    );
    lock(&TELEMETRY.scheduling).render(&mut out, "punnet_scheduling_latency_seconds", "");

    header(
        &mut out,
        "punnet_mqtt_messages_total",
        "counter",
        "MQTT messages the controller received (in) and published (out), by topic kind.",
    );
    {
        let mqtt = lock(&TELEMETRY.mqtt);
        for direction in [Direction::In, Direction::Out] {
            for kind in TOPIC_KINDS.iter().copied().chain(["other"]) {
                let n = mqtt.get(&(direction, kind)).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "punnet_mqtt_messages_total{{direction=\"{}\",topic=\"{kind}\"}} {n}",
                    direction.label()
                );
            }
        }
    }

    header(
        &mut out,
        "punnet_status_reports_ingested_total",
        "counter",
        "Node status reports taken into the store.",
    );
    let _ = writeln!(
        out,
        "punnet_status_reports_ingested_total {}",
        TELEMETRY.status_reports.load(Ordering::Relaxed)
    );

    header(
        &mut out,
        "punnet_mqtt_skipped_total",
        "counter",
        "Received messages not taken: superseded by a newer report of the same node before the controller got to it (it was busy), or dropped from a full queue.",
    );
    for (i, why) in ["superseded", "dropped"].iter().enumerate() {
        let _ = writeln!(
            out,
            "punnet_mqtt_skipped_total{{reason=\"{why}\"}} {}",
            TELEMETRY.skipped[i].load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "punnet_watch_streams_open",
        "gauge",
        "Watch streams being served.",
    );
    let _ = writeln!(
        out,
        "punnet_watch_streams_open {}",
        TELEMETRY.watches_open.load(Ordering::Relaxed).max(0)
    );

    header(
        &mut out,
        "punnet_events_recorded_total",
        "counter",
        "Kubernetes Events recorded (repeats of one Event included).",
    );
    let _ = writeln!(
        out,
        "punnet_events_recorded_total {}",
        store.recorder().recorded()
    );
    crate::signing::render_metrics(&mut out);
    crate::broker_gate::render_metrics(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.5, 0.7, 5.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "c=\"a\"");
        assert_eq!(
            out,
            "x_bucket{c=\"a\",le=\"0.1\"} 1\nx_bucket{c=\"a\",le=\"1\"} 3\nx_bucket{c=\"a\",le=\"+Inf\"} 4\nx_sum{c=\"a\"} 6.25\nx_count{c=\"a\"} 4\n"
        );
        let mut out = String::new();
        Histogram::new(&[1.0]).render(&mut out, "y", "");
        assert!(
            out.contains("y_bucket{le=\"+Inf\"} 0\ny_sum 0\ny_count 0\n"),
            "{out}"
        );
    }

    #[test]
    fn topic_kinds_are_a_fixed_set() {
        assert_eq!(topic_kind("punnet/v1/nodes/pi-1/status"), "status");
        assert_eq!(topic_kind("punnet/v1/nodes/pi-1/desired"), "desired");
        assert_eq!(topic_kind("punnet/v1/nodes/pi-1/logs/reply/x"), "logs");
        assert_eq!(topic_kind("punnet/v1/cmd/apply"), "cmd");
        assert_eq!(topic_kind("punnet/v1/nodes/pi-1/whatever"), "other");
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
