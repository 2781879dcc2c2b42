//! Namespaces: what the API does with them (`ApiResource`: deleting one marks it
//! `Terminating` rather than removing it) and the namespace controller, which empties a
//! terminating Namespace — every object of every kind in it, Pods gracefully through
//! `podgc` — and removes the Namespace once nothing is left. Level-triggered: each pass
//! looks at every terminating Namespace afresh, on a Namespace change and periodically.

use std::sync::Arc;
use std::time::Duration;

use punnet_api::namespace::{validate_namespace, PHASE_ACTIVE, PHASE_TERMINATING};
use punnet_api::validate::ValidationError;
use punnet_api::{Namespace, Object, Pod, Resource, Time, DEFAULT_NAMESPACE};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::http::ApiResource;
use crate::podgc;
use crate::store::{Store, StoreError};

/// How often terminating Namespaces are looked at without a Namespace change (their
/// Pods leave as their agents confirm, which is no Namespace event).
pub const RESYNC: Duration = Duration::from_secs(1);

impl ApiResource for Namespace {
    fn validate(&self) -> Result<(), ValidationError> {
        validate_namespace(self)
    }

    fn clear_status(&mut self) {
        self.status.phase = Some(PHASE_ACTIVE.into());
    }

    fn keep_system_fields(&mut self, current: &Self) {
        self.status = current.status.clone();
        self.metadata.deletion_timestamp = current.metadata.deletion_timestamp;
    }

    /// As in Kubernetes: the Namespace turns `Terminating` and the namespace
    /// controller removes it once it is empty. `default` may not be deleted.
    fn delete_from(
        store: &Store,
        _namespace: Option<&str>,
        name: &str,
        _grace: Option<i64>,
    ) -> Result<Option<Self>, StoreError> {
        if name == DEFAULT_NAMESPACE {
            return Err(StoreError::Forbidden {
                kind: Namespace::KIND,
                key: name.to_string(),
                message: "this namespace may not be deleted".into(),
            });
        }
        let now = Time::now();
        store.modify::<Namespace>(None, name, |ns| mark_terminating(ns, now))
    }
}

/// Marks a Namespace for deletion (idempotent).
pub fn mark_terminating(ns: &mut Namespace, now: Time) {
    ns.metadata.deletion_timestamp.get_or_insert(now);
    ns.status.phase = Some(PHASE_TERMINATING.into());
}

/// One step for one terminating Namespace: deletes what is in it (other kinds first,
/// so no workload controller makes new Pods; Pods gracefully) and removes the Namespace
/// once nothing is left. Returns whether the Namespace is gone.
pub fn finalize(store: &Store, ns: &Namespace) -> Result<bool, StoreError> {
    let name = ns.metadata.name.as_str();
    let mut contents = store.namespace_contents(name)?;
    if contents.is_empty() {
        let gone = store.delete::<Namespace>(None, name, ns.metadata.uid.as_deref())?;
        if gone.is_some() {
            info!("namespace {name}: empty, deleted");
        }
        return Ok(true);
    }
    contents.sort_by_key(|(plural, _)| *plural == Pod::PLURAL);
    for (plural, key) in contents {
        if plural == Pod::PLURAL {
            let pod_name = key.split_once('/').map_or(key.as_str(), |(_, n)| n);
            podgc::delete_pod(store, Some(name), pod_name, None, None)?;
        } else if store.remove_namespaced(plural, &key)? {
            info!("namespace {name}: deleted {plural} {key}");
        }
    }
    Ok(false)
}

/// One pass over every terminating Namespace.
pub fn reconcile_all(store: &Store) -> Result<(), StoreError> {
    let (all, _) = store.list::<Namespace>(None)?;
    for ns in all.iter().filter(|n| n.is_terminating()) {
        if let Err(e) = finalize(store, ns) {
            warn!("namespace {}: {e}", ns.metadata.name);
        }
    }
    Ok(())
}

/// Runs the namespace controller until `cancel` fires.
pub async fn run(store: Arc<Store>, cancel: CancellationToken) {
    let mut events = store.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = resync.tick() => {}
            ev = events.recv() => match ev {
                Ok(ev) if matches!(*ev.object, Object::Namespace(_)) => {}
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
        if let Err(e) = reconcile_all(&store) {
            warn!("namespace controller: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{ConfigMap, Container};

    #[test]
    fn deleting_a_namespace_empties_then_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(Namespace::new("team")).unwrap();
        let mut c = ConfigMap::default();
        c.metadata.name = "cfg".into();
        c.metadata.namespace = Some("team".into());
        store.create(c).unwrap();
        let mut p = Pod::default();
        p.metadata.name = "web".into();
        p.metadata.namespace = Some("team".into());
        p.spec.containers.push(Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        });
        store.create(p).unwrap();

        let err = Namespace::delete_from(&store, None, "default", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Namespace default is forbidden: this namespace may not be deleted"
        );
        let ns = Namespace::delete_from(&store, None, "team", None)
            .unwrap()
            .unwrap();
        assert_eq!(ns.status.phase.as_deref(), Some(PHASE_TERMINATING));
        assert!(ns.metadata.deletion_timestamp.is_some());

        assert!(!finalize(&store, &ns).unwrap(), "first pass empties");
        assert!(store.namespace_contents("team").unwrap().is_empty());
        reconcile_all(&store).unwrap();
        assert!(store.get::<Namespace>(None, "team").unwrap().is_none());
        assert!(Namespace::delete_from(&store, None, "team", None)
            .unwrap()
            .is_none());
    }
}
