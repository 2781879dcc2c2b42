//! The pure decisions of a rollout, as Kubernetes' deployment controller makes them
//! (`rolling.go`, `recreate.go`, `sync.go`): how far to scale the new and the old
//! ReplicaSets in this step, revision numbers, and which old ReplicaSets history keeps.
//! No I/O: the inputs are plain views of the ReplicaSets.

use punnet_api::{scaled_value, DeploymentSpec};

/// What a rollout step needs to know of one ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsView {
    pub name: String,
    /// `spec.replicas`: what it is asked to run.
    pub replicas: i32,
    /// Its active Pods that are available (Ready for `minReadySeconds`).
    pub available: i32,
    /// Its Pods that still exist in any state, terminating included (Recreate waits
    /// for these to be gone).
    pub existing: i32,
    pub revision: i64,
}

/// `maxSurge` and `maxUnavailable` as numbers of Pods for `replicas`: surge rounded
/// up, unavailable rounded down; both 0 would block every rollout, so unavailable
/// becomes 1 (Kubernetes' `ResolveFenceposts`).
pub fn fenceposts(spec: &DeploymentSpec, replicas: i32) -> (i32, i32) {
    let (surge, unavailable) = spec.rolling_params();
    // Validation rejects malformed values; a stored one that is counts as 0.
    let surge = scaled_value(&surge, replicas, true).unwrap_or(0).max(0);
    let mut unavailable = scaled_value(&unavailable, replicas, false)
        .unwrap_or(0)
        .max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// One step's scaling: ReplicaSet name → new `spec.replicas`, only those that change.
pub type Scaling = Vec<(String, i32)>;

/// The replicas a new ReplicaSet should have after this step of a rolling update
/// (Kubernetes' `NewRSNewReplicas`): up to `replicas + maxSurge` Pods in all.
pub fn new_rs_replicas(want: i32, surge: i32, new: &RsView, old: &[RsView]) -> i32 {
    let current: i32 = new.replicas + old.iter().map(|r| r.replicas).sum::<i32>();
    let max_total = want + surge;
    if current >= max_total {
        return new.replicas;
    }
    let up = (max_total - current).min(want - new.replicas).max(0);
    new.replicas + up
}

/// One step of a rolling update. As in Kubernetes, a step either scales the new
/// ReplicaSet (up within `maxSurge`, or down to `replicas`) or, when that has nothing
/// to do, scales old ones down: first their unavailable Pods, then available ones while
/// at least `replicas - maxUnavailable` stay available. `old` is oldest first.
pub fn rolling_step(spec: &DeploymentSpec, new: &RsView, old: &[RsView]) -> Scaling {
    let want = spec.replicas().max(0);
    let (surge, max_unavailable) = fenceposts(spec, want);
    if new.replicas > want {
        return vec![(new.name.clone(), want)];
    }
    let target = new_rs_replicas(want, surge, new, old);
    if target != new.replicas {
        return vec![(new.name.clone(), target)];
    }

    let old_total: i32 = old.iter().map(|r| r.replicas).sum();
    if old_total == 0 {
        return Vec::new();
    }
    let all_total = new.replicas + old_total;
    let min_available = want - max_unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut replicas: Vec<i32> = old.iter().map(|r| r.replicas).collect();

    // Unavailable old Pods go first: removing them costs no availability.
    let mut cleaned = 0;
    for (i, r) in old.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = (replicas[i] - r.available).max(0);
        let down = unhealthy.min(max_scaled_down - cleaned);
        replicas[i] -= down;
        cleaned += down;
    }

    // Then available ones, down to the minimum availability.
    let available: i32 = new.available + old.iter().map(|r| r.available).sum::<i32>();
    if available > min_available {
        let mut budget = available - min_available;
        for r in replicas.iter_mut() {
            if budget == 0 {
                break;
            }
            let down = (*r).min(budget);
            *r -= down;
            budget -= down;
        }
    }
    old.iter()
        .zip(replicas)
        .filter(|(r, n)| r.replicas != *n)
        .map(|(r, n)| (r.name.clone(), n))
        .collect()
}

/// What a Recreate step does: scale every old ReplicaSet to 0, and only once none of
/// their Pods exist any more, bring the new one (`None`: not created yet) to `replicas`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecreateStep {
    pub scaling: Scaling,
    /// Create the new ReplicaSet now (with `replicas`).
    pub create_new: bool,
}

pub fn recreate_step(spec: &DeploymentSpec, new: Option<&RsView>, old: &[RsView]) -> RecreateStep {
    let want = spec.replicas().max(0);
    let mut step = RecreateStep::default();
    for r in old.iter().filter(|r| r.replicas != 0) {
        step.scaling.push((r.name.clone(), 0));
    }
    if old.iter().any(|r| r.existing > 0 || r.replicas > 0) {
        return step;
    }
    match new {
        None => step.create_new = true,
        Some(n) if n.replicas != want => step.scaling.push((n.name.clone(), want)),
        Some(_) => {}
    }
    step
}

/// While paused (or when only the replica count changed), nothing rolls out: the
/// newest ReplicaSet that runs anything (the new one if it exists) absorbs the
/// difference between `replicas` and what the others run.
pub fn scale_only(spec: &DeploymentSpec, new: Option<&RsView>, old: &[RsView]) -> Scaling {
    let want = spec.replicas().max(0);
    let active: Option<&RsView> = new.or_else(|| {
        old.iter()
            .filter(|r| r.replicas > 0)
            .max_by_key(|r| r.revision)
            .or_else(|| old.iter().max_by_key(|r| r.revision))
    });
    let Some(active) = active else {
        return Vec::new();
    };
    let others: i32 = old
        .iter()
        .filter(|r| r.name != active.name)
        .map(|r| r.replicas)
        .sum();
    let target = (want - others).max(0);
    if target == active.replicas {
        Vec::new()
    } else {
        vec![(active.name.clone(), target)]
    }
}

/// The revision a new (or newly current again) ReplicaSet gets: one past the newest
/// of the old ones.
pub fn next_revision(old: &[RsView]) -> i64 {
    old.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// The old ReplicaSets `revisionHistoryLimit` no longer keeps: those scaled to 0 with
/// no Pods left, oldest revisions first, beyond the newest `limit`.
pub fn history_to_prune(limit: i32, old: &[RsView]) -> Vec<String> {
    let mut empty: Vec<&RsView> = old
        .iter()
        .filter(|r| r.replicas == 0 && r.existing == 0)
        .collect();
    let limit = limit.max(0) as usize;
    if empty.len() <= limit {
        return Vec::new();
    }
    empty.sort_by_key(|r| r.revision);
    let extra = empty.len() - limit;
    empty[..extra].iter().map(|r| r.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{DeploymentStrategy, IntOrString, RollingUpdateDeployment};

    fn spec(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> DeploymentSpec {
        DeploymentSpec {
            replicas: Some(replicas),
            strategy: DeploymentStrategy {
                type_: None,
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            },
            ..Default::default()
        }
    }

    fn rs(name: &str, replicas: i32, available: i32, revision: i64) -> RsView {
        RsView {
            name: name.into(),
            replicas,
            available,
            existing: replicas,
            revision,
        }
    }

    use IntOrString::{Int, String as Pct};

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let d = DeploymentSpec::default();
        assert_eq!(fenceposts(&d, 10), (3, 2));
        assert_eq!(fenceposts(&d, 1), (1, 0));
        assert_eq!(fenceposts(&spec(3, Int(0), Int(0)), 3), (0, 1));
        assert_eq!(
            fenceposts(&spec(3, Pct("0%".into()), Pct("10%".into())), 3),
            (0, 1)
        );
    }

    /// A whole rolling update with maxUnavailable 0, simulated step by step: Pods
    /// become available at once when asked for. Available Pods never drop below 3 and
    /// the end state is only new Pods.
    #[test]
    fn max_unavailable_zero_keeps_every_replica_available() {
        let s = spec(3, Int(1), Int(0));
        let mut new = rs("new", 0, 0, 2);
        let mut old = vec![rs("old", 3, 3, 1)];
        for _ in 0..20 {
            let (n, o) = (new.clone(), old.clone());
            let step = rolling_step(&s, &n, &o);
            if step.is_empty() {
                break;
            }
            for (name, replicas) in step {
                if name == "new" {
                    new.replicas = replicas;
                } else {
                    old[0].replicas = replicas;
                    old[0].available = old[0].available.min(replicas);
                }
            }
            assert!(new.available + old[0].available >= 3, "{new:?} {old:?}");
            assert!(new.replicas + old[0].replicas <= 4, "surge is 1");
            new.available = new.replicas;
        }
        assert_eq!((new.replicas, new.available, old[0].replicas), (3, 3, 0));
    }

    #[test]
    fn rolling_waits_for_new_pods_to_be_available() {
        let s = spec(3, Int(1), Int(0));
        // The surge Pod is not available yet: nothing may go.
        assert!(rolling_step(&s, &rs("new", 1, 0, 2), &[rs("old", 3, 3, 1)]).is_empty());
        // It is: one old Pod goes.
        assert_eq!(
            rolling_step(&s, &rs("new", 1, 1, 2), &[rs("old", 3, 3, 1)]),
            vec![("old".to_string(), 2)]
        );
    }

    #[test]
    fn unavailable_old_pods_are_removed_first_and_oldest_sets_first() {
        let s = spec(4, Int(0), Int(1));
        // Old sets: 2 (1 available) and 2 (2 available); new is full size... not yet.
        let new = rs("new", 0, 0, 3);
        let old = [rs("a", 2, 1, 1), rs("b", 2, 2, 2)];
        // maxScaledDown = 4 - 3 - 0 = 1: the unavailable Pod of "a" goes.
        assert_eq!(rolling_step(&s, &new, &old), vec![("a".to_string(), 1)]);
    }

    #[test]
    fn scale_down_of_the_new_set_comes_first() {
        let s = spec(2, Int(1), Int(0));
        assert_eq!(
            rolling_step(&s, &rs("new", 5, 5, 2), &[]),
            vec![("new".to_string(), 2)]
        );
        assert!(rolling_step(&s, &rs("new", 2, 2, 2), &[rs("o", 0, 0, 1)]).is_empty());
    }

    #[test]
    fn the_first_rollout_creates_every_replica() {
        let s = DeploymentSpec {
            replicas: Some(4),
            ..Default::default()
        };
        assert_eq!(new_rs_replicas(4, 1, &rs("new", 0, 0, 1), &[]), 4);
        assert_eq!(
            rolling_step(&s, &rs("new", 0, 0, 1), &[]),
            vec![("new".to_string(), 4)]
        );
    }

    #[test]
    fn recreate_scales_old_down_and_waits_for_their_pods() {
        let s = DeploymentSpec {
            replicas: Some(2),
            ..Default::default()
        };
        let step = recreate_step(&s, None, &[rs("old", 2, 2, 1)]);
        assert_eq!(step.scaling, vec![("old".to_string(), 0)]);
        assert!(!step.create_new);
        let mut stopping = rs("old", 0, 0, 1);
        stopping.existing = 1;
        assert_eq!(
            recreate_step(&s, None, &[stopping]),
            RecreateStep::default()
        );
        let gone = rs("old", 0, 0, 1);
        assert!(recreate_step(&s, None, std::slice::from_ref(&gone)).create_new);
        assert_eq!(
            recreate_step(&s, Some(&rs("new", 0, 0, 2)), &[gone]).scaling,
            vec![("new".to_string(), 2)]
        );
    }

    #[test]
    fn scale_only_moves_the_active_set() {
        let s = DeploymentSpec {
            replicas: Some(5),
            ..Default::default()
        };
        assert_eq!(
            scale_only(&s, None, &[rs("a", 0, 0, 1), rs("b", 3, 3, 2)]),
            vec![("b".to_string(), 5)]
        );
        assert_eq!(
            scale_only(&s, Some(&rs("n", 1, 1, 3)), &[rs("b", 3, 3, 2)]),
            vec![("n".to_string(), 2)]
        );
    }

    #[test]
    fn revisions_and_history() {
        let old = [rs("a", 0, 0, 1), rs("b", 0, 0, 4), rs("c", 1, 1, 3)];
        assert_eq!(next_revision(&old), 5);
        assert_eq!(next_revision(&[]), 1);
        assert_eq!(history_to_prune(1, &old), vec!["a".to_string()]);
        assert!(history_to_prune(2, &old).is_empty());
        assert_eq!(history_to_prune(0, &old).len(), 2);
    }
}
