//! `punnet describe daemonset|job`, laid out as kubectl does: the counts of the status,
//! the update strategy or the Job's limits, the Pod template and the conditions.

use punnet_api::{DaemonSet, Job, PodTemplateSpec};

use super::{containers, or_none, timestamp, volumes, Doc};
use crate::labels::selector_string;
use crate::workloads::job_duration;

fn template(d: &mut Doc, t: &PodTemplateSpec) {
    d.line(0, "Pod Template:");
    d.map(1, "Labels", &t.metadata.labels);
    if !t.spec.init_containers.is_empty() {
        d.line(1, "Init Containers:");
        containers(d, 2, &t.spec.init_containers, None);
    }
    d.line(1, "Containers:");
    containers(d, 2, &t.spec.containers, None);
    volumes(d, 1, &t.spec);
    d.map(1, "Node-Selectors", &t.spec.node_selector);
    if let Some(na) = t
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    {
        let required = na
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .map_or(0, |r| r.node_selector_terms.len());
        d.field(
            1,
            "Node-Affinity",
            format!(
                "{required} required term(s), {} preferred term(s)",
                na.preferred_during_scheduling_ignored_during_execution
                    .len()
            ),
        );
    }
}

pub fn describe_daemon_set(ds: &DaemonSet) -> String {
    let mut d = Doc::default();
    let m = &ds.metadata;
    let node_selector: Vec<String> = ds
        .spec
        .template
        .spec
        .node_selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    d.field(0, "Name", &m.name);
    d.field(0, "Namespace", m.namespace_or_default());
    d.field(
        0,
        "Selector",
        or_none(Some(&selector_string(&ds.spec.selector))),
    );
    d.field(0, "Node-Selector", or_none(Some(&node_selector.join(","))));
    d.map(0, "Labels", &m.labels);
    d.map(0, "Annotations", &m.annotations);
    let s = &ds.status;
    d.field(
        0,
        "Desired Number of Nodes Scheduled",
        s.desired_number_scheduled,
    );
    d.field(
        0,
        "Current Number of Nodes Scheduled",
        s.current_number_scheduled,
    );
    d.field(
        0,
        "Number of Nodes Scheduled with Up-to-date Pods",
        s.updated_number_scheduled,
    );
    d.field(
        0,
        "Number of Nodes Scheduled with Available Pods",
        s.number_available,
    );
    d.field(0, "Number of Nodes Misscheduled", s.number_misscheduled);
    let strategy = if ds.spec.is_on_delete() {
        "OnDelete".to_string()
    } else {
        let desired = s.desired_number_scheduled.max(0) as usize;
        format!(
            "RollingUpdate (max unavailable: {})",
            ds.spec.max_unavailable(desired)
        )
    };
    d.field(0, "Update Strategy", strategy);
    if let Some(t) = m.deletion_timestamp.as_ref() {
        d.field(0, "Deleting Since", timestamp(t));
    }
    template(&mut d, &ds.spec.template);
    d.finish()
}

pub fn describe_job(job: &Job) -> String {
    let mut d = Doc::default();
    let m = &job.metadata;
    let s = &job.status;
    d.field(0, "Name", &m.name);
    d.field(0, "Namespace", m.namespace_or_default());
    let selector = match &job.spec.selector {
        Some(sel) => selector_string(sel),
        None => format!(
            "batch.kubernetes.io/controller-uid={}",
            m.uid.as_deref().unwrap_or_default()
        ),
    };
    d.field(0, "Selector", selector);
    d.map(0, "Labels", &m.labels);
    d.map(0, "Annotations", &m.annotations);
    d.field(0, "Parallelism", job.spec.parallelism());
    d.field(
        0,
        "Completions",
        job.spec
            .completions()
            .map_or("<unset>".to_string(), |c| c.to_string()),
    );
    d.field(0, "Completion Mode", "NonIndexed");
    if let Some(t) = &s.start_time {
        d.field(0, "Start Time", timestamp(t));
    }
    if let Some(t) = &s.completion_time {
        d.field(0, "Completed At", timestamp(t));
    }
    if s.start_time.is_some() {
        d.field(0, "Duration", job_duration(job, chrono::Utc::now()));
    }
    if let Some(a) = job.spec.active_deadline_seconds {
        d.field(0, "Active Deadline Seconds", format!("{a}s"));
    }
    d.field(0, "Backoff Limit", job.spec.backoff_limit());
    if let Some(ttl) = job.spec.ttl_seconds_after_finished {
        d.field(0, "TTL Seconds After Finished", ttl);
    }
    d.field(
        0,
        "Pods Statuses",
        format!(
            "{} Active / {} Succeeded / {} Failed",
            s.active, s.succeeded, s.failed
        ),
    );
    template(&mut d, &job.spec.template);
    if !s.conditions.is_empty() {
        d.line(0, "Conditions:");
        let mut rows = vec![
            vec![
                "Type".to_string(),
                "Status".into(),
                "Reason".into(),
                "Message".into(),
            ],
            vec![
                "----".to_string(),
                "------".into(),
                "------".into(),
                "-------".into(),
            ],
        ];
        for c in &s.conditions {
            rows.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ]);
        }
        d.rows(1, &rows);
    }
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{Container, JobCondition};

    #[test]
    fn daemon_set_counts_and_strategy() {
        let mut ds = DaemonSet::default();
        ds.metadata.name = "exporter".into();
        ds.spec
            .selector
            .match_labels
            .insert("app".into(), "x".into());
        ds.spec.template.spec.containers.push(Container {
            name: "c".into(),
            image: "exporter:1".into(),
            ..Default::default()
        });
        ds.status.desired_number_scheduled = 4;
        ds.status.number_misscheduled = 1;
        let text = describe_daemon_set(&ds);
        assert!(text.contains("Selector:"), "{text}");
        assert!(text.contains("app=x"), "{text}");
        let desired = text
            .lines()
            .find(|l| l.starts_with("Desired Number of Nodes Scheduled:"))
            .unwrap();
        assert!(desired.ends_with(" 4"), "{text}");
        assert!(text.contains("Number of Nodes Misscheduled:"), "{text}");
        assert!(
            text.contains("RollingUpdate (max unavailable: 1)"),
            "{text}"
        );
        assert!(text.contains("exporter:1"), "{text}");
    }

    #[test]
    fn job_counts_and_conditions() {
        let mut j = Job::default();
        j.metadata.name = "flash".into();
        j.spec.completions = Some(3);
        j.spec.parallelism = Some(2);
        j.status.succeeded = 1;
        j.status.failed = 7;
        j.status.conditions.push(JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("BackoffLimitExceeded".into()),
            message: Some("Job has reached the specified backoff limit".into()),
            ..Default::default()
        });
        let text = describe_job(&j);
        assert!(text.contains("0 Active / 1 Succeeded / 7 Failed"), "{text}");
        assert!(text.contains("Completions:"), "{text}");
        assert!(text.contains("BackoffLimitExceeded"), "{text}");
        assert!(text.contains("Backoff Limit:"), "{text}");
    }
}
