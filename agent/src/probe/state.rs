//! The kubelet's probe bookkeeping for one run of one container, as pure state: when
//! each probe is due, how consecutive results count against the thresholds, and what
//! the container's `started`/`ready` are and whether it must be restarted. Time is
//! passed in (`Instant`s), so tests drive it with a fake clock.
//!
//! Kubernetes semantics followed here:
//! - nothing is probed before `initialDelaySeconds` after the container started, then
//!   every `periodSeconds` (never two runs of one probe at once);
//! - while a startup probe has not succeeded, liveness and readiness do not run and the
//!   container is neither started nor ready; once it succeeds it stops running;
//! - a result changes the reported state only after `successThreshold` successes or
//!   `failureThreshold` failures in a row;
//! - readiness starts as failed (not ready), liveness as passed; without a readiness
//!   probe a started container is ready;
//! - liveness or startup failing `failureThreshold` times asks for a restart, and
//!   probing stops until the container is replaced (a new container id is a new state).

use std::time::{Duration, Instant};

use punnet_api::pod::{Container, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// The word Kubernetes puts in front of probe messages.
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    /// The probe of this kind in a container spec.
    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Startup => container.startup_probe.as_ref(),
            ProbeKind::Liveness => container.liveness_probe.as_ref(),
            ProbeKind::Readiness => container.readiness_probe.as_ref(),
        }
    }
}

/// The result of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// What failed, in the kubelet's words (`HTTP probe failed with statuscode: 500`).
    Failure(String),
}

/// A probe's timing and thresholds with Kubernetes' defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// `terminationGracePeriodSeconds` of the probe, used when it kills the container.
    pub grace_period: Option<Duration>,
}

impl ProbeTiming {
    pub fn of(probe: &Probe) -> ProbeTiming {
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        ProbeTiming {
            initial_delay: secs(probe.initial_delay()),
            period: secs(probe.period()),
            timeout: secs(probe.timeout()),
            success_threshold: probe.success_threshold(),
            failure_threshold: probe.failure_threshold(),
            grace_period: probe
                .termination_grace_period_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64)),
        }
    }
}

/// Why a container must be restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartReason {
    pub kind: ProbeKind,
    /// `Liveness probe failed: HTTP probe failed with statuscode: 500`.
    pub message: String,
    /// The probe's own grace period; `None` means the Pod's.
    pub grace_period: Option<Duration>,
}

impl RestartReason {
    /// The kubelet's message when it kills the container
    /// (`Container web failed liveness probe, will be restarted`).
    pub fn kill_message(&self, container: &str) -> String {
        format!(
            "Container {container} failed {} probe, will be restarted",
            self.kind.label().to_lowercase()
        )
    }
}

/// What a recorded result changed, for the agent to act on or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeChange {
    /// A probe run failed (the kubelet's `Unhealthy` warning), below the threshold or not.
    Unhealthy { kind: ProbeKind, message: String },
    /// The startup probe passed: the container is started.
    Started,
    /// The container's readiness changed.
    Ready(bool),
    /// Liveness or startup failed `failureThreshold` times in a row.
    Restart(RestartReason),
}

#[derive(Debug, Clone)]
struct Worker {
    kind: ProbeKind,
    timing: ProbeTiming,
    /// The result after thresholds: `Some(true)` passed, `Some(false)` failed, `None` not yet known.
    reported: Option<bool>,
    /// The last raw result and how many times in a row it came.
    last: Option<bool>,
    run: u32,
    next_due: Instant,
    /// When the run under way started.
    running_since: Option<Instant>,
}

impl Worker {
    fn new(kind: ProbeKind, probe: &Probe, started_at: Instant) -> Worker {
        let timing = ProbeTiming::of(probe);
        Worker {
            kind,
            timing,
            reported: match kind {
                ProbeKind::Liveness => Some(true),
                ProbeKind::Readiness => Some(false),
                ProbeKind::Startup => None,
            },
            last: None,
            run: 0,
            next_due: started_at + timing.initial_delay,
            running_since: None,
        }
    }

    /// Counts a raw result; returns the newly reported result when it changes.
    fn count(&mut self, passed: bool) -> Option<bool> {
        if self.last == Some(passed) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(passed);
            self.run = 1;
        }
        let threshold = if passed {
            self.timing.success_threshold
        } else {
            self.timing.failure_threshold
        };
        if self.run < threshold {
            return None;
        }
        let changed = self.reported != Some(passed);
        self.reported = Some(passed);
        changed.then_some(passed)
    }
}

/// The probe state of one run (one container id) of one container.
#[derive(Debug, Clone)]
pub struct ContainerProbes {
    startup: Option<Worker>,
    liveness: Option<Worker>,
    readiness: Option<Worker>,
    started: bool,
    restart: Option<RestartReason>,
}

impl ContainerProbes {
    /// Fresh state for a container run that started at `started_at`.
    pub fn new(spec: &Container, started_at: Instant) -> ContainerProbes {
        let worker = |kind: ProbeKind| kind.of(spec).map(|p| Worker::new(kind, p, started_at));
        let startup = worker(ProbeKind::Startup);
        ContainerProbes {
            started: startup.is_none(),
            startup,
            liveness: worker(ProbeKind::Liveness),
            readiness: worker(ProbeKind::Readiness),
            restart: None,
        }
    }

    /// Startup probe passed, or there is none.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Started, and the readiness probe (if any) passed last.
    pub fn ready(&self) -> bool {
        self.started
            && self.restart.is_none()
            && self
                .readiness
                .as_ref()
                .is_none_or(|w| w.reported == Some(true))
    }

    /// Set once liveness or startup failed for good.
    pub fn should_restart(&self) -> Option<&RestartReason> {
        self.restart.as_ref()
    }

    /// The probe that may run now, in the order startup, liveness, readiness.
    fn active(&mut self) -> impl Iterator<Item = &mut Worker> {
        let probing = self.restart.is_none();
        let started = self.started;
        [
            self.startup.as_mut().filter(|_| probing && !started),
            self.liveness.as_mut().filter(|_| probing && started),
            self.readiness.as_mut().filter(|_| probing && started),
        ]
        .into_iter()
        .flatten()
    }

    /// The probes due at `now`, marked as running: the caller runs each and passes
    /// its result to [`record`](Self::record).
    pub fn take_due(&mut self, now: Instant) -> Vec<ProbeKind> {
        let mut due = Vec::new();
        for w in self.active() {
            if w.running_since.is_none() && w.next_due <= now {
                w.running_since = Some(now);
                due.push(w.kind);
            }
        }
        due
    }

    /// When the next probe falls due (`None`: nothing left to run, or all running).
    pub fn next_due(&mut self) -> Option<Instant> {
        self.active()
            .filter(|w| w.running_since.is_none())
            .map(|w| w.next_due)
            .min()
    }

    /// The timing of a probe of this container.
    pub fn timing(&self, kind: ProbeKind) -> Option<ProbeTiming> {
        self.worker(kind).map(|w| w.timing)
    }

    fn worker(&self, kind: ProbeKind) -> Option<&Worker> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
        }
    }

    fn worker_mut(&mut self, kind: ProbeKind) -> Option<&mut Worker> {
        match kind {
            ProbeKind::Startup => self.startup.as_mut(),
            ProbeKind::Liveness => self.liveness.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
        }
    }

    /// Records the result of a run of `kind` that finished at `now`.
    pub fn record(
        &mut self,
        kind: ProbeKind,
        outcome: ProbeOutcome,
        now: Instant,
    ) -> Vec<ProbeChange> {
        let was_ready = self.ready();
        let mut changes = Vec::new();
        let Some(w) = self.worker_mut(kind) else {
            return changes;
        };
        let began = w.running_since.take().unwrap_or(now);
        w.next_due = (began + w.timing.period).max(now);
        let passed = outcome == ProbeOutcome::Success;
        if let ProbeOutcome::Failure(message) = &outcome {
            changes.push(ProbeChange::Unhealthy {
                kind,
                message: probe_message(kind, message),
            });
        }
        let reported = w.count(passed);
        let grace = w.timing.grace_period;
        match (kind, reported) {
            (ProbeKind::Startup, Some(true)) => {
                self.started = true;
                changes.push(ProbeChange::Started);
            }
            (ProbeKind::Startup | ProbeKind::Liveness, Some(false)) => {
                let message = match &outcome {
                    ProbeOutcome::Failure(m) => probe_message(kind, m),
                    ProbeOutcome::Success => probe_message(kind, ""),
                };
                let reason = RestartReason {
                    kind,
                    message,
                    grace_period: grace,
                };
                self.restart = Some(reason.clone());
                changes.push(ProbeChange::Restart(reason));
            }
            _ => {}
        }
        let ready = self.ready();
        if ready != was_ready {
            changes.push(ProbeChange::Ready(ready));
        }
        changes
    }
}

/// `Liveness probe failed: <what>`, as the kubelet words its events.
pub fn probe_message(kind: ProbeKind, what: &str) -> String {
    format!("{} probe failed: {what}", kind.label())
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::pod::{ExecAction, Probe};

    fn probe(delay: i32, period: i32, success: i32, failure: i32) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: vec!["true".into()],
            }),
            initial_delay_seconds: Some(delay),
            period_seconds: Some(period),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn fail(m: &str) -> ProbeOutcome {
        ProbeOutcome::Failure(m.into())
    }

    /// Runs every due probe at `at` with the result `result_of` gives, returning the changes.
    fn step(
        p: &mut ContainerProbes,
        at: Instant,
        result_of: impl Fn(ProbeKind) -> ProbeOutcome,
    ) -> Vec<ProbeChange> {
        p.take_due(at)
            .into_iter()
            .flat_map(|k| p.record(k, result_of(k), at))
            .collect()
    }

    #[test]
    fn without_probes_a_running_container_is_started_and_ready() {
        let t0 = Instant::now();
        let mut p = ContainerProbes::new(&Container::default(), t0);
        assert!(p.started() && p.ready());
        assert!(p.should_restart().is_none());
        assert_eq!(p.take_due(t0 + secs(100)), vec![]);
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn readiness_waits_for_the_initial_delay_then_runs_every_period() {
        let t0 = Instant::now();
        let spec = Container {
            readiness_probe: Some(probe(5, 10, 1, 3)),
            ..Container::default()
        };
        let mut p = ContainerProbes::new(&spec, t0);
        assert!(p.started());
        assert!(!p.ready(), "not ready before the first success");
        assert_eq!(p.next_due(), Some(t0 + secs(5)));
        assert_eq!(p.take_due(t0 + secs(4)), vec![]);
        assert_eq!(p.take_due(t0 + secs(5)), vec![ProbeKind::Readiness]);
        assert_eq!(p.take_due(t0 + secs(6)), vec![], "one run at a time");
        assert_eq!(p.next_due(), None, "running");
        let changes = p.record(ProbeKind::Readiness, ProbeOutcome::Success, t0 + secs(6));
        assert_eq!(changes, vec![ProbeChange::Ready(true)]);
        assert!(p.ready());
        // The period counts from when the run began.
        assert_eq!(p.next_due(), Some(t0 + secs(15)));
    }

    #[test]
    fn a_slow_run_is_followed_at_once_not_in_parallel() {
        let t0 = Instant::now();
        let spec = Container {
            readiness_probe: Some(probe(0, 1, 1, 3)),
            ..Container::default()
        };
        let mut p = ContainerProbes::new(&spec, t0);
        assert_eq!(p.take_due(t0), vec![ProbeKind::Readiness]);
        p.record(ProbeKind::Readiness, ProbeOutcome::Success, t0 + secs(3));
        assert_eq!(p.next_due(), Some(t0 + secs(3)));
    }

    #[test]
    fn readiness_flips_only_after_its_thresholds() {
        let t0 = Instant::now();
        let spec = Container {
            readiness_probe: Some(probe(0, 1, 2, 3)),
            ..Container::default()
        };
        let mut p = ContainerProbes::new(&spec, t0);
        let ok = |_| ProbeOutcome::Success;
        let bad = |_| fail("HTTP probe failed with statuscode: 503");
        assert_eq!(step(&mut p, t0, ok), vec![]);
        assert!(!p.ready(), "one success of two");
        assert_eq!(
            step(&mut p, t0 + secs(1), ok),
            vec![ProbeChange::Ready(true)]
        );
        let unhealthy = ProbeChange::Unhealthy {
            kind: ProbeKind::Readiness,
            message: "Readiness probe failed: HTTP probe failed with statuscode: 503".into(),
        };
        assert_eq!(step(&mut p, t0 + secs(2), bad), vec![unhealthy.clone()]);
        assert_eq!(step(&mut p, t0 + secs(3), bad), vec![unhealthy.clone()]);
        // A success in between restarts the count.
        assert_eq!(step(&mut p, t0 + secs(4), ok), vec![]);
        assert!(p.ready());
        for i in 5..7 {
            assert_eq!(step(&mut p, t0 + secs(i), bad), vec![unhealthy.clone()]);
        }
        assert_eq!(
            step(&mut p, t0 + secs(7), bad),
            vec![unhealthy, ProbeChange::Ready(false)]
        );
        assert!(p.should_restart().is_none(), "readiness never restarts");
        assert!(p.started());
    }

    #[test]
    fn liveness_failing_its_threshold_asks_for_a_restart_and_stops_probing() {
        let t0 = Instant::now();
        let mut live = probe(0, 10, 1, 3);
        live.termination_grace_period_seconds = Some(7);
        let spec = Container {
            name: "web".into(),
            liveness_probe: Some(live),
            ..Container::default()
        };
        let mut p = ContainerProbes::new(&spec, t0);
        assert!(p.ready(), "liveness alone does not gate readiness");
        let bad = |_| fail("HTTP probe failed with statuscode: 500");
        step(&mut p, t0, bad);
        step(&mut p, t0 + secs(10), bad);
        assert!(p.should_restart().is_none());
        let changes = step(&mut p, t0 + secs(20), bad);
        let reason = RestartReason {
            kind: ProbeKind::Liveness,
            message: "Liveness probe failed: HTTP probe failed with statuscode: 500".into(),
            grace_period: Some(secs(7)),
        };
        assert!(
            changes.contains(&ProbeChange::Restart(reason.clone())),
            "{changes:?}"
        );
        assert!(changes.contains(&ProbeChange::Ready(false)), "{changes:?}");
        assert_eq!(p.should_restart(), Some(&reason));
        assert_eq!(
            reason.kill_message("web"),
            "Container web failed liveness probe, will be restarted"
        );
        assert_eq!(p.take_due(t0 + secs(1000)), vec![]);
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn startup_gates_liveness_and_readiness_until_it_passes() {
        let t0 = Instant::now();
        let spec = Container {
            startup_probe: Some(probe(0, 1, 1, 30)),
            liveness_probe: Some(probe(0, 10, 1, 1)),
            readiness_probe: Some(probe(0, 10, 1, 1)),
            ..Container::default()
        };
        let mut p = ContainerProbes::new(&spec, t0);
        assert!(!p.started() && !p.ready());
        assert_eq!(p.take_due(t0), vec![ProbeKind::Startup]);
        p.record(ProbeKind::Startup, fail("connection refused"), t0);
        assert_eq!(p.take_due(t0 + secs(1)), vec![ProbeKind::Startup]);
        let changes = p.record(ProbeKind::Startup, ProbeOutcome::Success, t0 + secs(1));
        assert_eq!(changes, vec![ProbeChange::Started]);
        assert!(p.started() && !p.ready(), "ready waits for readiness");
        // The startup probe is done; the other two are due at once.
        assert_eq!(
            p.take_due(t0 + secs(1)),
            vec![ProbeKind::Liveness, ProbeKind::Readiness]
        );
        let changes = p.record(ProbeKind::Readiness, ProbeOutcome::Success, t0 + secs(1));
        assert_eq!(changes, vec![ProbeChange::Ready(true)]);
        p.record(ProbeKind::Liveness, ProbeOutcome::Success, t0 + secs(1));
        assert_eq!(p.next_due(), Some(t0 + secs(11)));
    }

    #[test]
    fn startup_failing_its_threshold_asks_for_a_restart() {
        let t0 = Instant::now();
        let spec = Container {
            startup_probe: Some(probe(0, 1, 1, 2)),
            liveness_probe: Some(probe(0, 1, 1, 1)),
            ..Container::default()
        };
        let mut p = ContainerProbes::new(&spec, t0);
        let bad = |_| fail("command \"check\" timed out");
        step(&mut p, t0, bad);
        let changes = step(&mut p, t0 + secs(1), bad);
        let restart = changes
            .iter()
            .find_map(|c| match c {
                ProbeChange::Restart(r) => Some(r.clone()),
                _ => None,
            })
            .expect("restart");
        assert_eq!(restart.kind, ProbeKind::Startup);
        assert_eq!(
            restart.message,
            "Startup probe failed: command \"check\" timed out"
        );
        assert_eq!(restart.grace_period, None);
        assert!(!p.started());
    }

    #[test]
    fn results_of_unknown_probes_change_nothing() {
        let t0 = Instant::now();
        let mut p = ContainerProbes::new(&Container::default(), t0);
        assert_eq!(p.record(ProbeKind::Liveness, fail("x"), t0), vec![]);
        assert!(p.ready());
    }

    #[test]
    fn timing_takes_kubernetes_defaults() {
        let t = ProbeTiming::of(&Probe::default());
        assert_eq!(
            t,
            ProbeTiming {
                initial_delay: secs(0),
                period: secs(10),
                timeout: secs(1),
                success_threshold: 1,
                failure_threshold: 3,
                grace_period: None,
            }
        );
    }
}
