//! The Pod CIDR controller: gives every Node a range of the cluster CIDR in
//! `spec.podCIDR` as soon as it registers (the agent's CNI bridge takes Pod IPs from
//! it), using the pure plan of `podcidr`. One task decides, so two Nodes never get the
//! same range; a Node left without one (the cluster CIDR is full) carries a
//! `NetworkUnavailable` condition saying so until a range frees up.

use std::sync::Arc;
use std::time::Duration;

use punnet_api::{Node, Object, Time};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::podcidr::{self, PodCidrs};
use crate::store::{Change, Store, StoreError, WatchEvent};

/// Changes that can need a decision: a Node without a range, and a deleted Node (its
/// range is free).
fn is_relevant(ev: &WatchEvent) -> bool {
    match &*ev.object {
        Object::Node(n) => ev.change == Change::Deleted || n.spec.pod_cidr.is_none(),
        _ => false,
    }
}

/// One pass over every Node. Returns how many got a range.
pub fn assign(store: &Store, cidrs: &PodCidrs) -> Result<usize, StoreError> {
    let (nodes, _) = store.list::<Node>(None)?;
    let mut assigned = 0;
    for (name, range) in cidrs.plan(&nodes) {
        let now = Time::now();
        match range {
            Some(range) => {
                let mut done = false;
                store.modify::<Node>(None, &name, |n| {
                    // A person may have set one since the list.
                    if n.spec.pod_cidr.is_some() {
                        return;
                    }
                    n.spec.pod_cidr = Some(range.to_string());
                    podcidr::set_network_condition(n, None, now);
                    done = true;
                })?;
                if done {
                    info!("node {name}: assigned Pod CIDR {range}");
                    assigned += 1;
                }
            }
            None => {
                let message = cidrs.full_message();
                let mut newly = false;
                store.modify::<Node>(None, &name, |n| {
                    if n.spec.pod_cidr.is_none() {
                        newly = n.condition(podcidr::CONDITION).is_none();
                        podcidr::set_network_condition(n, Some(&message), now);
                    }
                })?;
                if newly {
                    warn!("node {name}: {message}");
                }
            }
        }
    }
    Ok(assigned)
}

/// Assigns ranges until `cancel` fires.
pub async fn run(store: Arc<Store>, cidrs: PodCidrs, cancel: CancellationToken) {
    let mut events = store.subscribe();
    let mut dirty = true;
    loop {
        if dirty {
            tokio::select! {
                _ = cancel.cancelled() => return,
                // Nodes registering together are one pass.
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            while let Ok(_) | Err(TryRecvError::Lagged(_)) = events.try_recv() {}
            if let Err(e) = assign(&store, &cidrs) {
                warn!("Pod CIDR allocation: {e}");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            ev = events.recv() => match ev {
                Ok(ev) => dirty = is_relevant(&ev),
                Err(RecvError::Lagged(_)) => dirty = true,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n
    }

    #[test]
    fn nodes_get_distinct_ranges_kept_across_reopen_and_freed_on_delete() {
        let dir = tempfile::tempdir().unwrap();
        let cidrs = PodCidrs::new("10.42.0.0/23", 24).unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.create(node("a")).unwrap();
            store.create(node("b")).unwrap();
            assert_eq!(assign(&store, &cidrs).unwrap(), 2);
            store.create(node("c")).unwrap();
            assert_eq!(assign(&store, &cidrs).unwrap(), 0);
            let c: Node = store.get(None, "c").unwrap().unwrap();
            let cond = c.condition(podcidr::CONDITION).unwrap();
            assert_eq!(cond.reason.as_deref(), Some(podcidr::REASON_NO_CIDR));
            // Nothing changes on a second pass: no write.
            let rev = store.revision();
            assign(&store, &cidrs).unwrap();
            assert_eq!(store.revision(), rev);
        }
        let store = Store::open(dir.path()).unwrap();
        let cidr = |name: &str| {
            store
                .get::<Node>(None, name)
                .unwrap()
                .unwrap()
                .spec
                .pod_cidr
        };
        assert_eq!(cidr("a").as_deref(), Some("10.42.0.0/24"));
        assert_eq!(cidr("b").as_deref(), Some("10.42.1.0/24"));
        store.delete::<Node>(None, "a", None).unwrap();
        assert_eq!(assign(&store, &cidrs).unwrap(), 1);
        assert_eq!(cidr("c").as_deref(), Some("10.42.0.0/24"));
        let c: Node = store.get(None, "c").unwrap().unwrap();
        assert!(c.condition(podcidr::CONDITION).is_none());
    }
}
