//! The "back" step of a Pod's flow: turning what the runtime reports (and why the
//! reconciler holds a container back) into a Kubernetes `PodStatus`. Pure: phase,
//! container states, conditions and times follow the kubelet's rules, so `kubectl`-style
//! tools show what people expect.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use punnet_api::meta::Time;
use punnet_api::pod::{self as api, phase, Pod, PodCondition, PodStatus, RestartPolicy};

use crate::reconcile::{pod_uid, runs_of, ContainerKey, Waiting};
use crate::runtime::{ContainerInfo, ContainerState};

pub struct StatusInput<'a> {
    pub pod: &'a Pod,
    /// Everything the runtime lists (this Pod's runs are picked out by uid).
    pub containers: &'a [ContainerInfo],
    /// From the last reconcile plan.
    pub waiting: &'a BTreeMap<ContainerKey, Waiting>,
    /// The status computed last time, so transition times and the start time stay put.
    pub previous: Option<&'a PodStatus>,
    pub host_ip: Option<&'a str>,
    /// The Pod's own address (CNI), or the host's for host-network Pods.
    pub pod_ip: Option<&'a str>,
    /// Container id → (started, ready) from its probes, for running containers the
    /// prober knows.
    pub probes: Option<&'a BTreeMap<String, (bool, bool)>>,
    /// Why the Pod was evicted (`Evicted`, phase Failed), if it was.
    pub evicted: Option<&'a str>,
    pub now: SystemTime,
}

pub fn time(t: SystemTime) -> Time {
    Time(t.into())
}

/// Go's `time.Duration` formatting, as in kubelet messages: `10s`, `1m20s`, `5m0s`.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m{}s", secs / 3600, secs % 3600 / 60, secs % 60),
    }
}

fn terminated(c: &ContainerInfo) -> Option<api::ContainerStateTerminated> {
    match c.state {
        ContainerState::Exited {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => Some(api::ContainerStateTerminated {
            exit_code,
            signal: None,
            reason: Some(reason.as_k8s_reason().to_string()),
            message: None,
            started_at: started_at.map(time),
            finished_at: Some(time(finished_at)),
        }),
        ContainerState::Running { .. } => None,
    }
}

fn waiting(reason: &str, message: Option<String>) -> api::ContainerState {
    api::ContainerState {
        waiting: Some(api::ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

fn container_status(input: &StatusInput, uid: &str, spec: &api::Container) -> api::ContainerStatus {
    let pod = input.pod;
    let runs = runs_of(input.containers, uid, &spec.name);
    let running = runs
        .iter()
        .rev()
        .find(|c| matches!(c.state, ContainerState::Running { .. }));
    let last_exited = runs.iter().rev().find(|c| {
        matches!(c.state, ContainerState::Exited { .. })
            && running.is_none_or(|r| c.config.restart_count < r.config.restart_count)
    });
    let last_state = api::ContainerState {
        terminated: last_exited.and_then(|c| terminated(c)),
        ..Default::default()
    };
    let key = ContainerKey::new(uid, &spec.name);
    let (state, last_state) = if let Some(r) = running {
        let ContainerState::Running { started_at, .. } = r.state else {
            unreachable!("found as running")
        };
        let state = api::ContainerState {
            running: Some(api::ContainerStateRunning {
                started_at: Some(time(started_at)),
            }),
            ..Default::default()
        };
        (state, last_state)
    } else {
        match input.waiting.get(&key) {
            Some(Waiting::BackOff { delay, .. }) => {
                let message = format!(
                    "back-off {} restarting failed container={} pod={}_{}({uid})",
                    go_duration(*delay),
                    spec.name,
                    pod.metadata.name,
                    pod.metadata.namespace_or_default(),
                );
                (waiting("CrashLoopBackOff", Some(message)), last_state)
            }
            Some(Waiting::Failed { reason, message }) => {
                (waiting(reason, Some(message.clone())), last_state)
            }
            Some(Waiting::Initializing) => (waiting("PodInitializing", None), last_state),
            // The run being started already ran and exited (a container that exits at
            // once can finish before the start call returns): report its end, not
            // ContainerCreating.
            Some(Waiting::Starting { restart })
                if last_exited.is_none_or(|c| c.config.restart_count < *restart) =>
            {
                (waiting("ContainerCreating", None), last_state)
            }
            Some(Waiting::Starting { .. }) | None => match last_exited {
                // Done for good under the restart policy.
                Some(c) => (
                    api::ContainerState {
                        terminated: terminated(c),
                        ..Default::default()
                    },
                    api::ContainerState::default(),
                ),
                None => (waiting("ContainerCreating", None), last_state),
            },
        }
    };
    let is_running = running.is_some();
    // Until the prober has a result: started unless there is a startup probe, ready
    // unless there is a readiness or startup probe.
    let (probe_started, probe_ready) = running
        .and_then(|r| input.probes.and_then(|p| p.get(&r.config.id)))
        .copied()
        .unwrap_or((
            spec.startup_probe.is_none(),
            spec.startup_probe.is_none() && spec.readiness_probe.is_none(),
        ));
    api::ContainerStatus {
        name: spec.name.clone(),
        state,
        last_state,
        ready: is_running && probe_ready && pod.metadata.deletion_timestamp.is_none(),
        restart_count: runs
            .iter()
            .map(|c| c.config.restart_count)
            .max()
            .unwrap_or(0) as i32,
        image: spec.image.clone(),
        image_id: String::new(),
        container_id: runs.last().map(|c| format!("punnet://{}", c.config.id)),
        started: Some(is_running && probe_started),
    }
}

/// The kubelet's `getPhase`.
pub fn phase_of(policy: RestartPolicy, statuses: &[api::ContainerStatus]) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        if s.state.running.is_some() {
            running += 1;
        } else if let Some(t) = &s.state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s.last_state.terminated.is_some() {
            // Waiting to restart after an exit: counts as stopped, not pending.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        phase::PENDING
    } else if running > 0 {
        phase::RUNNING
    } else if stopped > 0 {
        if policy == RestartPolicy::Always {
            phase::RUNNING
        } else if stopped == succeeded {
            phase::SUCCEEDED
        } else if policy == RestartPolicy::Never {
            phase::FAILED
        } else {
            phase::RUNNING
        }
    } else {
        phase::PENDING
    }
}

fn condition(
    previous: Option<&PodStatus>,
    now: SystemTime,
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time)
        .unwrap_or_else(|| time(now));
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_transition_time: Some(since),
    }
}

/// Pods that are no longer desired but still have containers here (stopping, or exited
/// and not yet removed), rebuilt from what the containers were started with. The agent
/// keeps reporting them: the controller removes a terminating Pod only once its node
/// stops listing it, i.e. once nothing of it is left. Marked terminating (so never
/// ready) and `restartPolicy: Never` (so nothing counts as waiting to restart: the
/// phase is Running while any container runs).
pub fn leftover_pods(desired_uids: &BTreeSet<String>, containers: &[ContainerInfo]) -> Vec<Pod> {
    let mut pods: BTreeMap<&str, Pod> = BTreeMap::new();
    for c in containers
        .iter()
        .filter(|c| !desired_uids.contains(&c.config.pod_uid))
    {
        let cfg = &c.config;
        let pod = pods.entry(&cfg.pod_uid).or_insert_with(|| {
            let mut p = Pod::default();
            p.metadata.name = cfg.pod_name.clone();
            p.metadata.namespace = Some(cfg.pod_namespace.clone());
            p.metadata.uid = Some(cfg.pod_uid.clone());
            p.metadata.deletion_timestamp = Some(Time::now());
            p.spec.restart_policy = Some("Never".into());
            p
        });
        if !pod
            .spec
            .containers
            .iter()
            .any(|s| s.name == cfg.container_name)
        {
            pod.spec.containers.push(api::Container {
                name: cfg.container_name.clone(),
                image: cfg.image.clone(),
                ..Default::default()
            });
        }
    }
    pods.into_values().collect()
}

/// Init containers: ready once completed (exit 0); never "running ready".
fn init_statuses(input: &StatusInput, uid: &str) -> Vec<api::ContainerStatus> {
    input
        .pod
        .spec
        .init_containers
        .iter()
        .map(|c| {
            let mut s = container_status(input, uid, c);
            s.ready = s
                .state
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == 0);
            s
        })
        .collect()
}

pub fn pod_status(input: &StatusInput) -> PodStatus {
    let pod = input.pod;
    let uid = pod_uid(pod);
    let init_statuses = init_statuses(input, &uid);
    let statuses: Vec<_> = pod
        .spec
        .containers
        .iter()
        .map(|c| container_status(input, &uid, c))
        .collect();
    let uninitialized: Vec<&str> = init_statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let init_failed = pod.spec.restart_policy() == RestartPolicy::Never
        && init_statuses.iter().any(|s| {
            s.state
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code != 0)
        });
    // The kubelet's order: a failed init container under Never fails the Pod; pending
    // ones keep it Pending; then the app containers decide.
    let phase = if input.evicted.is_some() || init_failed {
        phase::FAILED
    } else if !uninitialized.is_empty() {
        phase::PENDING
    } else {
        phase_of(pod.spec.restart_policy(), &statuses)
    };
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let terminal = phase == phase::SUCCEEDED || phase == phase::FAILED;
    let (reason, message) = if terminal {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let all_ready = unready.is_empty() && !statuses.is_empty();
    let prev = input.previous;
    let conditions = vec![
        condition(
            prev,
            input.now,
            "Initialized",
            uninitialized.is_empty(),
            Some("ContainersNotInitialized".to_string()),
            Some(format!(
                "containers with incomplete status: [{}]",
                uninitialized.join(" ")
            )),
        ),
        condition(
            prev,
            input.now,
            "Ready",
            all_ready,
            reason.clone(),
            message.clone(),
        ),
        condition(
            prev,
            input.now,
            "ContainersReady",
            all_ready,
            reason,
            message,
        ),
        condition(prev, input.now, "PodScheduled", true, None, None),
    ];
    let earliest_run = input
        .containers
        .iter()
        .filter(|c| c.config.pod_uid == uid)
        .filter_map(|c| match c.state {
            ContainerState::Running { started_at, .. } => Some(started_at),
            ContainerState::Exited { started_at, .. } => started_at,
        })
        .min();
    let start_time = prev
        .and_then(|p| p.start_time)
        .or(earliest_run.map(time))
        .unwrap_or_else(|| time(input.now));
    PodStatus {
        phase: Some(phase.to_string()),
        conditions,
        message: input.evicted.map(str::to_string),
        reason: input.evicted.map(|_| "Evicted".to_string()),
        host_ip: input.host_ip.map(str::to_string),
        pod_ip: input.pod_ip.map(str::to_string),
        pod_ips: input
            .pod_ip
            .map(|ip| api::PodIp { ip: ip.to_string() })
            .into_iter()
            .collect(),
        start_time: Some(start_time),
        container_statuses: statuses,
        init_container_statuses: init_statuses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::container_config;
    use crate::runtime::ExitReason;
    use punnet_api::manifest::parse;
    use punnet_api::object::Object;
    use std::path::Path;

    fn pod(policy: &str, containers: &[&str]) -> Pod {
        let list: Vec<String> = containers
            .iter()
            .map(|n| format!("  - {{name: {n}, image: busybox}}"))
            .collect();
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-abc, namespace: default, uid: u-1}}\nspec:\n  restartPolicy: {policy}\n  containers:\n{}\n",
            list.join("\n")
        );
        match parse(&text).unwrap().remove(0) {
            Object::Pod(p) => p,
            _ => unreachable!(),
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn info(p: &Pod, name: &str, restart: u32, state: ContainerState) -> ContainerInfo {
        let spec = p
            .spec
            .containers
            .iter()
            .chain(p.spec.init_containers.iter())
            .find(|c| c.name == name)
            .unwrap();
        let (config, _) = container_config(
            &crate::podspec::PodContext::bare(Path::new("/d")),
            p,
            spec,
            restart,
        )
        .unwrap();
        ContainerInfo { config, state }
    }

    fn running(p: &Pod, name: &str, restart: u32, at: u64) -> ContainerInfo {
        info(
            p,
            name,
            restart,
            ContainerState::Running {
                pid: 1,
                started_at: t(at),
            },
        )
    }

    fn exited(p: &Pod, name: &str, restart: u32, code: i32, reason: ExitReason) -> ContainerInfo {
        info(
            p,
            name,
            restart,
            ContainerState::Exited {
                exit_code: code,
                reason,
                started_at: Some(t(1)),
                finished_at: t(2),
            },
        )
    }

    fn status(
        p: &Pod,
        containers: &[ContainerInfo],
        waiting: &[(&str, Waiting)],
        previous: Option<&PodStatus>,
    ) -> PodStatus {
        let waiting: BTreeMap<_, _> = waiting
            .iter()
            .map(|(n, w)| (ContainerKey::new("u-1", n), w.clone()))
            .collect();
        pod_status(&StatusInput {
            pod: p,
            containers,
            waiting: &waiting,
            previous,
            host_ip: Some("192.168.1.20"),
            pod_ip: Some("10.42.0.5"),
            probes: None,
            evicted: None,
            now: t(100),
        })
    }

    fn cond<'a>(s: &'a PodStatus, type_: &str) -> &'a PodCondition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_run_that_exited_before_its_start_returned_is_reported_terminated() {
        // The reconcile round that started run 0 still says Starting, but the list
        // already shows run 0 exited: that is its end, not ContainerCreating.
        let p = pod("Never", &["job"]);
        let done = exited(&p, "job", 0, 3, ExitReason::Error);
        let s = status(
            &p,
            &[done],
            &[("job", Waiting::Starting { restart: 0 })],
            None,
        );
        let cs = &s.container_statuses[0];
        assert_eq!(cs.state.terminated.as_ref().map(|t| t.exit_code), Some(3));
        assert!(cs.last_state.terminated.is_none());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        // Starting run 1 after run 0 exited is a real restart in progress.
        let p = pod("Always", &["job"]);
        let done = exited(&p, "job", 0, 3, ExitReason::Error);
        let s = status(
            &p,
            &[done],
            &[("job", Waiting::Starting { restart: 1 })],
            None,
        );
        let cs = &s.container_statuses[0];
        assert_eq!(
            cs.state.waiting.as_ref().unwrap().reason.as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(
            cs.last_state.terminated.as_ref().map(|t| t.exit_code),
            Some(3)
        );
    }

    #[test]
    fn running_pod_is_ready_with_times_and_ips() {
        let p = pod("Always", &["web"]);
        let s = status(&p, &[running(&p, "web", 0, 5)], &[], None);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = &s.container_statuses[0];
        assert_eq!(
            cs.state.running.as_ref().unwrap().started_at,
            Some(time(t(5)))
        );
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("punnet://u-1-web-0"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(s.host_ip.as_deref(), Some("192.168.1.20"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.5"));
        assert_eq!(s.pod_ips[0].ip, "10.42.0.5");
        assert_eq!(s.start_time, Some(time(t(5))));
    }

    #[test]
    fn creating_pod_is_pending_and_not_ready() {
        let p = pod("Always", &["a", "b"]);
        let s = status(
            &p,
            &[running(&p, "a", 0, 5)],
            &[("b", Waiting::Starting { restart: 0 })],
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let b = &s.container_statuses[1];
        assert_eq!(
            b.state.waiting.as_ref().unwrap().reason.as_deref(),
            Some("ContainerCreating")
        );
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(s.start_time, Some(time(t(5))));
    }

    #[test]
    fn crash_loop_shows_backoff_message_and_last_state() {
        let p = pod("Always", &["web"]);
        let s = status(
            &p,
            &[exited(&p, "web", 2, 1, ExitReason::Error)],
            &[(
                "web",
                Waiting::BackOff {
                    delay: Duration::from_secs(20),
                    until: t(22),
                },
            )],
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = &s.container_statuses[0];
        let w = cs.state.waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(
            w.message.as_deref(),
            Some("back-off 20s restarting failed container=web pod=web-abc_default(u-1)")
        );
        let last = cs.last_state.terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 1);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(last.finished_at, Some(time(t(2))));
        assert_eq!(cs.restart_count, 2);
        assert!(!cs.ready);
        assert_eq!(p.clone_with(s).display_status(), "CrashLoopBackOff");
    }

    trait WithStatus {
        fn clone_with(&self, s: PodStatus) -> Pod;
    }
    impl WithStatus for Pod {
        fn clone_with(&self, s: PodStatus) -> Pod {
            let mut p = self.clone();
            p.status = s;
            p
        }
    }

    #[test]
    fn phases_by_restart_policy() {
        let cases = [
            ("Never", 0, ExitReason::Completed, "Succeeded"),
            ("Never", 1, ExitReason::Error, "Failed"),
            ("OnFailure", 0, ExitReason::Completed, "Succeeded"),
            ("Never", 137, ExitReason::OomKilled, "Failed"),
        ];
        for (policy, code, reason, phase) in cases {
            let p = pod(policy, &["job"]);
            let s = status(&p, &[exited(&p, "job", 0, code, reason)], &[], None);
            assert_eq!(s.phase.as_deref(), Some(phase), "{policy} {code}");
            let term = s.container_statuses[0].state.terminated.as_ref().unwrap();
            assert_eq!(term.exit_code, code);
            assert_eq!(term.reason.as_deref(), Some(reason.as_k8s_reason()));
            assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        }
        // Running again after a restart: lastState holds the previous run.
        let p = pod("OnFailure", &["job"]);
        let s = status(
            &p,
            &[
                exited(&p, "job", 0, 3, ExitReason::Error),
                running(&p, "job", 1, 50),
            ],
            &[],
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.container_statuses[0].restart_count, 1);
        assert_eq!(
            s.container_statuses[0]
                .last_state
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            3
        );
    }

    #[test]
    fn missing_image_is_waiting_with_the_runtime_message() {
        let p = pod("Always", &["web"]);
        let s = status(
            &p,
            &[],
            &[(
                "web",
                Waiting::Failed {
                    reason: "ErrImageNeverPull".into(),
                    message: "image \"busybox\" is not in this node's image store".into(),
                },
            )],
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let w = s.container_statuses[0].state.waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("ErrImageNeverPull"));
        assert!(w.message.as_deref().unwrap().contains("image store"));
        assert_eq!(s.start_time, Some(time(t(100))));
    }

    #[test]
    fn transition_times_stay_while_status_is_unchanged() {
        let p = pod("Always", &["web"]);
        let mut previous = status(&p, &[running(&p, "web", 0, 5)], &[], None);
        for c in &mut previous.conditions {
            c.last_transition_time = Some(time(t(7)));
        }
        let s = status(&p, &[running(&p, "web", 0, 5)], &[], Some(&previous));
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(time(t(7))));
        let s = status(
            &p,
            &[],
            &[("web", Waiting::Starting { restart: 0 })],
            Some(&previous),
        );
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(time(t(100))));
        assert_eq!(
            cond(&s, "PodScheduled").last_transition_time,
            Some(time(t(7)))
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }

    #[test]
    fn pods_no_longer_desired_are_reported_while_containers_remain() {
        let p = pod("Always", &["web", "side"]);
        let c = [
            running(&p, "web", 0, 5),
            exited(&p, "side", 0, 0, ExitReason::Completed),
        ];
        let desired: BTreeSet<String> = ["u-1".to_string()].into();
        assert!(leftover_pods(&desired, &c).is_empty(), "still desired");

        let left = leftover_pods(&BTreeSet::new(), &c);
        assert_eq!(left.len(), 1);
        let l = &left[0];
        assert_eq!(
            (
                l.metadata.namespace.as_deref(),
                l.metadata.name.as_str(),
                l.metadata.uid.as_deref()
            ),
            (Some("default"), "web-abc", Some("u-1"))
        );
        let names: Vec<&str> = l.spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["web", "side"]);
        let s = status(l, &c, &[], None);
        assert_eq!(
            s.phase.as_deref(),
            Some("Running"),
            "a container still runs"
        );
        assert!(s.container_statuses.iter().all(|cs| !cs.ready));
        assert!(s.container_statuses[0].state.running.is_some());
        assert!(s.container_statuses[1].state.terminated.is_some());
        assert_eq!(cond(&s, "Ready").status, "False");

        // All exited: no longer running.
        let c = [exited(&p, "web", 0, 143, ExitReason::Error)];
        let left = leftover_pods(&BTreeSet::new(), &c);
        let s = status(&left[0], &c, &[], None);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert!(leftover_pods(&BTreeSet::new(), &[]).is_empty());
    }

    #[test]
    fn init_containers_keep_the_pod_pending_and_a_failed_one_fails_a_never_pod() {
        let mut p = pod("Never", &["web"]);
        let mut init = p.spec.containers[0].clone();
        init.name = "setup".into();
        p.spec.init_containers.push(init);
        let waiting = [("web", Waiting::Initializing)];
        let s = status(&p, &[running(&p, "setup", 0, 1)], &waiting, None);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "Initialized").status, "False");
        assert_eq!(
            cond(&s, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [setup]")
        );
        let web = &s.container_statuses[0];
        assert_eq!(
            web.state.waiting.as_ref().unwrap().reason.as_deref(),
            Some("PodInitializing")
        );
        assert!(s.init_container_statuses[0].state.running.is_some());

        let failed = exited(&p, "setup", 0, 2, ExitReason::Error);
        let s = status(&p, &[failed], &waiting, None);
        assert_eq!(s.phase.as_deref(), Some("Failed"));

        let ok = exited(&p, "setup", 0, 0, ExitReason::Completed);
        let s = status(&p, &[ok, running(&p, "web", 0, 3)], &[], None);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert!(s.init_container_statuses[0].ready);
    }
}
