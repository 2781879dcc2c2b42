//! Jobs end to end over the embedded broker with fake agents: the scheduler places a
//! Job's Pods, the agents report them finished, and the Job completes (or fails once
//! more Pods failed than `backoffLimit` allows).

mod loops_support;

use std::sync::Arc;
use std::time::Duration;

use loops_support::*;
use punnet_api::wire::PodReport;
use punnet_api::{Container, Job, Pod, PodStatus};
use punnet_controller::job::{self, JobConfig};

fn job(name: &str, completions: i32, parallelism: i32, backoff: i32) -> Job {
    let mut j = Job::default();
    j.metadata.name = name.into();
    j.metadata.namespace = Some("default".into());
    j.spec.completions = Some(completions);
    j.spec.parallelism = Some(parallelism);
    j.spec.backoff_limit = Some(backoff);
    j.spec.template.spec.restart_policy = Some("Never".into());
    j.spec.template.spec.containers.push(Container {
        name: "task".into(),
        image: "busybox:1.36".into(),
        ..Default::default()
    });
    j
}

/// Makes the agent report every Pod it is given as finished with `phase`, and keeps
/// track of the most Pods it ever ran at once.
fn finish_everything(agent: Arc<FakeAgent>, phase: &'static str) {
    tokio::spawn(async move {
        while Arc::strong_count(&agent) > 1 {
            let desired = agent.desired.borrow().clone();
            if let Some(d) = desired {
                let reports = d
                    .pods
                    .iter()
                    .map(|p| PodReport {
                        namespace: p.metadata.namespace.clone().unwrap_or_default(),
                        name: p.metadata.name.clone(),
                        uid: p.metadata.uid.clone().unwrap_or_default(),
                        status: PodStatus {
                            phase: Some(phase.into()),
                            ..Default::default()
                        },
                        usage: Vec::new(),
                    })
                    .collect();
                *agent.pods.lock().unwrap() = reports;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

fn start_jobs(ctl: &Controller) {
    let config = JobConfig {
        resync: Duration::from_secs(2),
        ..Default::default()
    };
    tokio::spawn(job::run_with(ctl.store.clone(), config, ctl.cancel.clone()));
}

fn pods_of(ctl: &Controller, name: &str) -> Vec<Pod> {
    ctl.store
        .list::<Pod>(Some("default"))
        .unwrap()
        .0
        .into_iter()
        .filter(|p| p.metadata.labels.get("job-name").map(String::as_str) == Some(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_its_completions_two_at_a_time() {
    let wait = Duration::from_secs(30);
    let port = free_port();
    embedded_broker(port).await;
    let ctl = Controller::start(port);
    start_jobs(&ctl);
    let agents: Vec<Arc<FakeAgent>> = ["j1", "j2"]
        .iter()
        .map(|n| Arc::new(FakeAgent::start(n, port)))
        .collect();
    eventually("two Ready nodes", wait, || {
        let (nodes, _) = ctl.store.list::<punnet_api::Node>(None).unwrap();
        (nodes.iter().filter(|n| n.is_ready()).count() == 2).then_some(())
    })
    .await;

    ctl.store.create(job("flash", 3, 2, 6)).unwrap();
    // Before anything finishes: exactly `parallelism` Pods, placed by the scheduler.
    let first = eventually("two Pods scheduled", wait, || {
        let pods = pods_of(&ctl, "flash");
        (pods.len() == 2 && pods.iter().all(|p| p.spec.node_name.is_some())).then_some(pods)
    })
    .await;
    assert_eq!(first[0].metadata.controller().unwrap().kind, "Job");
    let got: Job = ctl.store.get(Some("default"), "flash").unwrap().unwrap();
    assert_eq!(got.status.active, 2);
    assert!(got.status.start_time.is_some());

    for a in &agents {
        finish_everything(a.clone(), "Succeeded");
    }
    let done = eventually("the Job Complete", wait, || {
        ctl.store
            .get::<Job>(Some("default"), "flash")
            .unwrap()
            .filter(|j| j.status.finished().is_some())
    })
    .await;
    let cond = done.status.finished().unwrap();
    assert_eq!(
        (cond.type_.as_str(), cond.status.as_str()),
        ("Complete", "True")
    );
    assert_eq!(
        (
            done.status.succeeded,
            done.status.active,
            done.status.failed
        ),
        (3, 0, 0)
    );
    assert!(done.status.completion_time.is_some());
    assert_eq!(
        pods_of(&ctl, "flash").len(),
        3,
        "one Pod per completion, no more"
    );
    let reasons: Vec<String> = ctl
        .store
        .recorder()
        .list(Some("default"))
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"SuccessfulCreate".to_string()),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"Completed".to_string()), "{reasons:?}");
    drop(agents);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fails_after_its_backoff_limit() {
    let wait = Duration::from_secs(30);
    let port = free_port();
    embedded_broker(port).await;
    let ctl = Controller::start(port);
    start_jobs(&ctl);
    let agent = Arc::new(FakeAgent::start("j3", port));
    finish_everything(agent.clone(), "Failed");
    eventually("a Ready node", wait, || {
        ctl.store
            .get::<punnet_api::Node>(None, "j3")
            .unwrap()
            .filter(|n| n.is_ready())
    })
    .await;

    ctl.store.create(job("doomed", 1, 1, 1)).unwrap();
    let failed = eventually("the Job Failed", wait, || {
        ctl.store
            .get::<Job>(Some("default"), "doomed")
            .unwrap()
            .filter(|j| j.status.finished().is_some())
    })
    .await;
    let cond = failed.status.finished().unwrap();
    assert_eq!(cond.type_, "Failed");
    assert_eq!(cond.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(
        failed.status.failed, 2,
        "backoffLimit 1: the second failure ends it"
    );
    assert_eq!(pods_of(&ctl, "doomed").len(), 2);
    // Nothing more is started.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods_of(&ctl, "doomed").len(), 2);
    let events = ctl.store.recorder().list(Some("default"));
    assert!(
        events
            .iter()
            .any(|e| e.reason == "BackoffLimitExceeded" && e.type_ == "Warning"),
        "{events:?}"
    );
    drop(agent);
    ctl.stop().await;
}
