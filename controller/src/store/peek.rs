//! A small view of a stored Pod for `Store::visit_where`: the fields walks over every
//! Pod filter on (node, controlling owner, deletion, phase), read without decoding and
//! allocating the rest (a decoded Pod is ~7 KiB; 50,000 of them at 5,000 boards).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct PodView {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    owner_references: Vec<OwnerRef>,
    /// Kept as raw JSON: only its presence matters.
    #[serde(default)]
    deletion_timestamp: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
struct OwnerRef {
    kind: String,
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    controller: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    node_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    phase: Option<String>,
}

/// A Pod's controlling owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controller<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl PodView {
    pub fn namespace_or_default(&self) -> &str {
        self.metadata
            .namespace
            .as_deref()
            .unwrap_or(punnet_api::DEFAULT_NAMESPACE)
    }

    pub fn node(&self) -> Option<&str> {
        self.spec.node_name.as_deref()
    }

    /// The owner reference with `controller: true`, as `ObjectMeta::controller` finds it.
    pub fn controller(&self) -> Option<Controller<'_>> {
        self.metadata
            .owner_references
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| Controller {
                kind: &r.kind,
                name: &r.name,
                uid: &r.uid,
            })
    }

    /// Marked for deletion (`podgc::is_terminating`).
    pub fn terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// The phase as `Pod::phase` reports it.
    pub fn phase(&self) -> &str {
        self.status
            .phase
            .as_deref()
            .unwrap_or(punnet_api::phase::PENDING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{OwnerReference, Pod, Time};

    fn view(pod: &Pod) -> PodView {
        serde_json::from_slice(&serde_json::to_vec(pod).unwrap()).unwrap()
    }

    #[test]
    fn the_view_reads_what_the_full_decode_reads() {
        let mut pod = Pod::default();
        pod.metadata.name = "web-1".into();
        pod.metadata.namespace = Some("team".into());
        pod.spec.node_name = Some("pi-3".into());
        pod.metadata.deletion_timestamp = Some(Time::now());
        pod.status.phase = Some("Running".into());
        pod.metadata.owner_references = vec![
            OwnerReference {
                kind: "Deployment".into(),
                name: "other".into(),
                ..Default::default()
            },
            OwnerReference {
                kind: "ReplicaSet".into(),
                name: "web-5d8f".into(),
                uid: "u-1".into(),
                controller: Some(true),
                ..Default::default()
            },
        ];
        let v = view(&pod);
        assert_eq!(v.namespace_or_default(), "team");
        assert_eq!(v.node(), Some("pi-3"));
        let c = v.controller().unwrap();
        assert_eq!((c.kind, c.name, c.uid), ("ReplicaSet", "web-5d8f", "u-1"));
        assert_eq!(
            pod.metadata.controller().map(|r| r.name.as_str()),
            Some(c.name)
        );
        assert!(v.terminating());
        assert_eq!(v.phase(), pod.phase());

        let bare = view(&Pod::default());
        assert_eq!(bare.namespace_or_default(), "default");
        assert_eq!(bare.node(), None);
        assert!(bare.controller().is_none());
        assert!(!bare.terminating());
        assert_eq!(bare.phase(), Pod::default().phase());
    }
}
