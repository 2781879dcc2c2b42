//! The fake runtime of one simulated node: the Pods it was told to run and how far each
//! got. A desired Pod is `Pending` with its containers `ContainerCreating` until its
//! simulated start is done, then `Running` and Ready; a Pod that leaves the desired set
//! is gone at once (as if its containers were stopped), so the agent's next report no
//! longer lists it. Pure: time is passed in.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use punnet_api::wire::{ContainerUsage, PodReport};
use punnet_api::{
    phase, ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus, Pod,
    PodCondition, PodIp, PodStatus, Time,
};

#[derive(Debug, Clone)]
struct SimPod {
    namespace: String,
    name: String,
    containers: Vec<(String, String)>,
    host_network: bool,
    /// When it becomes Running.
    ready_at: Instant,
    /// Set once Running: the start time it reports.
    started: Option<Time>,
    /// Its address in the node's Pod CIDR (`None` on the host network or before a CIDR).
    ip: Option<String>,
}

#[derive(Debug, Default)]
pub struct SimPods {
    /// By uid: a Pod deleted and recreated under the same name is a new one.
    pods: BTreeMap<String, SimPod>,
    /// Next Pod address offset in the CIDR (`.2` upwards; `.1` is the bridge).
    next_ip: u32,
}

/// The `n`th host address of `cidr` (`10.42.3.0/24`, 0 → `10.42.3.2`), if it fits.
fn address_in(cidr: &str, n: u32) -> Option<String> {
    let (base, bits) = cidr.split_once('/')?;
    let base: Ipv4Addr = base.parse().ok()?;
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 30)?;
    let size = 1u32 << (32 - bits);
    let offset = n % (size - 3) + 2;
    Some(Ipv4Addr::from(u32::from(base) + offset).to_string())
}

impl SimPods {
    /// Follows a new desired set: new Pods start (done after `start_delay`), Pods no
    /// longer desired stop. Returns whether the set of Pods changed.
    pub fn set_desired(
        &mut self,
        desired: &[Pod],
        pod_cidr: Option<&str>,
        now: Instant,
        start_delay: Duration,
    ) -> bool {
        let before = self.pods.len();
        let wanted: BTreeMap<&str, &Pod> = desired
            .iter()
            .filter_map(|p| Some((p.metadata.uid.as_deref()?, p)))
            .collect();
        self.pods.retain(|uid, _| wanted.contains_key(uid.as_str()));
        let kept = self.pods.len();
        for (uid, pod) in wanted {
            if self.pods.contains_key(uid) {
                continue;
            }
            let host_network = pod.spec.host_network.unwrap_or(false);
            let ip = if host_network {
                None
            } else {
                pod_cidr.and_then(|c| address_in(c, self.next_ip))
            };
            self.next_ip += 1;
            self.pods.insert(
                uid.to_string(),
                SimPod {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone(),
                    containers: pod
                        .spec
                        .containers
                        .iter()
                        .map(|c| (c.name.clone(), c.image.clone()))
                        .collect(),
                    host_network,
                    ready_at: now + start_delay,
                    started: None,
                    ip,
                },
            );
        }
        kept != before || self.pods.len() != kept
    }

    /// Starts every Pod whose start is done by `now`. Returns how many did.
    pub fn advance(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for p in self.pods.values_mut() {
            if p.started.is_none() && p.ready_at <= now {
                p.started = Some(Time::now());
                n += 1;
            }
        }
        n
    }

    /// When the next Pod finishes starting.
    pub fn next_start(&self) -> Option<Instant> {
        self.pods
            .values()
            .filter(|p| p.started.is_none())
            .map(|p| p.ready_at)
            .min()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn running(&self) -> usize {
        self.pods.values().filter(|p| p.started.is_some()).count()
    }

    /// One report entry per Pod, as the agent sends them.
    pub fn reports(&self, host_ip: &str) -> Vec<PodReport> {
        self.pods
            .iter()
            .map(|(uid, p)| PodReport {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: uid.clone(),
                status: status_of(p, host_ip),
                usage: match p.started {
                    Some(_) => p
                        .containers
                        .iter()
                        .map(|(name, _)| ContainerUsage {
                            container: name.clone(),
                            cpu_millis: 3,
                            memory_bytes: 6 << 20,
                        })
                        .collect(),
                    None => Vec::new(),
                },
            })
            .collect()
    }
}

fn condition(type_: &str, ok: bool, since: Option<Time>) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: (!ok && type_ != "Initialized").then(|| "ContainersNotReady".into()),
        message: None,
        last_transition_time: since,
    }
}

fn status_of(p: &SimPod, host_ip: &str) -> PodStatus {
    let running = p.started.is_some();
    let ip = if p.host_network {
        Some(host_ip.to_string())
    } else {
        p.ip.clone()
    };
    PodStatus {
        phase: Some(
            if running {
                phase::RUNNING
            } else {
                phase::PENDING
            }
            .into(),
        ),
        conditions: vec![
            condition("Initialized", true, None),
            condition("Ready", running, p.started),
            condition("ContainersReady", running, p.started),
        ],
        message: None,
        reason: None,
        host_ip: Some(host_ip.to_string()),
        pod_ips: ip.iter().map(|ip| PodIp { ip: ip.clone() }).collect(),
        pod_ip: ip,
        start_time: p.started,
        init_container_statuses: Vec::new(),
        container_statuses: p
            .containers
            .iter()
            .enumerate()
            .map(|(i, (name, image))| ContainerStatus {
                name: name.clone(),
                state: match p.started {
                    Some(at) => ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(at),
                        }),
                        ..Default::default()
                    },
                    None => ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ContainerCreating".into()),
                            message: None,
                        }),
                        ..Default::default()
                    },
                },
                last_state: ContainerState::default(),
                ready: running,
                restart_count: 0,
                image: image.clone(),
                image_id: String::new(),
                container_id: running.then(|| format!("punnet://{}-{i}", p.name)),
                started: Some(running),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(uid.into());
        p.spec.containers.push(punnet_api::Container {
            name: "app".into(),
            image: "busybox:1.36".into(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn pods_go_from_container_creating_to_running_and_ready() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(1);
        let mut s = SimPods::default();
        assert!(s.set_desired(&[pod("a", "u1")], Some("10.42.3.0/24"), t0, delay));
        let r = &s.reports("10.0.0.5")[0];
        assert_eq!(r.status.phase.as_deref(), Some("Pending"));
        let waiting = r.status.container_statuses[0]
            .state
            .waiting
            .as_ref()
            .unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(s.next_start(), Some(t0 + delay));
        assert_eq!(s.advance(t0 + Duration::from_millis(500)), 0);
        assert_eq!(s.advance(t0 + delay), 1);
        let r = &s.reports("10.0.0.5")[0];
        assert_eq!(r.status.phase.as_deref(), Some("Running"));
        assert_eq!(r.status.pod_ip.as_deref(), Some("10.42.3.2"));
        assert!(r.status.conditions.iter().all(|c| c.status == "True"));
        assert!(r.status.container_statuses[0].ready);
        assert_eq!(s.running(), 1);
        assert_eq!(s.next_start(), None);
    }

    #[test]
    fn deleted_pods_go_and_recreated_ones_start_again() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(10);
        let mut s = SimPods::default();
        s.set_desired(&[pod("a", "u1"), pod("b", "u2")], None, t0, delay);
        s.advance(t0 + delay);
        assert!(!s.set_desired(&[pod("a", "u1"), pod("b", "u2")], None, t0, delay));
        // b deleted, a recreated under the same name.
        assert!(s.set_desired(&[pod("a", "u3")], None, t0 + delay, delay));
        let reports = s.reports("h");
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].uid, "u3");
        assert_eq!(reports[0].status.phase.as_deref(), Some("Pending"));
        assert_eq!(reports[0].status.pod_ip, None, "no CIDR yet");
    }

    #[test]
    fn addresses_stay_in_the_cidr() {
        assert_eq!(address_in("10.42.3.0/24", 0).as_deref(), Some("10.42.3.2"));
        assert_eq!(
            address_in("10.42.3.0/24", 252).as_deref(),
            Some("10.42.3.254")
        );
        assert_eq!(
            address_in("10.42.3.0/24", 253).as_deref(),
            Some("10.42.3.2")
        );
        assert_eq!(address_in("garbage", 0), None);
    }
}
