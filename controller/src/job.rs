//! The Job controller: runs a Job's Pods (unbound; the scheduler places them) until
//! `completions` succeed, at most `parallelism` at once; fails the Job when more than
//! `backoffLimit` Pods failed (with `OnFailure`, container restarts count too) or it
//! ran longer than `activeDeadlineSeconds`; deletes it `ttlSecondsAfterFinished` after
//! it finished (its Pods follow through the garbage collector).
//!
//! `decide` is pure: the Job, its Pods and the time in, what to do out. Failed Pods
//! are replaced at once (no exponential back-off between retries).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use punnet_api::job::{
    JOB_COMPLETE, JOB_FAILED, LABEL_CONTROLLER_UID, LABEL_CONTROLLER_UID_LEGACY, LABEL_JOB_NAME,
    LABEL_JOB_NAME_LEGACY,
};
use punnet_api::{
    phase, Job, JobCondition, JobStatus, Object, ObjectReference, OwnerReference, Pod, Resource,
    RestartPolicy, Time,
};
use thiserror::Error;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::podgc;
use crate::scheduler::is_terminal;
use crate::store::{Store, StoreError, WatchEvent};

#[derive(Debug, Error)]
pub enum JobError {
    #[error("Job {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
}

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub resync: Duration,
    pub debounce: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            resync: Duration::from_secs(30),
            debounce: Duration::from_millis(10),
        }
    }
}

/// An Event to record on the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What one reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub create: usize,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    pub status: JobStatus,
    pub notes: Vec<Note>,
    /// The Job's time to live after finishing is over.
    pub delete_job: bool,
    /// Look again after this long (a deadline or a TTL runs out).
    pub requeue_after: Option<Duration>,
}

fn failures(job: &Job, pods: &[&Pod]) -> i32 {
    let failed = pods.iter().filter(|p| p.phase() == phase::FAILED).count() as i32;
    if job.spec.template.spec.restart_policy() != RestartPolicy::OnFailure {
        return failed;
    }
    let restarts: i32 = pods
        .iter()
        .flat_map(|p| p.status.container_statuses.iter())
        .map(|c| c.restart_count)
        .sum();
    failed + restarts
}

fn condition(type_: &str, reason: &str, message: Option<&str>, now: Time) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: message.map(str::to_string),
        last_probe_time: Some(now),
        last_transition_time: Some(now),
    }
}

fn until(deadline: Time, now: Time) -> Duration {
    (deadline.0 - now.0)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_millis(10))
}

/// Decides for `job` from the Pods it owns (any state) at `now`.
pub fn decide(job: &Job, pods: &[&Pod], now: Time) -> Decision {
    let prev = &job.status;
    let active: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| !is_terminal(p) && !podgc::is_terminating(p))
        .collect();
    let succeeded = (pods
        .iter()
        .filter(|p| p.phase() == phase::SUCCEEDED)
        .count() as i32)
        .max(prev.succeeded);
    let failed = failures(job, pods).max(prev.failed);
    let mut status = JobStatus {
        active: active.len() as i32,
        succeeded,
        failed,
        start_time: prev.start_time.or(Some(now)),
        completion_time: prev.completion_time,
        conditions: prev.conditions.clone(),
    };
    let mut d = Decision {
        create: 0,
        delete: Vec::new(),
        status: status.clone(),
        notes: Vec::new(),
        delete_job: false,
        requeue_after: None,
    };
    let all_active = || active.iter().map(|p| p.metadata.name.clone()).collect();

    if let Some(done) = prev.finished() {
        d.delete = all_active();
        d.status.active = 0;
        if let Some(ttl) = job.spec.ttl_seconds_after_finished {
            let finished_at = done
                .last_transition_time
                .or(prev.completion_time)
                .unwrap_or(now);
            let expires = Time(finished_at.0 + ChronoDuration::seconds(i64::from(ttl)));
            if now >= expires {
                d.delete_job = true;
            } else {
                d.requeue_after = Some(until(expires, now));
            }
        }
        return d;
    }

    let start = status.start_time.unwrap_or(now);
    let fail = if failed > job.spec.backoff_limit() {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else {
        match job.spec.active_deadline_seconds {
            Some(s) if now.0 >= start.0 + ChronoDuration::seconds(s) => Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )),
            Some(s) => {
                d.requeue_after = Some(until(Time(start.0 + ChronoDuration::seconds(s)), now));
                None
            }
            None => None,
        }
    };
    if let Some((reason, message)) = fail {
        status
            .conditions
            .push(condition(JOB_FAILED, reason, Some(message), now));
        status.active = 0;
        d.delete = all_active();
        d.notes.push(Note {
            warning: true,
            reason,
            message: message.into(),
        });
        d.status = status;
        return d;
    }

    let parallelism = job.spec.parallelism() as usize;
    let (complete, want) = match job.spec.completions() {
        Some(n) => (
            succeeded >= n,
            parallelism.min((n - succeeded).max(0) as usize),
        ),
        // A work queue: done once one Pod succeeded and none still runs.
        None if succeeded > 0 => (active.is_empty(), 0),
        None => (false, parallelism),
    };
    if complete {
        status
            .conditions
            .push(condition(JOB_COMPLETE, "Completed", None, now));
        status.completion_time = Some(now);
        d.delete = all_active();
        status.active = 0;
        d.notes.push(Note {
            warning: false,
            reason: "Completed",
            message: "Job completed".into(),
        });
        d.status = status;
        return d;
    }
    if active.len() < want {
        d.create = want - active.len();
    } else if active.len() > want {
        // Newest first: the ones that have done least.
        let mut extra = active.clone();
        extra.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp));
        d.delete = extra[..active.len() - want]
            .iter()
            .map(|p| p.metadata.name.clone())
            .collect();
    }
    status.active = (active.len() + d.create - d.delete.len()) as i32;
    d.status = status;
    d
}

/// A new Pod of the Job's template (unbound).
pub fn pod_for(job: &Job) -> Pod {
    let t = &job.spec.template;
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let mut pod = Pod::default();
    pod.set_type_meta();
    pod.metadata.generate_name = Some(format!("{}-", job.metadata.name));
    pod.metadata.namespace = Some(job.metadata.namespace_or_default().to_string());
    pod.metadata.labels = t.metadata.labels.clone();
    for (k, v) in [
        (LABEL_JOB_NAME, &job.metadata.name),
        (LABEL_JOB_NAME_LEGACY, &job.metadata.name),
        (LABEL_CONTROLLER_UID, &uid),
        (LABEL_CONTROLLER_UID_LEGACY, &uid),
    ] {
        pod.metadata.labels.insert(k.into(), v.clone());
    }
    pod.metadata.annotations = t.metadata.annotations.clone();
    pod.metadata.owner_references = vec![OwnerReference {
        api_version: Job::API_VERSION.into(),
        kind: Job::KIND.into(),
        name: job.metadata.name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    pod.spec = t.spec.clone();
    pod
}

fn owner_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata.controller().filter(|r| r.kind == Job::KIND)
}

/// Reconciles the Job `namespace/name`; returns when to look again, if a deadline or
/// TTL is pending.
pub fn reconcile(store: &Store, namespace: &str, name: &str) -> Result<Option<Duration>, JobError> {
    let key = format!("{namespace}/{name}");
    let err = |source| JobError::Store {
        key: key.clone(),
        source,
    };
    let Some(job) = store.get::<Job>(Some(namespace), name).map_err(err)? else {
        return Ok(None);
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let (all, _) = store.list::<Pod>(Some(namespace)).map_err(err)?;
    let owned: Vec<&Pod> = all
        .iter()
        .filter(|p| owner_of(p).is_some_and(|o| o.uid == uid))
        .collect();
    let d = decide(&job, &owned, Time::now());
    let recorder = store.recorder();
    let job_ref = ObjectReference::to(&job);
    if d.delete_job {
        if store
            .delete::<Job>(Some(namespace), name, Some(&uid))
            .map_err(err)?
            .is_some()
        {
            info!("job {key}: deleted (ttlSecondsAfterFinished)");
        }
        return Ok(None);
    }
    for victim in &d.delete {
        let uid = owned
            .iter()
            .find(|p| &p.metadata.name == victim)
            .and_then(|p| p.metadata.uid.as_deref());
        let out = podgc::delete_pod(store, Some(namespace), victim, uid, None).map_err(err)?;
        if out != podgc::Deleted::NotFound {
            recorder.normal(
                job_ref.clone(),
                "SuccessfulDelete",
                format!("Deleted pod: {victim}"),
            );
        }
    }
    for _ in 0..d.create {
        let pod = create_pod(store, &job).map_err(err)?;
        info!("job {key}: created Pod {}", pod.metadata.name);
        recorder.normal(
            job_ref.clone(),
            "SuccessfulCreate",
            format!("Created pod: {}", pod.metadata.name),
        );
    }
    for n in &d.notes {
        if n.warning {
            recorder.warning(job_ref.clone(), n.reason, n.message.clone());
        } else {
            recorder.normal(job_ref.clone(), n.reason, n.message.clone());
        }
    }
    if d.status != job.status {
        store
            .modify::<Job>(Some(namespace), name, |cur| {
                if cur.metadata.uid == job.metadata.uid {
                    cur.status = d.status.clone();
                }
            })
            .map_err(err)?;
    }
    Ok(d.requeue_after)
}

fn create_pod(store: &Store, job: &Job) -> Result<Pod, StoreError> {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let template = pod_for(job);
    let mut last = None;
    for _ in 0..5 {
        let mut pod = template.clone();
        let suffix: String = (0..5)
            .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
            .collect();
        pod.metadata.name = format!("{}-{suffix}", job.metadata.name);
        match store.create(pod) {
            Ok(p) => return Ok(p),
            Err(e @ StoreError::AlreadyExists { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("five attempts were made"))
}

fn key_of(ev: &WatchEvent) -> Option<(String, String)> {
    match &*ev.object {
        Object::Job(j) => Some((
            j.metadata.namespace_or_default().to_string(),
            j.metadata.name.clone(),
        )),
        Object::Pod(p) => owner_of(p).map(|o| {
            (
                p.metadata.namespace_or_default().to_string(),
                o.name.clone(),
            )
        }),
        _ => None,
    }
}

fn all_keys(store: &Store) -> Result<BTreeSet<(String, String)>, StoreError> {
    let (jobs, _) = store.list::<Job>(None)?;
    Ok(jobs
        .iter()
        .map(|j| {
            (
                j.metadata.namespace_or_default().to_string(),
                j.metadata.name.clone(),
            )
        })
        .collect())
}

pub async fn run(store: Arc<Store>, cancel: CancellationToken) {
    run_with(store, JobConfig::default(), cancel).await
}

pub async fn run_with(store: Arc<Store>, config: JobConfig, cancel: CancellationToken) {
    let mut events = store.subscribe();
    let mut resync = tokio::time::interval(config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue: BTreeSet<(String, String)> = BTreeSet::new();
    // Jobs to look at again when a deadline or TTL runs out.
    let mut timers: BTreeMap<(String, String), Instant> = BTreeMap::new();
    let mut full = false;
    let mut last_pass = Duration::ZERO;
    loop {
        let next_timer = timers.values().min().copied();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = resync.tick() => full = true,
            _ = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                let due: Vec<_> = timers.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
                for k in due {
                    timers.remove(&k);
                    queue.insert(k);
                }
            }
            ev = events.recv() => match ev {
                Ok(ev) => queue.extend(key_of(&ev)),
                Err(RecvError::Lagged(_)) => full = true,
                Err(RecvError::Closed) => return,
            },
        }
        if !full && queue.is_empty() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(crate::workqueue::pause(config.debounce, last_pass)) => {}
        }
        loop {
            match events.try_recv() {
                Ok(ev) => queue.extend(key_of(&ev)),
                Err(TryRecvError::Lagged(_)) => full = true,
                Err(_) => break,
            }
        }
        if full {
            match all_keys(&store) {
                Ok(keys) => queue.extend(keys),
                Err(e) => warn!("job controller: resync failed: {e}"),
            }
            full = false;
        }
        let started = std::time::Instant::now();
        for (ns, name) in std::mem::take(&mut queue) {
            match reconcile(&store, &ns, &name) {
                Ok(Some(after)) => {
                    timers.insert((ns, name), Instant::now() + after);
                }
                Ok(None) => {
                    timers.remove(&(ns, name));
                }
                Err(e) => warn!("job controller: {e}"),
            }
        }
        last_pass = started.elapsed();
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
