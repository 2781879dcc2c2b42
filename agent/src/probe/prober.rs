//! The probe driver the agent owns. The agent tells it which containers run
//! ([`Prober::update`], on every reconcile) and awaits [`Prober::next_events`] in its
//! run loop; the prober starts each probe when due as a tokio task (exec probes on the
//! blocking pool) and the tasks send their results back over a channel, so the run
//! loop never waits on a probe.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use punnet_api::pod::Container;
use tokio::sync::mpsc;

use super::run::run_probe;
use super::state::{ContainerProbes, ProbeChange, ProbeKind, ProbeOutcome, RestartReason};
use crate::shim::exec::ContainerExec;

/// A running container to probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTarget {
    /// Names the container within its Pod across restarts (e.g. `<pod uid>/<name>`).
    pub key: String,
    /// The runtime's id of this run; a new id starts the probes afresh.
    pub container_id: String,
    pub started_at: SystemTime,
    pub spec: Container,
    /// Default host of httpGet and tcpSocket; `None` means 127.0.0.1.
    pub pod_ip: Option<IpAddr>,
}

/// Something a probe result changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    pub key: String,
    pub container_id: String,
    pub change: ProbeChange,
}

/// What the container status shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    pub started: bool,
    pub ready: bool,
    /// Set when liveness or startup failed for good: stop and restart the container.
    pub restart: Option<RestartReason>,
}

struct Entry {
    target: Arc<ProbeTarget>,
    probes: ContainerProbes,
}

struct Done {
    key: String,
    container_id: String,
    kind: ProbeKind,
    outcome: ProbeOutcome,
}

pub struct Prober {
    exec: ContainerExec,
    entries: HashMap<String, Entry>,
    /// Probe tasks report here; the prober keeps a sender so `recv` never ends.
    tx: mpsc::UnboundedSender<Done>,
    rx: mpsc::UnboundedReceiver<Done>,
}

impl Prober {
    pub fn new(exec: ContainerExec) -> Prober {
        let (tx, rx) = mpsc::unbounded_channel();
        Prober {
            exec,
            entries: HashMap::new(),
            tx,
            rx,
        }
    }

    /// Sets the running containers: a new key or a new container id for a key starts
    /// fresh (not ready, counts reset); keys not listed are forgotten, and results of
    /// their probes still under way are dropped.
    pub fn update(&mut self, targets: &[ProbeTarget], now: Instant) {
        let wall_now = SystemTime::now();
        self.entries
            .retain(|key, _| targets.iter().any(|t| &t.key == key));
        for target in targets {
            match self.entries.get_mut(&target.key) {
                Some(entry) if entry.target.container_id == target.container_id => {
                    // Same run: the Pod IP may have become known since.
                    if *entry.target != *target {
                        entry.target = Arc::new(target.clone());
                    }
                }
                _ => {
                    let started = monotonic(target.started_at, wall_now, now);
                    self.entries.insert(
                        target.key.clone(),
                        Entry {
                            target: Arc::new(target.clone()),
                            probes: ContainerProbes::new(&target.spec, started),
                        },
                    );
                }
            }
        }
    }

    /// The probe-derived status of a container run; `None` when the prober does not
    /// know this key and id (not passed to `update` yet).
    pub fn status(&self, key: &str, container_id: &str) -> Option<ProbeStatus> {
        let entry = self.entries.get(key)?;
        (entry.target.container_id == container_id).then(|| ProbeStatus {
            started: entry.probes.started(),
            ready: entry.probes.ready(),
            restart: entry.probes.should_restart().cloned(),
        })
    }

    /// Starts the probes that are due and waits until results change something.
    /// Cancel-safe: use it in the agent's `select!` loop.
    pub async fn next_events(&mut self) -> Vec<ProbeEvent> {
        loop {
            let wake_at = self.start_due(Instant::now());
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = self.rx.recv() => {
                    let mut events = self.apply(done);
                    while let Ok(more) = self.rx.try_recv() {
                        events.extend(self.apply(more));
                    }
                    if !events.is_empty() {
                        return events;
                    }
                }
                () = sleep => {}
            }
        }
    }

    /// Spawns every due probe; returns when the next one falls due.
    fn start_due(&mut self, now: Instant) -> Option<Instant> {
        for entry in self.entries.values_mut() {
            for kind in entry.probes.take_due(now) {
                let Some(probe) = kind.of(&entry.target.spec).cloned() else {
                    continue;
                };
                let target = entry.target.clone();
                let exec = self.exec.clone();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let outcome = run_probe(&probe, &target, &exec).await;
                    let _ = tx.send(Done {
                        key: target.key.clone(),
                        container_id: target.container_id.clone(),
                        kind,
                        outcome,
                    });
                });
            }
        }
        self.entries
            .values_mut()
            .filter_map(|e| e.probes.next_due())
            .min()
    }

    fn apply(&mut self, done: Done) -> Vec<ProbeEvent> {
        let Some(entry) = self.entries.get_mut(&done.key) else {
            return Vec::new();
        };
        if entry.target.container_id != done.container_id {
            return Vec::new();
        }
        entry
            .probes
            .record(done.kind, done.outcome, Instant::now())
            .into_iter()
            .map(|change| ProbeEvent {
                key: done.key.clone(),
                container_id: done.container_id.clone(),
                change,
            })
            .collect()
    }
}

/// The monotonic instant of a wall-clock start time: `now` less the container's age.
/// A start time in the future (the clock stepped back) counts as now.
fn monotonic(started_at: SystemTime, wall_now: SystemTime, now: Instant) -> Instant {
    let age = wall_now
        .duration_since(started_at)
        .unwrap_or(Duration::ZERO);
    now.checked_sub(age).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::pod::{IntOrString, Probe, TcpSocketAction};

    #[test]
    fn start_times_map_onto_the_monotonic_clock() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ten_ago = wall - Duration::from_secs(10);
        assert_eq!(monotonic(ten_ago, wall, now) + Duration::from_secs(10), now);
        assert_eq!(monotonic(wall + Duration::from_secs(5), wall, now), now);
    }

    fn target(key: &str, id: &str, port: u16) -> ProbeTarget {
        ProbeTarget {
            key: key.into(),
            container_id: id.into(),
            started_at: SystemTime::now(),
            spec: Container {
                name: "main".into(),
                readiness_probe: Some(Probe {
                    tcp_socket: Some(TcpSocketAction {
                        port: IntOrString::Int(i32::from(port)),
                        host: None,
                    }),
                    period_seconds: Some(1),
                    ..Probe::default()
                }),
                ..Container::default()
            },
            pod_ip: None,
        }
    }

    #[tokio::test]
    async fn readiness_reaches_the_status_and_a_new_container_id_resets_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let exec = ContainerExec::new("/bin/false".into(), "/nonexistent".into());
        let mut prober = Prober::new(exec);
        prober.update(&[target("p/main", "c1", port)], Instant::now());
        assert_eq!(
            prober.status("p/main", "c1"),
            Some(ProbeStatus {
                started: true,
                ready: false,
                restart: None
            })
        );
        assert_eq!(prober.status("p/main", "other"), None);
        let events = prober.next_events().await;
        assert_eq!(
            events,
            vec![ProbeEvent {
                key: "p/main".into(),
                container_id: "c1".into(),
                change: ProbeChange::Ready(true),
            }]
        );
        assert!(prober.status("p/main", "c1").unwrap().ready);

        prober.update(&[target("p/main", "c2", port)], Instant::now());
        assert!(!prober.status("p/main", "c2").unwrap().ready);
        prober.update(&[], Instant::now());
        assert_eq!(prober.status("p/main", "c2"), None);
    }
}
