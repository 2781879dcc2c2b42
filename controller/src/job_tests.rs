//! Unit tests of the Job controller's pure decisions.

use super::*;
use punnet_api::{Container, ContainerStatus};

fn job(completions: Option<i32>, parallelism: Option<i32>, backoff: i32) -> Job {
    let mut j = Job::default();
    j.metadata.name = "flash".into();
    j.metadata.namespace = Some("default".into());
    j.metadata.uid = Some("job-1".into());
    j.spec.completions = completions;
    j.spec.parallelism = parallelism;
    j.spec.backoff_limit = Some(backoff);
    j.spec.template.spec.restart_policy = Some("Never".into());
    j.spec.template.spec.containers.push(Container {
        name: "c".into(),
        image: "busybox".into(),
        ..Default::default()
    });
    j
}

fn pod(name: &str, phase: &str) -> Pod {
    let mut p = pod_for(&job(None, None, 0));
    p.metadata.name = name.into();
    p.status.phase = Some(phase.into());
    p
}

fn now() -> Time {
    Time(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap())
}

#[test]
fn runs_parallelism_pods_until_completions_succeed() {
    let j = job(Some(3), Some(2), 6);
    let d = decide(&j, &[], now());
    assert_eq!(
        (d.create, d.status.active, d.status.start_time),
        (2, 2, Some(now()))
    );
    let (a, b) = (pod("a", "Succeeded"), pod("b", "Running"));
    let d = decide(&j, &[&a, &b], now());
    assert_eq!((d.create, d.status.succeeded, d.status.active), (1, 1, 2));
    let (b, c) = (pod("b", "Succeeded"), pod("c", "Running"));
    let d = decide(&j, &[&a, &b, &c], now());
    assert_eq!(d.create, 0, "only one completion left, and it runs");
    let c = pod("c", "Succeeded");
    let d = decide(&j, &[&a, &b, &c], now());
    let done = d.status.finished().expect("complete");
    assert_eq!(
        (done.type_.as_str(), d.status.completion_time),
        ("Complete", Some(now()))
    );
    assert_eq!(d.notes[0].reason, "Completed");
}

#[test]
fn fails_after_backoff_limit_and_stops_what_runs() {
    let j = job(Some(3), Some(2), 1);
    let (f1, r) = (pod("f1", "Failed"), pod("r", "Running"));
    let d = decide(&j, &[&f1, &r], now());
    assert_eq!(
        (d.create, d.status.failed),
        (1, 1),
        "one failure is within the limit"
    );
    let f2 = pod("f2", "Failed");
    let d = decide(&j, &[&f1, &f2, &r], now());
    let failed = d.status.finished().expect("failed");
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(d.delete, vec!["r"]);
    assert!(d.notes[0].warning);
    // Once failed, it stays failed and creates nothing.
    let mut j2 = j.clone();
    j2.status = d.status.clone();
    let again = decide(&j2, &[&f1, &f2], now());
    assert_eq!((again.create, &again.status), (0, &j2.status));
}

#[test]
fn on_failure_counts_container_restarts() {
    let mut j = job(Some(1), None, 2);
    j.spec.template.spec.restart_policy = Some("OnFailure".into());
    let mut p = pod("p", "Running");
    p.status.container_statuses.push(ContainerStatus {
        name: "c".into(),
        restart_count: 3,
        ..Default::default()
    });
    let d = decide(&j, &[&p], now());
    assert_eq!(
        d.status.finished().unwrap().reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
}

#[test]
fn deadline_and_ttl() {
    let mut j = job(Some(1), None, 6);
    j.spec.active_deadline_seconds = Some(60);
    j.status.start_time = Some(now());
    let r = pod("r", "Running");
    let d = decide(&j, &[&r], Time(now().0 + ChronoDuration::seconds(30)));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(30)));
    let d = decide(&j, &[&r], Time(now().0 + ChronoDuration::seconds(61)));
    assert_eq!(
        d.status.finished().unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    let mut done = job(Some(1), None, 6);
    done.spec.ttl_seconds_after_finished = Some(100);
    done.status
        .conditions
        .push(condition(JOB_COMPLETE, "Completed", None, now()));
    let d = decide(&done, &[], Time(now().0 + ChronoDuration::seconds(40)));
    assert_eq!(
        (d.delete_job, d.requeue_after),
        (false, Some(Duration::from_secs(60)))
    );
    assert!(decide(&done, &[], Time(now().0 + ChronoDuration::seconds(100))).delete_job);
}

#[test]
fn work_queue_completes_when_one_succeeded_and_none_runs() {
    let j = job(None, Some(3), 6);
    assert_eq!(decide(&j, &[], now()).create, 3);
    let (s, r) = (pod("s", "Succeeded"), pod("r", "Running"));
    let d = decide(&j, &[&s, &r], now());
    assert_eq!((d.create, d.status.finished()), (0, None));
    let r = pod("r", "Succeeded");
    assert!(decide(&j, &[&s, &r], now()).status.finished().is_some());
}

#[test]
fn pods_carry_job_labels_and_owner() {
    let p = pod_for(&job(None, None, 0));
    assert_eq!(p.metadata.labels[LABEL_JOB_NAME], "flash");
    assert_eq!(p.metadata.labels[LABEL_CONTROLLER_UID], "job-1");
    assert_eq!(p.metadata.controller().unwrap().kind, "Job");
    assert!(p.spec.node_name.is_none());
}
