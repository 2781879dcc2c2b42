//! The small static documents kubectl reads before anything else: `/version` and the
//! API discovery (`/api`, `/apis`, `/api/v1`, `/apis/apps/v1`), which tell it which
//! kinds exist, their plural names, scope, verbs and short names.

use axum::Json;
use punnet_api::metrics::{METRICS_API_VERSION, METRICS_GROUP};
use punnet_api::{
    ConfigMap, DaemonSet, Deployment, Job, Namespace, Node, Pod, ReplicaSet, Resource, Secret,
};
use serde_json::{json, Value};

/// The verbs every served kind supports.
const VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];

pub async fn healthz() -> &'static str {
    "ok"
}

/// Open, like `/healthz`, for status pages and monitoring: whether the controller serves
/// without TLS (`--allow-plaintext`).
pub async fn status(
    axum::extract::State(state): axum::extract::State<crate::http::ApiState>,
) -> Json<Value> {
    Json(json!({ "status": "ok", "plaintext": state.transport.plaintext }))
}

pub async fn version() -> Json<Value> {
    Json(json!({
        "major": env!("CARGO_PKG_VERSION_MAJOR"),
        "minor": env!("CARGO_PKG_VERSION_MINOR"),
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION")),
        "platform": format!("linux/{}", go_arch(std::env::consts::ARCH)),
    }))
}

/// Go's name for a CPU architecture, which Kubernetes uses everywhere.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        other => other,
    }
}

pub async fn core_versions() -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    }))
}

pub async fn groups() -> Json<Value> {
    Json(json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [apps_group_value(), metrics_group_value(), batch_group_value()],
    }))
}

pub async fn apps_group() -> Json<Value> {
    let mut group = apps_group_value();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    Json(group)
}

fn apps_group_value() -> Value {
    let version = json!({"groupVersion": "apps/v1", "version": "v1"});
    json!({
        "name": "apps",
        "versions": [version.clone()],
        "preferredVersion": version,
    })
}

pub async fn metrics_group() -> Json<Value> {
    let mut group = metrics_group_value();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    Json(group)
}

fn metrics_group_value() -> Value {
    let version = json!({"groupVersion": METRICS_API_VERSION, "version": "v1beta1"});
    json!({
        "name": METRICS_GROUP,
        "versions": [version.clone()],
        "preferredVersion": version,
    })
}

/// Read-only, as metrics-server serves them.
pub async fn metrics_v1beta1() -> Json<Value> {
    let entry = |name: &str, kind: &str, namespaced: bool| json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"]});
    Json(resource_list(
        METRICS_API_VERSION,
        vec![
            entry("nodes", "NodeMetrics", false),
            entry("pods", "PodMetrics", true),
        ],
    ))
}

pub async fn core_v1() -> Json<Value> {
    Json(resource_list(
        "v1",
        vec![
            resource::<Pod>("pod", "po", true),
            json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}),
            resource::<Node>("node", "no", false),
            resource::<ConfigMap>("configmap", "cm", false),
            resource::<Secret>("secret", "", false),
            resource::<Namespace>("namespace", "ns", false),
            json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}),
            json!({"name": "events", "singularName": "event", "namespaced": true, "kind": "Event", "verbs": ["list", "watch"], "shortNames": ["ev"]}),
        ],
    ))
}

pub async fn apps_v1() -> Json<Value> {
    Json(resource_list(
        "apps/v1",
        vec![
            resource::<Deployment>("deployment", "deploy", true),
            resource::<DaemonSet>("daemonset", "ds", true),
            resource::<ReplicaSet>("replicaset", "rs", true),
        ],
    ))
}

pub async fn batch_group() -> Json<Value> {
    let mut group = batch_group_value();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    Json(group)
}

fn batch_group_value() -> Value {
    let version = json!({"groupVersion": "batch/v1", "version": "v1"});
    json!({
        "name": "batch",
        "versions": [version.clone()],
        "preferredVersion": version,
    })
}

pub async fn batch_v1() -> Json<Value> {
    Json(resource_list(
        "batch/v1",
        vec![resource::<Job>("job", "", true)],
    ))
}

fn resource_list(group_version: &str, resources: Vec<Value>) -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// One kind's entry; `short` is its short name (`""`: none, as for Secrets).
fn resource<T: Resource>(singular: &str, short: &str, in_all: bool) -> Value {
    let mut r = json!({
        "name": T::PLURAL,
        "singularName": singular,
        "namespaced": T::NAMESPACED,
        "kind": T::KIND,
        "verbs": VERBS,
    });
    if !short.is_empty() {
        r["shortNames"] = json!([short]);
    }
    if in_all {
        // `kubectl get all` lists the kinds in the "all" category.
        r["categories"] = json!(["all"]);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resource_lists_name_kinds_scope_and_short_names() {
        let Json(core) = core_v1().await;
        assert_eq!(core["groupVersion"], "v1");
        assert_eq!(core["resources"][0]["name"], "pods");
        assert_eq!(core["resources"][0]["shortNames"][0], "po");
        assert_eq!(core["resources"][2]["namespaced"], false);
        assert_eq!(core["resources"][3]["shortNames"][0], "cm");
        assert_eq!(core["resources"][4]["name"], "secrets");
        assert!(core["resources"][4].get("shortNames").is_none());
        let Json(apps) = apps_v1().await;
        assert_eq!(apps["resources"][0]["kind"], "Deployment");
        assert_eq!(apps["resources"][0]["shortNames"][0], "deploy");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("arm"), "arm");
    }
}
