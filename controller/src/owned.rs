//! One read of a namespace's Pods and ReplicaSets per controller pass, grouped by
//! controlling owner: each reconcile of the pass then looks only at its own objects
//! instead of listing (and decoding) the whole namespace again. Objects of other owners
//! may be a few milliseconds stale; a reconcile only acts on its own.

use std::collections::HashMap;

use punnet_api::{Pod, ReplicaSet, Resource};

use crate::store::{Store, StoreError};

/// Objects of one kind by `(owner kind, owner name)` of their controlling owner.
pub struct Owned<T> {
    by_owner: HashMap<(String, String), Vec<T>>,
}

impl<T: Resource> Owned<T> {
    pub fn new(items: Vec<T>) -> Owned<T> {
        let mut by_owner: HashMap<(String, String), Vec<T>> = HashMap::new();
        for item in items {
            if let Some(owner) = item.meta().controller() {
                let key = (owner.kind.clone(), owner.name.clone());
                by_owner.entry(key).or_default().push(item);
            }
        }
        Owned { by_owner }
    }

    /// Those whose controlling owner is the `O` named `name` (any incarnation).
    pub fn of<O: Resource>(&self, name: &str) -> &[T] {
        self.by_owner
            .get(&(O::KIND.to_string(), name.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// A namespace's owned Pods and ReplicaSets as read at the start of a pass.
pub struct Snapshot {
    pub pods: Owned<Pod>,
    pub sets: Owned<ReplicaSet>,
}

impl Snapshot {
    pub fn read(store: &Store, namespace: &str) -> Result<Snapshot, StoreError> {
        let (pods, _) = store.list::<Pod>(Some(namespace))?;
        let (sets, _) = store.list::<ReplicaSet>(Some(namespace))?;
        Ok(Snapshot {
            pods: Owned::new(pods),
            sets: Owned::new(sets),
        })
    }
}

/// Runs `reconcile` for each key with one snapshot per namespace (keys come sorted by
/// namespace). A namespace that cannot be read is reported once per key by `fallback`.
pub fn by_namespace<R, E>(
    store: &Store,
    keys: std::collections::BTreeSet<(String, String)>,
    mut reconcile: impl FnMut(&str, &str, &Snapshot) -> Result<R, E>,
    mut fallback: impl FnMut(&str, &str) -> Result<R, E>,
) -> Vec<((String, String), Result<R, E>)> {
    let mut out = Vec::new();
    let mut current: Option<(String, Option<Snapshot>)> = None;
    for key in keys {
        if current.as_ref().map(|(ns, _)| ns) != Some(&key.0) {
            current = Some((key.0.clone(), Snapshot::read(store, &key.0).ok()));
        }
        let result = match current.as_ref().and_then(|(_, s)| s.as_ref()) {
            Some(snap) => reconcile(&key.0, &key.1, snap),
            None => fallback(&key.0, &key.1),
        };
        out.push((key, result));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{Deployment, OwnerReference};

    fn pod(name: &str, owner: Option<(&str, &str)>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        if let Some((kind, owner)) = owner {
            p.metadata.owner_references.push(OwnerReference {
                kind: kind.into(),
                name: owner.into(),
                controller: Some(true),
                ..Default::default()
            });
        }
        p
    }

    #[test]
    fn objects_are_grouped_by_controlling_owner() {
        let owned = Owned::new(vec![
            pod("a", Some(("ReplicaSet", "web-1"))),
            pod("b", Some(("ReplicaSet", "web-1"))),
            pod("c", Some(("Deployment", "web-1"))),
            pod("d", None),
        ]);
        let names = |ps: &[Pod]| {
            ps.iter()
                .map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(owned.of::<ReplicaSet>("web-1")), ["a", "b"]);
        assert_eq!(names(owned.of::<Deployment>("web-1")), ["c"]);
        assert!(owned.of::<ReplicaSet>("other").is_empty());
    }
}
