//! Namespaces as the store enforces them: a namespaced object is created only in a
//! Namespace that exists and is not terminating (as the API server's admission does),
//! and a terminating Namespace's contents can be listed and removed kind by kind.

use punnet_api::{Namespace, Resource};

use super::{Store, StoreError};

impl Store {
    /// Refuses a create into a missing or terminating namespace. Called under the lock.
    pub(super) fn check_namespace<T: Resource>(
        &self,
        key: &str,
        ns: &str,
    ) -> Result<(), StoreError> {
        match self.read::<Namespace>(ns)? {
            None => Err(StoreError::NamespaceNotFound {
                namespace: ns.to_string(),
            }),
            Some(n) if n.is_terminating() => Err(StoreError::NamespaceTerminating {
                kind: T::KIND,
                key: key.to_string(),
                namespace: ns.to_string(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Every object left in namespace `ns`, as (plural, `ns/name`).
    pub fn namespace_contents(&self, ns: &str) -> Result<Vec<(&'static str, String)>, StoreError> {
        self.keys_in_namespace(ns)
    }

    /// Removes one object found by `namespace_contents`, whatever its kind. Whether it
    /// was there.
    pub fn remove_namespaced(&self, plural: &'static str, key: &str) -> Result<bool, StoreError> {
        let _guard = self.lock();
        self.remove_entry(plural, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{ConfigMap, Pod, DEFAULT_NAMESPACE};

    fn config_map(ns: &str, name: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = name.into();
        c.metadata.namespace = Some(ns.into());
        c
    }

    #[test]
    fn creates_need_an_active_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store
            .get::<Namespace>(None, DEFAULT_NAMESPACE)
            .unwrap()
            .is_some());
        store.create(config_map("default", "a")).unwrap();
        let err = store.create(config_map("team", "a")).unwrap_err();
        assert_eq!(err.to_string(), "namespaces \"team\" not found");

        store.create(Namespace::new("team")).unwrap();
        store.create(config_map("team", "a")).unwrap();
        store
            .modify::<Namespace>(None, "team", |n| {
                n.status.phase = Some(punnet_api::namespace::PHASE_TERMINATING.into())
            })
            .unwrap();
        let err = store.create(config_map("team", "b")).unwrap_err();
        assert!(
            err.to_string().contains(
                "unable to create new content in namespace team because it is being terminated"
            ),
            "{err}"
        );

        let mut rx = store.subscribe();
        let contents = store.namespace_contents("team").unwrap();
        assert_eq!(contents, vec![("configmaps", "team/a".to_string())]);
        assert!(store.remove_namespaced("configmaps", "team/a").unwrap());
        assert!(store.get::<ConfigMap>(Some("team"), "a").unwrap().is_none());
        let ev = rx.try_recv().unwrap();
        assert_eq!(ev.change, super::super::Change::Deleted);
        assert_eq!(ev.object.meta().key(), "team/a");
        assert!(store.namespace_contents("team").unwrap().is_empty());
        assert!(store.list::<Pod>(Some("team")).unwrap().0.is_empty());
    }
}
