//! Taints (on Nodes) and tolerations (on Pods), core/v1: what they are, whether a
//! toleration matches a taint, and their validation. A taint keeps Pods away from a node
//! (`NoSchedule`, softly `PreferNoSchedule`) or off it (`NoExecute`, after the Pod's
//! `tolerationSeconds`); the scheduler and the node lifecycle controller decide with the
//! functions here.

use serde::{Deserialize, Serialize};

use crate::meta::Time;
use crate::pod::Pod;
use crate::validate::{label_key, label_value};

pub const NO_SCHEDULE: &str = "NoSchedule";
pub const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// The node's Ready condition is `False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The node's Ready condition is `Unknown`: the controller has lost contact.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The node is cordoned (`spec.unschedulable`).
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(default)]
    pub effect: String,
    /// When a `NoExecute` taint was added: `tolerationSeconds` count from here.
    #[serde(default)]
    pub time_added: Option<Time>,
}

impl Taint {
    pub fn new(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: effect.into(),
            time_added: None,
        }
    }

    /// `key=value:Effect`, as kubectl prints a taint.
    pub fn to_kubectl(&self) -> String {
        match self.value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => format!("{}={v}:{}", self.key, self.effect),
            None => format!("{}:{}", self.key, self.effect),
        }
    }

    /// Same key and effect: Kubernetes allows one taint per pair.
    pub fn same_slot(&self, other: &Taint) -> bool {
        self.key == other.key && self.effect == other.effect
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Empty with `Exists` matches every key.
    #[serde(default)]
    pub key: Option<String>,
    /// `Equal` (the default) or `Exists`.
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// Empty matches every effect.
    #[serde(default)]
    pub effect: Option<String>,
    /// For `NoExecute`: how long the Pod stays on a node once the taint appears; unset
    /// means for ever.
    #[serde(default)]
    pub toleration_seconds: Option<i64>,
}

impl Toleration {
    /// `key op value:Effect for Ns`, as `kubectl describe pod` lists tolerations.
    pub fn to_kubectl(&self) -> String {
        let mut s = self.key.clone().unwrap_or_default();
        let exists = self.operator.as_deref() == Some("Exists");
        if let Some(v) = self.value.as_deref().filter(|v| !v.is_empty() && !exists) {
            s.push('=');
            s.push_str(v);
        }
        if let Some(e) = self.effect.as_deref().filter(|e| !e.is_empty()) {
            s.push(':');
            s.push_str(e);
        }
        if exists {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str("op=Exists");
        }
        if let Some(secs) = self.toleration_seconds {
            s.push_str(&format!(" for {secs}s"));
        }
        s
    }
}

/// Whether `toleration` matches `taint`, by Kubernetes' rules: the effect is empty or
/// equal; the key is equal, or empty with `Exists` (which matches every taint); with
/// `Exists` any value, with `Equal` (the default) the same value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    let exists = toleration.operator.as_deref() == Some("Exists");
    if key.is_empty() {
        return exists;
    }
    if key != taint.key {
        return false;
    }
    exists || toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
}

/// Whether any of `tolerations` matches `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first of `taints` with `effect` that none of `tolerations` matches.
pub fn first_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effect: &str,
) -> Option<&'a Taint> {
    taints
        .iter()
        .find(|t| t.effect == effect && !tolerated(tolerations, t))
}

/// Whether `pod` belongs to a DaemonSet (its controller is one): such Pods belong on
/// their node whatever its state, so they tolerate the node-condition taints.
pub fn is_daemon_set_pod(pod: &Pod) -> bool {
    pod.metadata
        .controller()
        .is_some_and(|r| r.kind == "DaemonSet")
}

/// The Pod's tolerations plus those Kubernetes' DaemonSet controller gives its Pods
/// (not-ready and unreachable for ever, and cordoned nodes), so a DaemonSet Pod is never
/// evicted by the lifecycle controller, whoever created it.
pub fn effective_tolerations(pod: &Pod) -> Vec<Toleration> {
    let mut all = pod.spec.tolerations.clone();
    if is_daemon_set_pod(pod) {
        for (key, effect) in [
            (TAINT_NOT_READY, NO_EXECUTE),
            (TAINT_UNREACHABLE, NO_EXECUTE),
            (TAINT_UNSCHEDULABLE, NO_SCHEDULE),
        ] {
            all.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Toleration::default()
            });
        }
    }
    all
}

/// Problems with a Node's `spec.taints`, as `(field, message)`.
pub fn validate_taints(field: &str, taints: &[Taint]) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    for (i, t) in taints.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if let Err(e) = label_key(&t.key) {
            errs.push((format!("{f}.key"), e));
        }
        if let Some(v) = &t.value {
            if let Err(e) = label_value(v) {
                errs.push((format!("{f}.value"), e));
            }
        }
        if !matches!(
            t.effect.as_str(),
            NO_SCHEDULE | PREFER_NO_SCHEDULE | NO_EXECUTE
        ) {
            errs.push((
                format!("{f}.effect"),
                format!(
                    "{:?} is not one of NoSchedule, PreferNoSchedule, NoExecute",
                    t.effect
                ),
            ));
        }
        if taints[..i].iter().any(|o| o.same_slot(t)) {
            errs.push((
                f,
                format!(
                    "Duplicate value: taints must be unique by key and effect ({}:{})",
                    t.key, t.effect
                ),
            ));
        }
    }
    errs
}

/// Problems with a Pod's `spec.tolerations`, as `(field, message)`.
pub fn validate_tolerations(field: &str, tolerations: &[Toleration]) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let key = t.key.as_deref().unwrap_or("");
        if !key.is_empty() {
            if let Err(e) = label_key(key) {
                errs.push((format!("{f}.key"), e));
            }
        }
        let value = t.value.as_deref().unwrap_or("");
        match t.operator.as_deref().unwrap_or("Equal") {
            "Equal" => {
                if key.is_empty() {
                    errs.push((
                        format!("{f}.operator"),
                        "must be Exists when key is empty, which means \"match all values and all keys\"".into(),
                    ));
                }
                if let Err(e) = label_value(value) {
                    errs.push((format!("{f}.value"), e));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push((
                        format!("{f}.value"),
                        "must be empty when operator is Exists".into(),
                    ));
                }
            }
            other => errs.push((
                format!("{f}.operator"),
                format!("{other:?} is not one of Equal, Exists"),
            )),
        }
        let effect = t.effect.as_deref().unwrap_or("");
        if !matches!(effect, "" | NO_SCHEDULE | PREFER_NO_SCHEDULE | NO_EXECUTE) {
            errs.push((
                format!("{f}.effect"),
                format!("{effect:?} is not one of NoSchedule, PreferNoSchedule, NoExecute"),
            ));
        }
        if let Some(s) = t.toleration_seconds {
            if effect != NO_EXECUTE {
                errs.push((
                    format!("{f}.effect"),
                    "must be NoExecute when tolerationSeconds is set".into(),
                ));
            }
            if s < 0 {
                errs.push((format!("{f}.tolerationSeconds"), "must be 0 or more".into()));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: None,
        }
    }

    #[test]
    fn matching_follows_kubernetes_rules() {
        let gpu = taint("gpu", Some("yes"), NO_SCHEDULE);
        assert!(tolerates(&tol("gpu", "Equal", "yes", NO_SCHEDULE), &gpu));
        assert!(
            tolerates(&tol("gpu", "", "yes", ""), &gpu),
            "Equal is the default; empty effect matches all"
        );
        assert!(!tolerates(&tol("gpu", "Equal", "no", NO_SCHEDULE), &gpu));
        assert!(!tolerates(&tol("gpu", "Equal", "yes", NO_EXECUTE), &gpu));
        assert!(tolerates(&tol("gpu", "Exists", "", ""), &gpu));
        assert!(!tolerates(&tol("tpu", "Exists", "", ""), &gpu));
        assert!(
            tolerates(&tol("", "Exists", "", ""), &gpu),
            "empty key with Exists matches everything"
        );
        assert!(!tolerates(&tol("", "Equal", "", ""), &gpu));
        // A taint without a value is matched by Equal with an empty value.
        let unreachable = taint(TAINT_UNREACHABLE, None, NO_EXECUTE);
        assert!(tolerates(
            &tol(TAINT_UNREACHABLE, "", "", NO_EXECUTE),
            &unreachable
        ));
    }

    #[test]
    fn first_untolerated_only_looks_at_the_effect_asked() {
        let taints = [
            taint("a", None, PREFER_NO_SCHEDULE),
            taint("b", Some("1"), NO_SCHEDULE),
            taint("c", None, NO_SCHEDULE),
        ];
        let tols = [tol("b", "Exists", "", "")];
        assert_eq!(
            first_untolerated(&taints, &tols, NO_SCHEDULE),
            Some(&taints[2])
        );
        assert_eq!(first_untolerated(&taints, &tols, NO_EXECUTE), None);
        assert_eq!(
            first_untolerated(&taints, &tols, PREFER_NO_SCHEDULE),
            Some(&taints[0])
        );
    }

    #[test]
    fn taints_are_validated() {
        let errs = validate_taints(
            "spec.taints",
            &[
                taint("dedicated", Some("db"), NO_SCHEDULE),
                taint("bad key!", None, "Sometimes"),
                taint("dedicated", Some("web"), NO_SCHEDULE),
            ],
        );
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.taints[1].key",
                "spec.taints[1].effect",
                "spec.taints[2]"
            ]
        );
        assert!(errs[1].1.contains("\"Sometimes\" is not one of"));
        assert!(validate_taints("spec.taints", &[taint("x", None, NO_EXECUTE)]).is_empty());
    }

    #[test]
    fn tolerations_are_validated() {
        let mut with_secs = tol(TAINT_UNREACHABLE, "Exists", "", NO_EXECUTE);
        with_secs.toleration_seconds = Some(60);
        assert!(validate_tolerations("spec.tolerations", &[with_secs.clone()]).is_empty());
        let mut wrong_effect = tol("k", "Exists", "", NO_SCHEDULE);
        wrong_effect.toleration_seconds = Some(-1);
        let errs = validate_tolerations(
            "spec.tolerations",
            &[
                tol("", "Equal", "", ""),
                tol("k", "Exists", "v", ""),
                tol("k", "In", "", "Never"),
                wrong_effect,
            ],
        );
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.tolerations[0].operator",
                "spec.tolerations[1].value",
                "spec.tolerations[2].operator",
                "spec.tolerations[2].effect",
                "spec.tolerations[3].effect",
                "spec.tolerations[3].tolerationSeconds",
            ]
        );
    }

    #[test]
    fn manifests_carry_taints_and_tolerations() {
        let objs = crate::manifest::parse(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: web, image: busybox}]
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 600}
  - {key: dedicated, value: db, effect: NoSchedule}
---
apiVersion: v1
kind: Node
metadata: {name: pi-1}
spec:
  taints: [{key: dedicated, value: db, effect: NoSchedule}]
"#,
        )
        .unwrap();
        for o in &objs {
            crate::validate::validate(o).unwrap();
        }
        let crate::Object::Pod(p) = &objs[0] else {
            panic!("not a Pod")
        };
        assert_eq!(p.spec.tolerations[0].toleration_seconds, Some(600));
        let crate::Object::Node(n) = &objs[1] else {
            panic!("not a Node")
        };
        assert!(tolerates(&p.spec.tolerations[1], &n.spec.taints[0]));
    }

    #[test]
    fn kubectl_forms() {
        assert_eq!(
            taint("a", Some("b"), NO_SCHEDULE).to_kubectl(),
            "a=b:NoSchedule"
        );
        assert_eq!(
            taint(TAINT_UNREACHABLE, None, NO_EXECUTE).to_kubectl(),
            "node.kubernetes.io/unreachable:NoExecute"
        );
        let mut t = tol(TAINT_NOT_READY, "Exists", "", NO_EXECUTE);
        t.toleration_seconds = Some(120);
        assert_eq!(
            t.to_kubectl(),
            "node.kubernetes.io/not-ready:NoExecute op=Exists for 120s"
        );
    }
}
