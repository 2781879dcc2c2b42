//! A Deployment's status from the counts of its ReplicaSets' Pods, with the
//! `Available` and `Progressing` conditions worded and timed as Kubernetes'
//! `syncRolloutStatus` does (including `ProgressDeadlineExceeded`). Pure.

use std::time::Duration;

use punnet_api::{Deployment, DeploymentCondition, DeploymentStatus, Time};

use super::rollout::fenceposts;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

/// The Pods of a Deployment, counted over its ReplicaSets' active Pods.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Active Pods of every ReplicaSet.
    pub replicas: i32,
    /// Active Pods of the new ReplicaSet.
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// The sum of the ReplicaSets' `spec.replicas`.
    pub desired_total: i32,
}

/// What this reconcile did to the new ReplicaSet, for the `Progressing` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewRs<'a> {
    /// There is none (Recreate waiting for old Pods, or paused).
    None,
    Created(&'a str),
    Found(&'a str),
}

impl NewRs<'_> {
    fn name(&self) -> Option<&str> {
        match self {
            NewRs::None => None,
            NewRs::Created(n) | NewRs::Found(n) => Some(n),
        }
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: None,
        last_transition_time: None,
    }
}

/// Kubernetes' `SetDeploymentCondition`: the same status and reason changes nothing; the
/// same status keeps the transition time; anything else is new.
fn set(conditions: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition, now: Time) {
    let pos = conditions.iter().position(|x| x.type_ == c.type_);
    if let Some(cur) = pos.map(|i| &conditions[i]) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        c.last_transition_time = if cur.status == c.status {
            cur.last_transition_time
        } else {
            Some(now)
        };
    } else {
        c.last_transition_time = Some(now);
    }
    c.last_update_time = Some(now);
    match pos {
        Some(i) => conditions[i] = c,
        None => conditions.push(c),
    }
}

pub fn get<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

/// The new status of `d`. Condition times are kept from `d.status` while a condition
/// stays, so an unchanged world gives an equal status (and no write).
pub fn compute(d: &Deployment, counts: Counts, new_rs: NewRs, now: Time) -> DeploymentStatus {
    let prev = &d.status;
    let want = d.spec.replicas().max(0);
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: counts.replicas,
        updated_replicas: counts.updated,
        ready_replicas: counts.ready,
        available_replicas: counts.available,
        unavailable_replicas: (counts.desired_total - counts.available).max(0),
        conditions: prev.conditions.clone(),
    };

    let (_, max_unavailable) = fenceposts(&d.spec, want);
    let available = if counts.available >= want - max_unavailable {
        condition(
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    set(&mut s.conditions, available, now);

    if d.spec.paused {
        let c = condition(
            PROGRESSING,
            "Unknown",
            PAUSED,
            "Deployment is paused".into(),
        );
        set(&mut s.conditions, c, now);
        return sorted(s);
    }
    if get(prev, PROGRESSING).and_then(|c| c.reason.as_deref()) == Some(PAUSED) {
        let c = condition(
            PROGRESSING,
            "Unknown",
            RESUMED,
            "Deployment is resumed".into(),
        );
        set(&mut s.conditions, c, now);
    }
    match new_rs {
        NewRs::Created(name) => set(
            &mut s.conditions,
            condition(
                PROGRESSING,
                "True",
                NEW_RS_CREATED,
                format!("Created new replica set {name:?}"),
            ),
            now,
        ),
        NewRs::Found(name) if get(&s, PROGRESSING).is_none() => set(
            &mut s.conditions,
            condition(
                PROGRESSING,
                "True",
                FOUND_NEW_RS,
                format!("Found new replica set {name:?}"),
            ),
            now,
        ),
        _ => {}
    }

    let name = new_rs.name().unwrap_or_default();
    let current = get(&s, PROGRESSING).cloned();
    let already_complete = s.replicas == s.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if already_complete {
        return sorted(s);
    }
    let complete = new_rs.name().is_some()
        && s.updated_replicas == want
        && s.replicas == want
        && s.available_replicas == want;
    if complete {
        let c = condition(
            PROGRESSING,
            "True",
            NEW_RS_AVAILABLE,
            format!("ReplicaSet {name:?} has successfully progressed."),
        );
        set(&mut s.conditions, c, now);
    } else if progressed(prev, &s) {
        // Progress moves the update time even when the reason stays: the deadline
        // counts from the last progress.
        let mut c = condition(
            PROGRESSING,
            "True",
            RS_UPDATED,
            format!("ReplicaSet {name:?} is progressing."),
        );
        c.last_update_time = Some(now);
        c.last_transition_time = match &current {
            Some(cur) if cur.status == "True" => cur.last_transition_time,
            _ => Some(now),
        };
        s.conditions.retain(|x| x.type_ != PROGRESSING);
        s.conditions.push(c);
    } else if timed_out(d, current.as_ref(), now) {
        let c = condition(
            PROGRESSING,
            "False",
            TIMED_OUT,
            format!("ReplicaSet {name:?} has timed out progressing."),
        );
        set(&mut s.conditions, c, now);
    }
    sorted(s)
}

/// Kubernetes lists `Available` before `Progressing`.
fn sorted(mut s: DeploymentStatus) -> DeploymentStatus {
    s.conditions.sort_by_key(|c| match c.type_.as_str() {
        AVAILABLE => 0,
        PROGRESSING => 1,
        _ => 2,
    });
    s
}

/// Kubernetes' `DeploymentProgressing`: more updated, fewer old, more ready or more
/// available Pods than the last status said.
fn progressed(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    new.updated_replicas > old.updated_replicas
        || new.replicas - new.updated_replicas < old.replicas - old.updated_replicas
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
}

fn timed_out(d: &Deployment, current: Option<&DeploymentCondition>, now: Time) -> bool {
    let Some(c) = current else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c.last_update_time.is_some_and(|from| {
            from.0 + chrono::Duration::seconds(i64::from(d.spec.progress_deadline_seconds()))
                < now.0
        }),
    }
}

/// When the progress deadline of a rollout in progress passes: when to look again.
pub fn until_deadline(d: &Deployment, s: &DeploymentStatus, now: Time) -> Option<Duration> {
    let c = get(s, PROGRESSING)?;
    if c.status != "True" || c.reason.as_deref() == Some(NEW_RS_AVAILABLE) || d.spec.paused {
        return None;
    }
    let deadline = c.last_update_time?.0
        + chrono::Duration::seconds(i64::from(d.spec.progress_deadline_seconds()));
    // Timed out only strictly after the deadline, in whole seconds as stored.
    let left = (deadline - now.0).to_std().unwrap_or_default();
    Some(left + Duration::from_millis(1100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        Time(chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap())
    }

    fn deployment(replicas: i32) -> Deployment {
        let mut d = Deployment::default();
        d.spec.replicas = Some(replicas);
        d.spec.progress_deadline_seconds = Some(30);
        d.metadata.generation = Some(2);
        d
    }

    fn counts(replicas: i32, updated: i32, ready: i32) -> Counts {
        Counts {
            replicas,
            updated,
            ready,
            available: ready,
            desired_total: replicas,
        }
    }

    fn progressing(s: &DeploymentStatus) -> (String, String) {
        let c = get(s, PROGRESSING).unwrap();
        (c.status.clone(), c.reason.clone().unwrap())
    }

    #[test]
    fn a_rollout_goes_created_updated_available() {
        let mut d = deployment(2);
        let s = compute(&d, counts(0, 0, 0), NewRs::Created("web-abc"), at(0));
        assert_eq!(progressing(&s), ("True".into(), NEW_RS_CREATED.into()));
        assert_eq!(
            get(&s, PROGRESSING).unwrap().message.as_deref(),
            Some("Created new replica set \"web-abc\"")
        );
        assert_eq!(s.observed_generation, Some(2));
        d.status = s;
        let s = compute(&d, counts(3, 1, 2), NewRs::Found("web-abc"), at(5));
        assert_eq!(progressing(&s), ("True".into(), RS_UPDATED.into()));
        assert_eq!(get(&s, PROGRESSING).unwrap().last_update_time, Some(at(5)));
        assert_eq!(
            get(&s, PROGRESSING).unwrap().last_transition_time,
            Some(at(0))
        );
        d.status = s;
        let s = compute(&d, counts(2, 2, 2), NewRs::Found("web-abc"), at(9));
        assert_eq!(progressing(&s), ("True".into(), NEW_RS_AVAILABLE.into()));
        assert_eq!(s.conditions[0].type_, AVAILABLE);
        d.status = s.clone();
        // Nothing changes: the same status, nothing to write.
        assert_eq!(
            compute(&d, counts(2, 2, 2), NewRs::Found("web-abc"), at(99)),
            s
        );
    }

    #[test]
    fn no_progress_past_the_deadline_is_reported() {
        let mut d = deployment(2);
        d.status = compute(&d, counts(2, 0, 2), NewRs::Created("web-new"), at(0));
        d.status = compute(&d, counts(3, 1, 2), NewRs::Found("web-new"), at(1));
        assert_eq!(
            until_deadline(&d, &d.status, at(11)),
            Some(Duration::from_millis(21_100))
        );
        let s = compute(&d, counts(3, 1, 2), NewRs::Found("web-new"), at(20));
        assert_eq!(progressing(&s), ("True".into(), RS_UPDATED.into()));
        let s = compute(&d, counts(3, 1, 2), NewRs::Found("web-new"), at(32));
        assert_eq!(progressing(&s), ("False".into(), TIMED_OUT.into()));
        assert_eq!(
            get(&s, PROGRESSING).unwrap().message.as_deref(),
            Some("ReplicaSet \"web-new\" has timed out progressing.")
        );
        d.status = s;
        assert_eq!(until_deadline(&d, &d.status, at(40)), None);
    }

    #[test]
    fn availability_honours_max_unavailable() {
        let d = deployment(4);
        // 25% of 4 rounded down is 1: 3 available is enough, 2 is not.
        let s = compute(&d, counts(4, 4, 3), NewRs::Found("x"), at(0));
        assert_eq!(get(&s, AVAILABLE).unwrap().status, "True");
        let s = compute(&d, counts(4, 4, 2), NewRs::Found("x"), at(0));
        assert_eq!(get(&s, AVAILABLE).unwrap().status, "False");
        assert_eq!(s.unavailable_replicas, 2);
    }

    #[test]
    fn paused_and_resumed() {
        let mut d = deployment(1);
        d.spec.paused = true;
        d.status = compute(&d, counts(1, 1, 1), NewRs::None, at(0));
        assert_eq!(progressing(&d.status), ("Unknown".into(), PAUSED.into()));
        d.spec.paused = false;
        let s = compute(&d, counts(1, 0, 1), NewRs::Created("n"), at(1));
        assert_eq!(progressing(&s), ("True".into(), NEW_RS_CREATED.into()));
    }
}
