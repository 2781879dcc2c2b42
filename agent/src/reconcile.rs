//! Step 10 of a Pod's flow: the diff between the desired Pods and what the runtime
//! reports, as a list of actions. Pure and level-triggered: the same inputs give the
//! same plan, so it is safe to run on every change and on a timer. Everything it needs
//! to survive an agent restart (restart counts, the time of the last exit) comes from the
//! runtime's own list, not from memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use punnet_api::pod::{Container, Pod, RestartPolicy};

pub use crate::podspec::{
    container_config, container_id, log_path, pod_dir, pod_uid, HostPathCheck, HostPathType,
    PodContext, Prepare,
};
use crate::runtime::{ContainerConfig, ContainerInfo, ContainerState, ExitReason};

/// How soon a Pod waiting for its network is looked at again.
const NETWORK_WAIT: Duration = Duration::from_secs(1);

/// One container of one Pod, across all its runs (restarts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerKey {
    pub pod_uid: String,
    pub container: String,
}

impl ContainerKey {
    pub fn new(pod_uid: &str, container: &str) -> ContainerKey {
        ContainerKey {
            pod_uid: pod_uid.to_string(),
            container: container.to_string(),
        }
    }

    pub fn of(config: &ContainerConfig) -> ContainerKey {
        ContainerKey::new(&config.pod_uid, &config.container_name)
    }
}

/// Restart delays of crashing containers: `base`, doubling per quick crash up to `max`;
/// a run that lasted `reset` or longer starts a new streak at `base`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max: Duration,
    pub reset: Duration,
}

impl BackoffPolicy {
    /// The delay before the restart that follows the `streak`-th quick exit (0-based).
    pub fn delay(&self, streak: u32) -> Duration {
        let factor = 1u32.checked_shl(streak.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// A start that failed before any container existed (missing image, bad volume, ...).
/// Kept by the agent in memory; the reconciler waits for `retry_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct StartFailure {
    /// Kubernetes' waiting reason: `ErrImageNeverPull`, `CreateContainerConfigError`, `RunContainerError`.
    pub reason: String,
    pub message: String,
    pub retry_at: SystemTime,
    /// Consecutive failures, for the retry back-off.
    pub attempts: u32,
}

/// Why a desired container does not run at the moment (shown as `state.waiting`).
#[derive(Debug, Clone, PartialEq)]
pub enum Waiting {
    /// Being started in this round, as run number `restart` (its restart count).
    Starting { restart: u32 },
    /// Exited, restarts once `until` has passed.
    BackOff { delay: Duration, until: SystemTime },
    /// The last start failed, or its configuration is invalid.
    Failed { reason: String, message: String },
    /// Waits for the Pod's init containers (or an earlier one of them) to complete.
    Initializing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StartContainer {
    pub key: ContainerKey,
    /// `namespace/name`, for log lines and errors.
    pub pod: String,
    pub config: ContainerConfig,
    /// Host-side work (volumes) before the container starts.
    pub prepare: Vec<Prepare>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Start(Box<StartContainer>),
    /// SIGTERM, then SIGKILL after the container's own grace period.
    Stop {
        id: String,
    },
    Remove {
        id: String,
    },
    /// The log file of a removed older run of a container that is still desired.
    RemoveLog {
        path: PathBuf,
    },
    /// The log directory of a Pod that is gone.
    RemovePodDir {
        dir: PathBuf,
    },
}

pub struct Input<'a> {
    pub pods: &'a [Pod],
    pub containers: &'a [ContainerInfo],
    pub now: SystemTime,
    pub backoff: BackoffPolicy,
    /// Per container: the restart count at which its current crash streak began.
    pub streaks: &'a BTreeMap<ContainerKey, u32>,
    pub failures: &'a BTreeMap<ContainerKey, StartFailure>,
    /// Containers already asked to stop; not asked again.
    pub stopping: &'a BTreeSet<String>,
    /// Directory names under `<data-dir>/pods`.
    pub pod_dirs: &'a [String],
    pub data_dir: &'a Path,
    pub sources: Sources<'a>,
}

/// What Pods draw on besides their spec (see `PodContext`), for all desired Pods.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    pub config_maps: &'a [punnet_api::ConfigMap],
    pub secrets: &'a [punnet_api::Secret],
    pub host_ip: Option<&'a str>,
    /// Pods without hostNetwork need a network of their own before they start.
    pub pod_network: bool,
    /// Pod uid → its network (CNI), once set up.
    pub networks: Option<&'a BTreeMap<String, PodNet>>,
    /// Pod uid → why its network setup failed.
    pub network_errors: Option<&'a BTreeMap<String, String>>,
    /// Running containers whose liveness or startup probe failed: stopped, then
    /// restarted under the Pod's restart policy.
    pub unhealthy: Option<&'a BTreeSet<String>>,
    /// Pod uid → why it was evicted: its containers are stopped and not started again.
    pub evicted: Option<&'a BTreeMap<String, String>>,
}

/// A Pod's network as the reconciler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    pub ip: String,
    pub netns: PathBuf,
}

impl<'a> Sources<'a> {
    /// `Some(message)` when the Pod must wait for its network.
    fn network_missing(&self, pod: &Pod, uid: &str) -> Option<String> {
        if !self.pod_network
            || pod.spec.host_network == Some(true)
            || self.networks.is_some_and(|n| n.contains_key(uid))
        {
            return None;
        }
        Some(match self.network_errors.and_then(|e| e.get(uid)) {
            Some(e) => format!("failed to set up the Pod network: {e}"),
            None => "setting up the Pod network".to_string(),
        })
    }

    pub fn context(&self, data_dir: &'a Path, uid: &str) -> PodContext<'a> {
        let net = self.networks.and_then(|n| n.get(uid));
        PodContext {
            data_dir,
            config_maps: self.config_maps,
            secrets: self.secrets,
            pod_ip: net.map(|n| n.ip.as_str()).or(self.host_ip),
            host_ip: self.host_ip,
            netns: net.map(|n| n.netns.as_path()),
            seccomp_dir: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub waiting: BTreeMap<ContainerKey, Waiting>,
    /// The streak table to keep (only containers that still matter).
    pub streaks: BTreeMap<ContainerKey, u32>,
    /// When a back-off or a retry ends: reconcile again by then.
    pub requeue_after: Option<Duration>,
}

impl Plan {
    fn requeue(&mut self, after: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(after, |d| d.min(after)));
    }
}

/// The runs of one container, oldest restart first.
pub fn runs_of<'a>(
    containers: &'a [ContainerInfo],
    pod_uid: &str,
    name: &str,
) -> Vec<&'a ContainerInfo> {
    let mut runs: Vec<_> = containers
        .iter()
        .filter(|c| c.config.pod_uid == pod_uid && c.config.container_name == name)
        .collect();
    runs.sort_by_key(|c| c.config.restart_count);
    runs
}

/// Whether an exited container runs again under the Pod's restart policy.
pub fn should_restart(policy: RestartPolicy, exit_code: i32, reason: ExitReason) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !(exit_code == 0 && reason == ExitReason::Completed),
        RestartPolicy::Never => false,
    }
}

fn is_running(c: &ContainerInfo) -> bool {
    matches!(c.state, ContainerState::Running { .. })
}

/// The diff. See the module comment; the rules are Kubernetes' kubelet rules.
pub fn reconcile(input: &Input) -> Plan {
    let mut plan = Plan::default();
    let mut desired_keys = BTreeSet::new();
    let mut desired_uids = BTreeSet::new();

    for pod in input.pods {
        let uid = pod_uid(pod);
        desired_uids.insert(uid.clone());
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if input.sources.evicted.is_some_and(|e| e.contains_key(&uid)) {
            // Kept (so its logs and last states stay), never started again.
            for spec in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
                desired_keys.insert(ContainerKey::new(&uid, &spec.name));
                for c in runs_of(input.containers, &uid, &spec.name) {
                    if is_running(c) && !input.stopping.contains(&c.config.id) {
                        plan.actions.push(Action::Stop {
                            id: c.config.id.clone(),
                        });
                    }
                }
            }
            continue;
        }
        // Init containers run one at a time, in order; each must complete before the
        // next starts, and all before the app containers.
        let mut initialized = true;
        for spec in &pod.spec.init_containers {
            let key = ContainerKey::new(&uid, &spec.name);
            desired_keys.insert(key.clone());
            if !initialized {
                plan.waiting.insert(key, Waiting::Initializing);
                continue;
            }
            let runs = runs_of(input.containers, &uid, &spec.name);
            let done = init_completed(&runs);
            let policy = init_restart_policy(pod.spec.restart_policy());
            plan_container(input, &mut plan, pod, spec, key, &runs, terminating, policy);
            initialized = done;
        }
        for spec in &pod.spec.containers {
            let key = ContainerKey::new(&uid, &spec.name);
            desired_keys.insert(key.clone());
            let runs = runs_of(input.containers, &uid, &spec.name);
            if !initialized && runs.is_empty() {
                plan.waiting.insert(key, Waiting::Initializing);
                continue;
            }
            let policy = pod.spec.restart_policy();
            plan_container(input, &mut plan, pod, spec, key, &runs, terminating, policy);
        }
    }

    // Containers nobody wants any more: stop, then remove once exited.
    for c in input.containers {
        if desired_keys.contains(&ContainerKey::of(&c.config)) {
            continue;
        }
        if is_running(c) {
            if !input.stopping.contains(&c.config.id) {
                plan.actions.push(Action::Stop {
                    id: c.config.id.clone(),
                });
            }
        } else {
            plan.actions.push(Action::Remove {
                id: c.config.id.clone(),
            });
        }
    }

    // Log directories of Pods that are gone and whose containers are all removed.
    for name in input.pod_dirs {
        let Some((_, uid)) = name.rsplit_once('_') else {
            continue;
        };
        let has_containers = input.containers.iter().any(|c| c.config.pod_uid == uid);
        if !desired_uids.contains(uid) && !has_containers {
            plan.actions.push(Action::RemovePodDir {
                dir: input.data_dir.join("pods").join(name),
            });
        }
    }
    plan
}

/// Whether an init container's newest run completed (exit 0).
pub fn init_completed(runs: &[&ContainerInfo]) -> bool {
    runs.last().is_some_and(|c| {
        matches!(
            c.state,
            ContainerState::Exited {
                exit_code: 0,
                reason: ExitReason::Completed,
                ..
            }
        )
    })
}

/// Init containers restart on failure unless the Pod never restarts anything; a
/// completed one never runs again.
pub fn init_restart_policy(pod_policy: RestartPolicy) -> RestartPolicy {
    match pod_policy {
        RestartPolicy::Never => RestartPolicy::Never,
        _ => RestartPolicy::OnFailure,
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_container(
    input: &Input,
    plan: &mut Plan,
    pod: &Pod,
    spec: &Container,
    key: ContainerKey,
    runs: &[&ContainerInfo],
    terminating: bool,
    policy: RestartPolicy,
) {
    let running: Vec<_> = runs.iter().filter(|c| is_running(c)).collect();
    let newest_running = running.last().map(|c| c.config.restart_count);
    if let Some(c) = running.last() {
        let failed = input
            .sources
            .unhealthy
            .is_some_and(|u| u.contains(&c.config.id));
        if failed && !terminating && !input.stopping.contains(&c.config.id) {
            plan.actions.push(Action::Stop {
                id: c.config.id.clone(),
            });
        }
    }
    // Never two copies: only the newest running one is kept.
    for c in running.iter().rev().skip(usize::from(!terminating)) {
        if !input.stopping.contains(&c.config.id) {
            plan.actions.push(Action::Stop {
                id: c.config.id.clone(),
            });
        }
    }
    // Of the exited runs, only the newest is kept (it is the status' `lastState`).
    let exited: Vec<_> = runs
        .iter()
        .filter(|c| !is_running(c))
        .filter(|c| newest_running.is_none_or(|r| c.config.restart_count < r))
        .collect();
    for c in runs.iter().filter(|c| !is_running(c)) {
        let keep = exited.last().is_some_and(|e| e.config.id == c.config.id);
        if !keep {
            plan.actions.push(Action::Remove {
                id: c.config.id.clone(),
            });
            // A crash-looping container would otherwise leave one log file per run.
            plan.actions.push(Action::RemoveLog {
                path: c.config.log_path.clone(),
            });
        }
    }
    if newest_running.is_some() || terminating {
        if let Some(s) = input.streaks.get(&key) {
            plan.streaks.insert(key, *s);
        }
        return;
    }

    let next_restart = runs
        .iter()
        .map(|c| c.config.restart_count + 1)
        .max()
        .unwrap_or(0);
    if let Some(last) = exited.last() {
        let ContainerState::Exited {
            exit_code,
            reason,
            started_at,
            finished_at,
        } = last.state
        else {
            unreachable!("exited runs are filtered above")
        };
        if !should_restart(policy, exit_code, reason) {
            return;
        }
        let restart = last.config.restart_count;
        let ran_long = started_at.is_some_and(|s| {
            finished_at
                .duration_since(s)
                .is_ok_and(|d| d >= input.backoff.reset)
        });
        let streak_start = if ran_long {
            restart
        } else {
            input.streaks.get(&key).copied().unwrap_or(0).min(restart)
        };
        plan.streaks.insert(key.clone(), streak_start);
        let delay = input.backoff.delay(restart - streak_start);
        let until = finished_at + delay;
        if input.now < until {
            let left = until.duration_since(input.now).unwrap_or_default();
            plan.requeue(left);
            plan.waiting.insert(key, Waiting::BackOff { delay, until });
            return;
        }
    }
    if let Some(f) = input.failures.get(&key) {
        if input.now < f.retry_at {
            plan.requeue(f.retry_at.duration_since(input.now).unwrap_or_default());
            plan.waiting.insert(
                key,
                Waiting::Failed {
                    reason: f.reason.clone(),
                    message: f.message.clone(),
                },
            );
            return;
        }
    }
    if let Some(message) = input.sources.network_missing(pod, &key.pod_uid) {
        plan.requeue(NETWORK_WAIT);
        plan.waiting.insert(
            key,
            Waiting::Failed {
                reason: "ContainerCreating".to_string(),
                message,
            },
        );
        return;
    }
    let ctx = input.sources.context(input.data_dir, &key.pod_uid);
    match container_config(&ctx, pod, spec, next_restart) {
        Ok((config, prepare)) => {
            plan.waiting.insert(
                key.clone(),
                Waiting::Starting {
                    restart: next_restart,
                },
            );
            plan.actions.push(Action::Start(Box::new(StartContainer {
                key,
                pod: pod.metadata.key(),
                config,
                prepare,
            })));
        }
        Err(message) => {
            plan.waiting.insert(
                key,
                Waiting::Failed {
                    reason: "CreateContainerConfigError".to_string(),
                    message,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::manifest::parse;
    use punnet_api::object::Object;

    const BASE: Duration = Duration::from_secs(10);

    fn pod(policy: &str) -> Pod {
        let text = format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web-abc, namespace: default, uid: u-1}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 5
  volumes: [{{name: data, hostPath: {{path: /srv/data, type: DirectoryOrCreate}}}}]
  containers:
  - name: web
    image: busybox:1.36
    command: [sh, -c]
    args: ["echo hi; sleep 100"]
    env: [{{name: A, value: "1"}}]
    workingDir: /data
    resources: {{limits: {{memory: 64Mi, cpu: 250m}}}}
    volumeMounts: [{{name: data, mountPath: /data, readOnly: true}}]
"#
        );
        match parse(&text).unwrap().remove(0) {
            Object::Pod(p) => p,
            _ => unreachable!(),
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn run(p: &Pod, restart: u32, state: ContainerState) -> ContainerInfo {
        let (config, _) = container_config(
            &PodContext::bare(Path::new("/data")),
            p,
            &p.spec.containers[0],
            restart,
        )
        .unwrap();
        ContainerInfo { config, state }
    }

    fn running(p: &Pod, restart: u32, started: u64) -> ContainerInfo {
        run(
            p,
            restart,
            ContainerState::Running {
                pid: 100 + restart as i32,
                started_at: t(started),
            },
        )
    }

    fn exited(p: &Pod, restart: u32, code: i32, started: u64, finished: u64) -> ContainerInfo {
        run(
            p,
            restart,
            ContainerState::Exited {
                exit_code: code,
                reason: if code == 0 {
                    ExitReason::Completed
                } else {
                    ExitReason::Error
                },
                started_at: Some(t(started)),
                finished_at: t(finished),
            },
        )
    }

    struct World {
        pods: Vec<Pod>,
        containers: Vec<ContainerInfo>,
        streaks: BTreeMap<ContainerKey, u32>,
        failures: BTreeMap<ContainerKey, StartFailure>,
        stopping: BTreeSet<String>,
        pod_dirs: Vec<String>,
    }

    impl World {
        fn new(pods: Vec<Pod>, containers: Vec<ContainerInfo>) -> World {
            World {
                pods,
                containers,
                streaks: BTreeMap::new(),
                failures: BTreeMap::new(),
                stopping: BTreeSet::new(),
                pod_dirs: vec![],
            }
        }

        fn plan(&self, now: u64) -> Plan {
            reconcile(&Input {
                pods: &self.pods,
                containers: &self.containers,
                now: t(now),
                backoff: BackoffPolicy {
                    base: BASE,
                    max: Duration::from_secs(300),
                    reset: Duration::from_secs(600),
                },
                streaks: &self.streaks,
                failures: &self.failures,
                stopping: &self.stopping,
                pod_dirs: &self.pod_dirs,
                data_dir: Path::new("/data"),
                sources: Sources::default(),
            })
        }
    }

    fn starts(plan: &Plan) -> Vec<&ContainerConfig> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Start(s) => Some(&s.config),
                _ => None,
            })
            .collect()
    }

    fn key() -> ContainerKey {
        ContainerKey::new("u-1", "web")
    }

    #[test]
    fn starts_a_missing_container_with_its_spec() {
        let p = pod("Always");
        let plan = World::new(vec![p], vec![]).plan(0);
        let s = starts(&plan);
        assert_eq!(s.len(), 1);
        let c = s[0];
        assert_eq!(c.id, "u-1-web-0");
        assert_eq!(c.restart_count, 0);
        assert_eq!(c.image, "busybox:1.36");
        assert_eq!(c.command, vec!["sh", "-c"]);
        assert_eq!(c.args, vec!["echo hi; sleep 100"]);
        assert_eq!(c.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(c.working_dir.as_deref(), Some("/data"));
        assert_eq!(c.memory_limit_bytes, Some(64 << 20));
        assert_eq!(c.cpu_limit_millis, Some(250));
        assert_eq!(c.grace_period, Duration::from_secs(5));
        assert_eq!(
            c.log_path,
            PathBuf::from("/data/pods/default_web-abc_u-1/web/0.log")
        );
        assert_eq!(
            c.mounts,
            vec![crate::runtime::BindMount {
                host_path: "/srv/data".into(),
                container_path: "/data".into(),
                read_only: true
            }]
        );
        let Action::Start(start) = &plan.actions[0] else {
            panic!()
        };
        assert_eq!(
            start.prepare[0],
            Prepare::HostPath(HostPathCheck {
                path: "/srv/data".into(),
                type_: HostPathType::DirectoryOrCreate
            })
        );
        assert_eq!(
            plan.waiting.get(&key()),
            Some(&Waiting::Starting { restart: 0 })
        );
    }

    #[test]
    fn readopted_running_container_is_not_started_again() {
        let p = pod("Always");
        let w = World::new(vec![p.clone()], vec![running(&p, 3, 0)]);
        let plan = w.plan(100);
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert!(plan.waiting.is_empty());
    }

    #[test]
    fn duplicate_running_copies_are_stopped_keeping_the_newest() {
        let p = pod("Always");
        let w = World::new(vec![p.clone()], vec![running(&p, 1, 0), running(&p, 2, 5)]);
        let plan = w.plan(100);
        assert_eq!(
            plan.actions,
            vec![Action::Stop {
                id: "u-1-web-1".into()
            }]
        );
    }

    #[test]
    fn crash_restarts_after_exponential_backoff_with_count_recovered() {
        let p = pod("Always");
        // First exit: 10 s back-off.
        let w = World::new(vec![p.clone()], vec![exited(&p, 0, 1, 0, 5)]);
        let plan = w.plan(10);
        assert!(starts(&plan).is_empty());
        assert_eq!(
            plan.waiting.get(&key()),
            Some(&Waiting::BackOff {
                delay: BASE,
                until: t(15)
            })
        );
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(5)));
        let plan = w.plan(15);
        assert_eq!(starts(&plan)[0].restart_count, 1);
        assert_eq!(starts(&plan)[0].id, "u-1-web-1");

        // Third exit in a row (restart 2): 40 s, counted from the exit time.
        let mut w = World::new(
            vec![p.clone()],
            vec![exited(&p, 1, 1, 20, 21), exited(&p, 2, 1, 30, 31)],
        );
        let plan = w.plan(40);
        assert!(starts(&plan).is_empty());
        assert_eq!(
            plan.actions,
            vec![
                Action::Remove {
                    id: "u-1-web-1".into()
                },
                Action::RemoveLog {
                    path: "/data/pods/default_web-abc_u-1/web/1.log".into()
                }
            ]
        );
        assert!(matches!(
            plan.waiting.get(&key()),
            Some(Waiting::BackOff { delay, .. }) if *delay == Duration::from_secs(40)
        ));
        assert_eq!(starts(&w.plan(71))[0].restart_count, 3);

        // Capped at 5 min.
        w.containers = vec![exited(&p, 9, 1, 0, 1)];
        assert!(matches!(
            w.plan(2).waiting.get(&key()),
            Some(Waiting::BackOff { delay, .. }) if *delay == Duration::from_secs(300)
        ));
    }

    #[test]
    fn long_run_resets_the_backoff_streak() {
        let p = pod("Always");
        let mut w = World::new(vec![p.clone()], vec![exited(&p, 6, 1, 0, 700)]);
        let plan = w.plan(701);
        assert!(matches!(
            plan.waiting.get(&key()),
            Some(Waiting::BackOff { delay, .. }) if *delay == BASE
        ));
        assert_eq!(plan.streaks.get(&key()), Some(&6));
        // The next quick crash continues the new streak: 20 s, not 5 min.
        w.streaks = plan.streaks;
        w.containers = vec![exited(&p, 7, 1, 720, 721)];
        assert!(matches!(
            w.plan(722).waiting.get(&key()),
            Some(Waiting::BackOff { delay, .. }) if *delay == Duration::from_secs(20)
        ));
    }

    #[test]
    fn restart_policies() {
        for (policy, code, restarts) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 2, true),
            ("Never", 0, false),
            ("Never", 1, false),
        ] {
            let p = pod(policy);
            let w = World::new(vec![p.clone()], vec![exited(&p, 0, code, 0, 1)]);
            let plan = w.plan(1000);
            assert_eq!(
                starts(&plan).len(),
                usize::from(restarts),
                "{policy} exit {code}"
            );
            assert!(plan.actions.iter().all(|a| matches!(a, Action::Start(_))));
        }
    }

    #[test]
    fn running_container_keeps_only_the_newest_exited_run() {
        let p = pod("Always");
        let w = World::new(
            vec![p.clone()],
            vec![
                exited(&p, 0, 1, 0, 1),
                exited(&p, 1, 1, 2, 3),
                running(&p, 2, 20),
            ],
        );
        assert_eq!(
            w.plan(30).actions,
            vec![
                Action::Remove {
                    id: "u-1-web-0".into()
                },
                Action::RemoveLog {
                    path: "/data/pods/default_web-abc_u-1/web/0.log".into()
                }
            ]
        );
    }

    #[test]
    fn undesired_pods_are_stopped_removed_and_their_logs_deleted() {
        let p = pod("Always");
        let mut w = World::new(vec![], vec![running(&p, 0, 0)]);
        w.pod_dirs = vec!["default_web-abc_u-1".into(), "default_old_u-0".into()];
        let plan = w.plan(10);
        assert_eq!(
            plan.actions,
            vec![
                Action::Stop {
                    id: "u-1-web-0".into()
                },
                Action::RemovePodDir {
                    dir: "/data/pods/default_old_u-0".into()
                }
            ]
        );
        // Asked once; not again while it stops.
        w.stopping.insert("u-1-web-0".into());
        assert_eq!(w.plan(11).actions.len(), 1);
        w.containers = vec![exited(&p, 0, 143, 0, 12)];
        w.pod_dirs.pop();
        assert_eq!(
            w.plan(13).actions,
            vec![Action::Remove {
                id: "u-1-web-0".into()
            }]
        );
        w.containers.clear();
        assert_eq!(
            w.plan(14).actions,
            vec![Action::RemovePodDir {
                dir: "/data/pods/default_web-abc_u-1".into()
            }]
        );
    }

    #[test]
    fn start_failures_wait_for_their_retry_time() {
        let p = pod("Always");
        let mut w = World::new(vec![p], vec![]);
        w.failures.insert(
            key(),
            StartFailure {
                reason: "ErrImageNeverPull".into(),
                message: "image \"busybox:1.36\" is not present".into(),
                retry_at: t(5),
                attempts: 1,
            },
        );
        let plan = w.plan(1);
        assert!(plan.actions.is_empty());
        assert!(
            matches!(plan.waiting.get(&key()), Some(Waiting::Failed { reason, .. }) if reason == "ErrImageNeverPull")
        );
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(4)));
        assert_eq!(starts(&w.plan(5)).len(), 1);
    }

    #[test]
    fn invalid_spec_is_a_config_error_not_a_start() {
        let mut p = pod("Always");
        p.spec.containers[0]
            .resources
            .limits
            .insert("memory".into(), "lots".into());
        let plan = World::new(vec![p], vec![]).plan(0);
        assert!(plan.actions.is_empty());
        assert!(matches!(plan.waiting.get(&key()),
            Some(Waiting::Failed { reason, message }) if reason == "CreateContainerConfigError" && message.contains("memory")));
    }

    #[test]
    fn terminating_pod_is_stopped_not_restarted() {
        let mut p = pod("Always");
        p.metadata.deletion_timestamp = Some(punnet_api::Time::now());
        let w = World::new(vec![p.clone()], vec![running(&p, 0, 0)]);
        assert_eq!(
            w.plan(1).actions,
            vec![Action::Stop {
                id: "u-1-web-0".into()
            }]
        );
        let w = World::new(vec![p.clone()], vec![exited(&p, 0, 143, 0, 1)]);
        assert!(w.plan(100).actions.is_empty());
    }

    #[test]
    fn container_ids_are_short_and_safe() {
        assert_eq!(container_id("u-1", "web", 0), "u-1-web-0");
        let long = container_id(
            "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            "a-very-long-container-name-that-goes-on-and-on-and-on",
            12345,
        );
        assert!(long.len() <= 64, "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_ne!(
            long,
            container_id(
                "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
                "a-very-long-container-name-that-goes-on-and-on-and-on",
                12346
            )
        );
        assert_eq!(container_id("U_1", "Web", 0).len(), 16 + 1 + 3 + 2);
    }

    fn with_init(policy: &str) -> Pod {
        let mut p = pod(policy);
        for name in ["migrate", "seed"] {
            let mut c = p.spec.containers[0].clone();
            c.name = name.into();
            c.volume_mounts.clear();
            p.spec.init_containers.push(c);
        }
        p
    }

    fn init_run(p: &Pod, index: usize, restart: u32, state: ContainerState) -> ContainerInfo {
        let (config, _) = container_config(
            &PodContext::bare(Path::new("/data")),
            p,
            &p.spec.init_containers[index],
            restart,
        )
        .unwrap();
        ContainerInfo { config, state }
    }

    fn done(code: i32) -> ContainerState {
        ContainerState::Exited {
            exit_code: code,
            reason: if code == 0 {
                ExitReason::Completed
            } else {
                ExitReason::Error
            },
            started_at: Some(t(1)),
            finished_at: t(2),
        }
    }

    #[test]
    fn init_containers_run_one_at_a_time_before_the_app() {
        let p = with_init("Always");
        let plan = World::new(vec![p.clone()], vec![]).plan(10);
        let names: Vec<_> = starts(&plan)
            .iter()
            .map(|c| c.container_name.clone())
            .collect();
        assert_eq!(names, vec!["migrate"]);
        assert_eq!(plan.waiting.get(&key()), Some(&Waiting::Initializing));
        assert_eq!(
            plan.waiting.get(&ContainerKey::new("u-1", "seed")),
            Some(&Waiting::Initializing)
        );

        // The first one completed: the second starts, the app still waits.
        let first = init_run(&p, 0, 0, done(0));
        let plan = World::new(vec![p.clone()], vec![first.clone()]).plan(10);
        let names: Vec<_> = starts(&plan)
            .iter()
            .map(|c| c.container_name.clone())
            .collect();
        assert_eq!(names, vec!["seed"]);

        // Both completed: the app starts, and the init containers are not run again.
        let second = init_run(&p, 1, 0, done(0));
        let plan = World::new(vec![p.clone()], vec![first.clone(), second]).plan(10);
        let names: Vec<_> = starts(&plan)
            .iter()
            .map(|c| c.container_name.clone())
            .collect();
        assert_eq!(names, vec!["web"]);
    }

    #[test]
    fn a_failed_init_container_restarts_with_back_off_unless_the_pod_never_restarts() {
        let p = with_init("Always");
        let failed = init_run(&p, 0, 0, done(1));
        let plan = World::new(vec![p.clone()], vec![failed.clone()]).plan(5);
        assert!(starts(&plan).is_empty(), "backing off");
        assert!(matches!(
            plan.waiting.get(&ContainerKey::new("u-1", "migrate")),
            Some(Waiting::BackOff { .. })
        ));
        let plan = World::new(vec![p.clone()], vec![failed]).plan(100);
        let s = starts(&plan);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].container_name.as_str(), s[0].restart_count),
            ("migrate", 1)
        );

        let never = with_init("Never");
        let failed = init_run(&never, 0, 0, done(1));
        let plan = World::new(vec![never], vec![failed]).plan(100);
        assert!(starts(&plan).is_empty());
        assert_eq!(plan.waiting.get(&key()), Some(&Waiting::Initializing));
    }
}
