//! The garbage collector: ownerReferences and cascading deletion, generic over kinds.
//!
//! - Background (the default): the owner leaves the store at once; a dependent all of
//!   whose owners are gone (by uid) is deleted here afterwards (Pods gracefully).
//! - Foreground: the owner stays, with `deletionTimestamp` and the `foregroundDeletion`
//!   finalizer, while its dependents are deleted; it leaves once no dependent with
//!   `blockOwnerDeletion` remains (a terminating Pod still counts, as in Kubernetes).
//! - Orphan: the owner's references are removed from its dependents, then it goes.
//!
//! `plan` is pure (objects in, actions out); `run` applies it on store events and on a
//! periodic resync. A reference to a kind this controller does not store is left
//! alone: its owner cannot be looked up, so it is never taken for gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use punnet_api::{
    ConfigMap, DaemonSet, Deployment, Job, Node, Object, ObjectMeta, Pod, ReplicaSet, Resource,
    Secret, Time,
};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::podgc;
use crate::store::{Change, Store, StoreError, WatchEvent};

pub const FOREGROUND_DELETION: &str = "foregroundDeletion";

/// How a DELETE treats the object's dependents (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn parse(s: &str) -> Result<Propagation, String> {
        match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(format!(
                "propagationPolicy {other:?} is not one of Background, Foreground, Orphan"
            )),
        }
    }
}

/// Calls `$m!(Type)` for every kind that can own or depend on another. A new kind is
/// one line here. Namespaces are left out: the namespace controller owns their
/// deletion (and a `deletionTimestamp` on one means "being emptied", not ours).
macro_rules! for_each_kind {
    ($m:ident) => {
        $m!(Pod);
        $m!(ReplicaSet);
        $m!(Deployment);
        $m!(DaemonSet);
        $m!(Job);
        $m!(Node);
        $m!(ConfigMap);
        $m!(Secret);
    };
}

/// Every object of every kind. Dependents (Pods) are listed first, so that an owner
/// created after the listing began is still seen by the time owners are listed.
pub fn list_all(store: &Store) -> Result<Vec<Object>, StoreError> {
    let mut out = Vec::new();
    macro_rules! list {
        ($t:ident) => {
            out.extend(
                store
                    .list::<$t>(None)?
                    .0
                    .into_iter()
                    .map(Resource::into_object),
            );
        };
    }
    for_each_kind!(list);
    Ok(out)
}

fn known_kind(kind: &str) -> bool {
    let mut known = false;
    macro_rules! check {
        ($t:ident) => {
            known |= kind == $t::KIND;
        };
    }
    for_each_kind!(check);
    known
}

/// One object, by what is needed to find and delete it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

impl ObjectKey {
    pub fn of(obj: &Object) -> ObjectKey {
        let m = obj.meta();
        ObjectKey {
            kind: obj.kind(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone().unwrap_or_default(),
        }
    }

    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// What one garbage-collection pass does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete a dependent whose owners are gone (Background).
    Delete(ObjectKey),
    /// Delete a dependent of an owner deleted in the foreground: in the foreground
    /// itself, unless it is a Pod.
    DeleteForeground(ObjectKey),
    /// Remove the references to owners that are gone; the dependent has others.
    StripOwners(ObjectKey, BTreeSet<String>),
    /// The owner's blocking dependents are gone: it leaves the store.
    Finish(ObjectKey),
}

fn is_being_deleted(m: &ObjectMeta) -> bool {
    m.deletion_timestamp.is_some()
}

/// Whether a deleted object waits for its dependents. Pods use `deletionTimestamp`
/// for graceful termination, which `podgc` owns.
fn waits_in_foreground(obj: &Object) -> bool {
    !matches!(obj, Object::Pod(_))
        && is_being_deleted(obj.meta())
        && obj
            .meta()
            .finalizers
            .iter()
            .any(|f| f == FOREGROUND_DELETION)
}

/// The pass's decisions over every object in the store.
pub fn plan(objects: &[Object]) -> Vec<Action> {
    let uids: BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o.meta().uid.as_deref())
        .collect();
    let foreground: BTreeSet<&str> = objects
        .iter()
        .filter(|o| waits_in_foreground(o))
        .filter_map(|o| o.meta().uid.as_deref())
        .collect();
    // Owner uid -> does a blocking dependent remain.
    let mut blocked: BTreeMap<&str, bool> = foreground.iter().map(|u| (*u, false)).collect();
    let mut actions = Vec::new();
    for obj in objects {
        let m = obj.meta();
        if m.owner_references.is_empty() {
            continue;
        }
        for r in &m.owner_references {
            if r.block_owner_deletion == Some(true) {
                if let Some(b) = blocked.get_mut(r.uid.as_str()) {
                    *b = true;
                }
            }
        }
        if is_being_deleted(m) {
            continue;
        }
        let gone: BTreeSet<String> = m
            .owner_references
            .iter()
            .filter(|r| known_kind(&r.kind) && !uids.contains(r.uid.as_str()))
            .map(|r| r.uid.clone())
            .collect();
        let key = ObjectKey::of(obj);
        if gone.len() == m.owner_references.len() {
            actions.push(Action::Delete(key));
        } else if m
            .owner_references
            .iter()
            .any(|r| foreground.contains(r.uid.as_str()))
        {
            actions.push(Action::DeleteForeground(key));
        } else if !gone.is_empty() {
            actions.push(Action::StripOwners(key, gone));
        }
    }
    for obj in objects.iter().filter(|o| waits_in_foreground(o)) {
        let uid = obj.meta().uid.as_deref().unwrap_or_default();
        if blocked.get(uid) == Some(&false) {
            actions.push(Action::Finish(ObjectKey::of(obj)));
        }
    }
    actions
}

/// Deletes the object `key` names (that incarnation only); Pods gracefully.
fn delete(store: &Store, key: &ObjectKey) -> Result<bool, StoreError> {
    let ns = key.namespace.as_deref();
    let uid = Some(key.uid.as_str());
    if key.kind == Pod::KIND {
        let out = podgc::delete_pod(store, ns, &key.name, uid, None)?;
        return Ok(out != podgc::Deleted::NotFound);
    }
    macro_rules! del {
        ($t:ident) => {
            if key.kind == $t::KIND {
                return Ok(store.delete::<$t>(ns, &key.name, uid)?.is_some());
            }
        };
    }
    for_each_kind!(del);
    Ok(false)
}

/// Applies `f` to the metadata of the object `key` names (that incarnation only).
fn modify_meta(
    store: &Store,
    key: &ObjectKey,
    f: impl FnOnce(&mut ObjectMeta),
) -> Result<bool, StoreError> {
    let ns = key.namespace.as_deref();
    let mut f = Some(f);
    macro_rules! modify {
        ($t:ident) => {
            if key.kind == $t::KIND {
                let done = store.modify::<$t>(ns, &key.name, |o| {
                    if o.meta().uid.as_deref() == Some(key.uid.as_str()) {
                        if let Some(f) = f.take() {
                            f(o.meta_mut());
                        }
                    }
                })?;
                return Ok(done.is_some());
            }
        };
    }
    for_each_kind!(modify);
    Ok(false)
}

/// Marks an object deleted in the foreground: `deletionTimestamp` and the
/// `foregroundDeletion` finalizer. Its controller stops acting on it; `run` deletes its
/// dependents and then the object. `Ok(None)` when it does not exist.
pub fn start_foreground<T: Resource>(
    store: &Store,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<T>, StoreError> {
    store.modify::<T>(namespace, name, |o| {
        let m = o.meta_mut();
        if m.deletion_timestamp.is_none() {
            m.deletion_timestamp = Some(Time::now());
            m.deletion_grace_period_seconds = Some(0);
        }
        if !m.finalizers.iter().any(|f| f == FOREGROUND_DELETION) {
            m.finalizers.push(FOREGROUND_DELETION.into());
        }
    })
}

/// Removes every reference to the owner `uid` from its dependents (Orphan). The
/// caller marks the owner deleted first, so its controller does not replace the Pods
/// it stops seeing as its own. Returns how many dependents were released.
pub fn orphan_dependents(store: &Store, uid: &str) -> Result<usize, StoreError> {
    let mut released = 0;
    for obj in list_all(store)? {
        if !obj.meta().owner_references.iter().any(|r| r.uid == uid) {
            continue;
        }
        let changed = modify_meta(store, &ObjectKey::of(&obj), |m| {
            m.owner_references.retain(|r| r.uid != uid)
        })?;
        if changed {
            released += 1;
        }
    }
    Ok(released)
}

/// One pass: looks at every object and carries out `plan`.
/// One pass: acts on every dependent whose owners are gone or deleted in the
/// foreground. Returns how many actions took effect, and whether an owner may still be
/// waiting for its dependents afterwards (then Pod events wake the next pass).
pub fn collect(store: &Store) -> Result<(usize, bool), StoreError> {
    let objects = list_all(store)?;
    let actions = plan(&objects);
    let finished: BTreeSet<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Finish(key) => Some(key.uid.as_str()),
            _ => None,
        })
        .collect();
    let waiting = actions
        .iter()
        .any(|a| matches!(a, Action::DeleteForeground(_)))
        || objects.iter().any(|o| {
            waits_in_foreground(o) && !finished.contains(o.meta().uid.as_deref().unwrap_or(""))
        });
    let mut done = 0;
    for action in &actions {
        let acted = match action {
            Action::Delete(key) => {
                let gone = delete(store, key)?;
                if gone {
                    info!(
                        "garbage collector: deleting {} (its owner is gone)",
                        key.describe()
                    );
                }
                gone
            }
            Action::DeleteForeground(key) if key.kind == Pod::KIND => delete(store, key)?,
            Action::DeleteForeground(key) => modify_meta(store, key, |m| {
                if m.deletion_timestamp.is_none() {
                    m.deletion_timestamp = Some(Time::now());
                    m.deletion_grace_period_seconds = Some(0);
                }
                if !m.finalizers.iter().any(|f| f == FOREGROUND_DELETION) {
                    m.finalizers.push(FOREGROUND_DELETION.into());
                }
            })?,
            Action::StripOwners(key, uids) => modify_meta(store, key, |m| {
                m.owner_references.retain(|r| !uids.contains(&r.uid))
            })?,
            Action::Finish(key) => {
                let gone = delete(store, key)?;
                if gone {
                    info!(
                        "garbage collector: deleted {} (its dependents are gone)",
                        key.describe()
                    );
                }
                gone
            }
        };
        if acted {
            done += 1;
        }
    }
    Ok((done, waiting))
}

#[derive(Debug, Clone)]
pub struct GcConfig {
    pub resync: Duration,
    /// Wait this long after an event for more before a pass.
    pub debounce: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            resync: Duration::from_secs(30),
            debounce: Duration::from_millis(50),
        }
    }
}

/// Whether an event may leave something to collect. A pass lists every object, so
/// the frequent Pod events trigger one only while some owner waits in the foreground.
fn wakes(ev: &WatchEvent, waiting: bool) -> bool {
    match (&*ev.object, ev.change) {
        (Object::Pod(_), Change::Deleted) => waiting,
        (Object::Pod(p), _) => waiting && !p.metadata.owner_references.is_empty(),
        (_, Change::Deleted) => true,
        (o, _) => is_being_deleted(o.meta()),
    }
}

pub async fn run(store: Arc<Store>, cancel: CancellationToken) {
    run_with(store, GcConfig::default(), cancel).await
}

pub async fn run_with(store: Arc<Store>, config: GcConfig, cancel: CancellationToken) {
    let mut events = store.subscribe();
    let mut resync = tokio::time::interval(config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last pass left an owner waiting for its dependents.
    let mut waiting = false;
    let mut last_pass = Duration::ZERO;
    loop {
        let due = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = resync.tick() => true,
            ev = events.recv() => match ev {
                Ok(ev) => wakes(&ev, waiting),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
        };
        if !due {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(crate::workqueue::pause(config.debounce, last_pass)) => {}
        }
        // The pass below sees everything these events announced.
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = events.try_recv() {}
        let started = std::time::Instant::now();
        waiting = match collect(&store) {
            Ok((_, waiting)) => waiting,
            Err(e) => {
                warn!("garbage collector: {e}");
                true
            }
        };
        last_pass = started.elapsed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::OwnerReference;

    fn owner_ref(kind: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: "owner".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn pod(name: &str, owners: Vec<OwnerReference>) -> Object {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.owner_references = owners;
        Object::Pod(p)
    }

    fn daemon_set(uid: &str, foreground: bool) -> Object {
        let mut d = DaemonSet::default();
        d.metadata.name = "ds".into();
        d.metadata.namespace = Some("default".into());
        d.metadata.uid = Some(uid.into());
        if foreground {
            d.metadata.deletion_timestamp = Some(Time::now());
            d.metadata.finalizers.push(FOREGROUND_DELETION.into());
        }
        Object::DaemonSet(d)
    }

    fn key(name: &str, kind: &'static str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: Some("default".into()),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    #[test]
    fn dependents_of_gone_owners_are_deleted_or_released() {
        let objects = vec![
            pod("orphan", vec![owner_ref("DaemonSet", "gone", true)]),
            pod("kept", vec![owner_ref("DaemonSet", "ds-1", true)]),
            pod(
                "shared",
                vec![
                    owner_ref("DaemonSet", "ds-1", true),
                    owner_ref("Job", "gone", false),
                ],
            ),
            // An owner of a kind this controller does not store is never taken for gone.
            pod("foreign", vec![owner_ref("CronTab", "unknown", true)]),
            pod("free", vec![]),
            daemon_set("ds-1", false),
        ];
        assert_eq!(
            plan(&objects),
            vec![
                Action::Delete(key("orphan", "Pod")),
                Action::StripOwners(key("shared", "Pod"), ["gone".to_string()].into()),
            ]
        );
    }

    #[test]
    fn foreground_owner_waits_for_blocking_dependents() {
        let objects = vec![
            pod("blocking", vec![owner_ref("DaemonSet", "ds-1", true)]),
            pod("loose", vec![owner_ref("DaemonSet", "ds-1", false)]),
            daemon_set("ds-1", true),
        ];
        assert_eq!(
            plan(&objects),
            vec![
                Action::DeleteForeground(key("blocking", "Pod")),
                Action::DeleteForeground(key("loose", "Pod")),
            ]
        );
        // A terminating blocking Pod still holds the owner.
        let mut terminating = pod("blocking", vec![owner_ref("DaemonSet", "ds-1", true)]);
        terminating.meta_mut().deletion_timestamp = Some(Time::now());
        assert_eq!(plan(&[terminating, daemon_set("ds-1", true)]), vec![]);
        // Only non-blocking ones left: the owner goes.
        let loose = pod("loose", vec![owner_ref("DaemonSet", "ds-1", false)]);
        let mut finished = key("ds", "DaemonSet");
        finished.uid = "ds-1".into();
        assert_eq!(
            plan(&[loose.clone(), daemon_set("ds-1", true)]),
            vec![
                Action::DeleteForeground(key("loose", "Pod")),
                Action::Finish(finished)
            ]
        );
    }

    #[test]
    fn propagation_policy_names() {
        assert_eq!(Propagation::parse("Orphan"), Ok(Propagation::Orphan));
        assert!(Propagation::parse("orphan")
            .unwrap_err()
            .contains("not one of Background, Foreground, Orphan"));
    }
}
