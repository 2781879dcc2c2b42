//! The Kubernetes Events the agent reports (Pulling, Pulled, Created, Started, Killing,
//! BackOff, Unhealthy, Failed, FailedMount, Evicted): most are read off the change of a
//! Pod's status between two rounds (pure, `from_status_change`), the rest are noted
//! where they happen (stops, probe failures). They wait in a small buffer, repeats
//! folded, and go out with the next status report.

use punnet_api::wire::{AgentEvent, MAX_REPORT_EVENTS};
use punnet_api::{ContainerStatus, PodStatus};

/// The Pod an event is about.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl PodRef<'_> {
    pub fn event(
        &self,
        container: Option<&str>,
        warning: bool,
        reason: &str,
        message: String,
    ) -> AgentEvent {
        AgentEvent {
            namespace: self.namespace.to_string(),
            pod: self.name.to_string(),
            uid: self.uid.to_string(),
            container: container.map(str::to_string),
            warning,
            reason: reason.to_string(),
            message,
            count: 1,
        }
    }
}

/// Events waiting for the next status report.
#[derive(Debug, Default)]
pub struct EventBuffer {
    pending: Vec<AgentEvent>,
}

impl EventBuffer {
    /// Adds one; the same event again only bumps its count. Beyond the cap the oldest
    /// go: a report must stay small.
    pub fn push(&mut self, event: AgentEvent) {
        let same = |e: &AgentEvent| {
            e.uid == event.uid
                && e.container == event.container
                && e.reason == event.reason
                && e.message == event.message
                && e.warning == event.warning
        };
        if let Some(e) = self.pending.iter_mut().find(|e| same(e)) {
            e.count = e.count.saturating_add(event.count);
            return;
        }
        self.pending.push(event);
        if self.pending.len() > MAX_REPORT_EVENTS {
            let excess = self.pending.len() - MAX_REPORT_EVENTS;
            self.pending.drain(..excess);
        }
    }

    pub fn extend(&mut self, events: impl IntoIterator<Item = AgentEvent>) {
        for e in events {
            self.push(e);
        }
    }

    /// Everything since the last call, for a report.
    pub fn take(&mut self) -> Vec<AgentEvent> {
        std::mem::take(&mut self.pending)
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

fn waiting(c: &ContainerStatus) -> Option<(&str, &str)> {
    let w = c.state.waiting.as_ref()?;
    Some((
        w.reason.as_deref().unwrap_or_default(),
        w.message.as_deref().unwrap_or_default(),
    ))
}

fn is_pulling(c: Option<&ContainerStatus>) -> bool {
    c.and_then(waiting)
        .is_some_and(|(_, m)| m.starts_with("Pulling image"))
}

/// The events a Pod's status change between two rounds means, as the kubelet words them.
pub fn from_status_change(
    pod: PodRef<'_>,
    previous: Option<&PodStatus>,
    now: &PodStatus,
) -> Vec<AgentEvent> {
    let mut out = Vec::new();
    let before = |name: &str| {
        previous.and_then(|p| {
            p.init_container_statuses
                .iter()
                .chain(&p.container_statuses)
                .find(|c| c.name == name)
        })
    };
    for c in now
        .init_container_statuses
        .iter()
        .chain(&now.container_statuses)
    {
        let old = before(&c.name);
        let name = Some(c.name.as_str());
        let image = &c.image;
        if is_pulling(old)
            && !is_pulling(Some(c))
            && waiting(c).is_none_or(|(r, _)| r != "ErrImagePull")
        {
            out.push(pod.event(
                name,
                false,
                "Pulled",
                format!("Successfully pulled image {image:?}"),
            ));
        }
        if let Some(running) = &c.state.running {
            let was = old.and_then(|o| o.state.running.as_ref());
            let restarted = old.is_some_and(|o| o.restart_count != c.restart_count);
            // With no earlier status (the agent restarted) a container that has long
            // been running was adopted, not started.
            let adopted = previous.is_none()
                && running
                    .started_at
                    .is_some_and(|t| chrono::Utc::now() - t.0 > chrono::Duration::seconds(30));
            let changed =
                was.is_none() || restarted || was.map(|r| r.started_at) != Some(running.started_at);
            if changed && !adopted {
                out.push(pod.event(
                    name,
                    false,
                    "Created",
                    format!("Created container {}", c.name),
                ));
                out.push(pod.event(
                    name,
                    false,
                    "Started",
                    format!("Started container {}", c.name),
                ));
            }
        }
        let Some((reason, message)) = waiting(c) else {
            continue;
        };
        let unchanged = old
            .and_then(waiting)
            .is_some_and(|(r, m)| r == reason && (m == message || m.starts_with("Pulling image")));
        if unchanged {
            continue;
        }
        match reason {
            "ContainerCreating" if message.starts_with("Pulling image") && !is_pulling(old) => {
                out.push(pod.event(name, false, "Pulling", format!("Pulling image {image:?}")));
            }
            "CrashLoopBackOff" => out.push(pod.event(
                name,
                true,
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    c.name, pod.name, pod.namespace, pod.uid
                ),
            )),
            "ImagePullBackOff" => {
                out.push(pod.event(
                    name,
                    false,
                    "BackOff",
                    format!("Back-off pulling image {image:?}"),
                ));
                out.push(pod.event(name, true, "Failed", "Error: ImagePullBackOff".into()));
            }
            "ErrImagePull" | "ErrImageNeverPull" | "InvalidImageName" => {
                if !message.is_empty() {
                    out.push(pod.event(name, true, "Failed", message.to_string()));
                }
                out.push(pod.event(name, true, "Failed", format!("Error: {reason}")));
            }
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                let lower = message.to_ascii_lowercase();
                let mount = lower.contains("volume") || lower.contains("mount");
                let reason_out = if mount { "FailedMount" } else { "Failed" };
                let text = if mount || message.is_empty() {
                    if message.is_empty() {
                        format!("Error: {reason}")
                    } else {
                        message.to_string()
                    }
                } else {
                    format!("Error: {message}")
                };
                out.push(pod.event(name, true, reason_out, text));
            }
            _ => {}
        }
    }
    let evicted = |s: &PodStatus| s.reason.as_deref() == Some("Evicted");
    if evicted(now) && !previous.is_some_and(evicted) {
        let message = now
            .message
            .clone()
            .unwrap_or_else(|| "The Pod was evicted".into());
        out.push(pod.event(None, true, "Evicted", message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{ContainerState, ContainerStateRunning, ContainerStateWaiting, Time};

    const POD: PodRef<'static> = PodRef {
        namespace: "default",
        name: "web",
        uid: "u1",
    };

    fn status(state: ContainerState, restarts: i32) -> PodStatus {
        PodStatus {
            container_statuses: vec![ContainerStatus {
                name: "app".into(),
                image: "busybox:1.36".into(),
                state,
                restart_count: restarts,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn waiting(reason: &str, message: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some(message.into()),
            }),
            ..Default::default()
        }
    }

    fn running(at: i64) -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(chrono::DateTime::from_timestamp(at, 0).unwrap())),
            }),
            ..Default::default()
        }
    }

    fn reasons(events: &[AgentEvent]) -> Vec<&str> {
        events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn a_pod_that_pulls_then_starts() {
        let pulling = status(
            waiting("ContainerCreating", "Pulling image \"busybox:1.36\""),
            0,
        );
        let e = from_status_change(POD, None, &pulling);
        assert_eq!(reasons(&e), ["Pulling"]);
        assert_eq!(e[0].message, "Pulling image \"busybox:1.36\"");
        assert_eq!(e[0].container.as_deref(), Some("app"));
        // Progress updates of the same pull are not new events.
        let more = status(
            waiting(
                "ContainerCreating",
                "Pulling image \"busybox:1.36\": 1 MiB of 2 MiB",
            ),
            0,
        );
        assert!(from_status_change(POD, Some(&pulling), &more).is_empty());
        let up = status(running(100), 0);
        assert_eq!(
            reasons(&from_status_change(POD, Some(&more), &up)),
            ["Pulled", "Created", "Started"]
        );
        assert!(from_status_change(POD, Some(&up), &up).is_empty());
    }

    #[test]
    fn crash_loops_and_pull_failures_are_warnings() {
        let up = status(running(100), 0);
        let backoff = status(waiting("CrashLoopBackOff", "back-off 10s restarting"), 1);
        let e = from_status_change(POD, Some(&up), &backoff);
        assert_eq!(reasons(&e), ["BackOff"]);
        assert!(e[0].warning);
        assert_eq!(
            e[0].message,
            "Back-off restarting failed container app in pod web_default(u1)"
        );
        let again = status(running(200), 1);
        assert_eq!(
            reasons(&from_status_change(POD, Some(&backoff), &again)),
            ["Created", "Started"]
        );

        let failed = status(waiting("ErrImagePull", "manifest unknown"), 0);
        let e = from_status_change(POD, None, &failed);
        assert_eq!(reasons(&e), ["Failed", "Failed"]);
        assert_eq!(e[1].message, "Error: ErrImagePull");
        let mount = status(
            waiting(
                "CreateContainerConfigError",
                "volume \"data\": configmap \"x\" not found",
            ),
            0,
        );
        assert_eq!(
            reasons(&from_status_change(POD, None, &mount)),
            ["FailedMount"]
        );
    }

    #[test]
    fn evictions_and_the_buffer() {
        let mut evicted = status(running(1), 0);
        evicted.reason = Some("Evicted".into());
        evicted.message = Some("Usage of EmptyDir volume \"x\" exceeds the limit \"1Mi\".".into());
        let e = from_status_change(POD, Some(&status(running(1), 0)), &evicted);
        assert_eq!(reasons(&e), ["Evicted"]);
        assert!(from_status_change(POD, Some(&evicted), &evicted).is_empty());

        let mut buffer = EventBuffer::default();
        let kill = POD.event(
            Some("app"),
            false,
            "Killing",
            "Stopping container app".into(),
        );
        buffer.push(kill.clone());
        buffer.push(kill);
        for i in 0..MAX_REPORT_EVENTS + 5 {
            buffer.push(POD.event(None, true, "Unhealthy", format!("probe {i}")));
        }
        let taken = buffer.take();
        assert_eq!(taken.len(), MAX_REPORT_EVENTS);
        assert_eq!(
            taken.last().unwrap().message,
            format!("probe {}", MAX_REPORT_EVENTS + 4)
        );
        assert!(buffer.is_empty());
        let mut buffer = EventBuffer::default();
        let kill = POD.event(
            Some("app"),
            false,
            "Killing",
            "Stopping container app".into(),
        );
        buffer.extend([kill.clone(), kill]);
        assert_eq!(buffer.take()[0].count, 2);
    }
}
