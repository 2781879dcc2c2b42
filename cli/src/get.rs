//! `punnet get`: lists or named objects as kubectl-style tables, or as JSON, YAML or
//! `kind/name` lines. Tables are built by pure functions of the typed objects so they
//! are tested without a server.

use std::io::Write;

use chrono::{DateTime, Utc};
use punnet_api::{ConfigMap, Deployment, Namespace, Node, Pod, ReplicaSet, Secret};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::age::age;
use crate::args::{GetArgs, OutputFormat};
use crate::error::{Error, Result};
use crate::kinds::{Kind, Targets};
use crate::labels::{selector_query, selector_string};
use crate::table::Table;
use crate::Ctx;

pub async fn get(
    ctx: &Ctx,
    args: &GetArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    if crate::events::is_events(&args.resource) {
        return crate::events::get(ctx, args, out, err).await;
    }
    if args.for_object.is_some() {
        return Err(Error::Usage("--for is only supported for events".into()));
    }
    let targets = Targets::parse(&args.resource, &args.names)?;
    let mut query = selector_query(args.selector.as_deref())?;
    if args.watch || args.watch_only {
        let (kind, name) = match (&targets, targets.pairs().as_deref()) {
            (Targets::Kind { kind, .. }, None) => (*kind, None),
            (_, Some([(kind, name)])) => (*kind, Some(name.clone())),
            _ => {
                return Err(Error::Usage(
                    "watch is only supported on individual resources and resource collections, but 2 resources were found".into(),
                ))
            }
        };
        if let Some(name) = name {
            if ctx.all_namespaces {
                return Err(Error::Usage(
                    "a resource cannot be retrieved by name across all namespaces".into(),
                ));
            }
            query.push(("fieldSelector", format!("metadata.name={name}")));
        }
        return crate::watch::watch(ctx, args, kind, query, out, err).await;
    }
    let now = Utc::now();
    let pairs = match targets.pairs() {
        Some(pairs) => pairs,
        None => {
            let Targets::Kind { kind, .. } = targets else {
                unreachable!("only a bare kind has no names")
            };
            let scope = ctx.list_namespace(kind);
            let list = ctx.client.get(&kind.collection(scope), &query).await?;
            let items: Vec<(Kind, Value)> = list_items(list)
                .into_iter()
                .map(|v| (kind, complete(kind, v)))
                .collect();
            if items.is_empty()
                && !matches!(args.output, Some(OutputFormat::Json | OutputFormat::Yaml))
            {
                writeln!(err, "{}", no_resources(kind, scope))?;
                return Ok(());
            }
            let show_ns = ctx.all_namespaces && kind.namespaced();
            return print(&items, args.output, false, show_ns, now, out);
        }
    };
    if !query.is_empty() {
        return Err(Error::Usage(
            "name cannot be provided when a selector is specified".into(),
        ));
    }
    if ctx.all_namespaces {
        return Err(Error::Usage(
            "a resource cannot be retrieved by name across all namespaces".into(),
        ));
    }
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for (kind, name) in &pairs {
        match ctx
            .client
            .get(&kind.object(&ctx.namespace, name), &[])
            .await
        {
            Ok(v) => found.push((*kind, complete(*kind, v))),
            Err(e) => failures.push(Error::from(e)),
        }
    }
    if found.is_empty() && failures.len() == 1 {
        return Err(failures.remove(0));
    }
    print(&found, args.output, pairs.len() == 1, false, now, out)?;
    if failures.is_empty() {
        return Ok(());
    }
    for e in &failures {
        if let Some(line) = e.report() {
            writeln!(err, "{line}")?;
        }
    }
    Err(Error::AlreadyReported)
}

/// `No resources found in default namespace.`, as kubectl says it.
pub fn no_resources(kind: Kind, scope: Option<&str>) -> String {
    match scope {
        Some(ns) if kind.namespaced() => format!("No resources found in {ns} namespace."),
        _ => "No resources found".into(),
    }
}

/// The `items` of a list answer.
pub fn list_items(list: Value) -> Vec<Value> {
    match list {
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Fills in `apiVersion`/`kind` (list items from a Kubernetes-style API may omit them)
/// and drops the empty fields Kubernetes leaves out.
pub fn complete(kind: Kind, mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        for (field, value) in [("apiVersion", kind.api_version()), ("kind", kind.kind())] {
            let missing = map
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if missing {
                map.insert(field.into(), value.into());
            }
        }
    }
    punnet_api::object::to_json(&v)
}

/// What `-o json|yaml` prints: the object when one was asked for by name, else a `List`.
pub fn document(items: &[Value], single: bool) -> Value {
    match items {
        [one] if single => one.clone(),
        _ => json!({ "apiVersion": "v1", "kind": "List", "items": items }),
    }
}

pub fn typed<T: DeserializeOwned>(kind: Kind, v: &Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| Error::decode(kind.kind(), e))
}

pub fn print(
    items: &[(Kind, Value)],
    format: Option<OutputFormat>,
    single: bool,
    show_namespace: bool,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<()> {
    let values = || items.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>();
    match format {
        Some(OutputFormat::Json) => write_json(out, &document(&values(), single)),
        Some(OutputFormat::Yaml) => {
            let text = serde_norway::to_string(&document(&values(), single))
                .map_err(|e| Error::decode("objects as YAML", e))?;
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        Some(OutputFormat::Name) => {
            for (kind, v) in items {
                let name = v["metadata"]["name"].as_str().unwrap_or_default();
                writeln!(out, "{}", kind.reference(name))?;
            }
            Ok(())
        }
        None | Some(OutputFormat::Wide) => {
            let wide = format == Some(OutputFormat::Wide);
            // One table per kind, in the order the kinds were named.
            let mut kinds: Vec<Kind> = Vec::new();
            for (k, _) in items {
                if !kinds.contains(k) {
                    kinds.push(*k);
                }
            }
            for (i, kind) in kinds.iter().enumerate() {
                let of_kind: Vec<&Value> = items
                    .iter()
                    .filter(|(k, _)| k == kind)
                    .map(|(_, v)| v)
                    .collect();
                let table = match kind {
                    Kind::Pod => {
                        pod_table(&decode_all(*kind, &of_kind)?, wide, show_namespace, now)
                    }
                    Kind::Deployment => {
                        deployment_table(&decode_all(*kind, &of_kind)?, wide, show_namespace, now)
                    }
                    Kind::Node => node_table(&decode_all(*kind, &of_kind)?, wide, now),
                    Kind::ConfigMap => {
                        config_map_table(&decode_all(*kind, &of_kind)?, show_namespace, now)
                    }
                    Kind::Secret => {
                        secret_table(&decode_all(*kind, &of_kind)?, show_namespace, now)
                    }
                    Kind::DaemonSet => crate::workloads::daemon_set_table(
                        &decode_all(*kind, &of_kind)?,
                        wide,
                        show_namespace,
                        now,
                    ),
                    Kind::ReplicaSet => crate::rollout::replica_set_table(
                        &decode_all::<ReplicaSet>(*kind, &of_kind)?,
                        wide,
                        show_namespace,
                        now,
                    ),
                    Kind::Job => crate::workloads::job_table(
                        &decode_all(*kind, &of_kind)?,
                        wide,
                        show_namespace,
                        now,
                    ),
                    Kind::Namespace => namespace_table(&decode_all(*kind, &of_kind)?, now),
                };
                if i > 0 {
                    writeln!(out)?;
                }
                out.write_all(table.render().as_bytes())?;
            }
            Ok(())
        }
    }
}

fn decode_all<T: DeserializeOwned>(kind: Kind, values: &[&Value]) -> Result<Vec<T>> {
    values.iter().map(|v| typed(kind, v)).collect()
}

/// Pretty JSON with kubectl's four-space indent.
pub fn write_json(out: &mut dyn Write, v: &Value) -> Result<()> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    v.serialize(&mut ser)
        .map_err(|e| Error::decode("objects as JSON", e))?;
    buf.push(b'\n');
    out.write_all(&buf)?;
    Ok(())
}

fn or_none(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "<none>".into(),
    }
}

fn with_namespace(show: bool, namespace: &str, mut row: Vec<String>) -> Vec<String> {
    if show {
        row.insert(0, namespace.to_string());
    }
    row
}

fn headers(show_namespace: bool, names: &[&str]) -> Vec<String> {
    let mut h: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    if show_namespace {
        h.insert(0, "NAMESPACE".into());
    }
    h
}

/// `NAME READY STATUS RESTARTS AGE` (+ `IP NODE`).
pub fn pod_table(pods: &[Pod], wide: bool, show_namespace: bool, now: DateTime<Utc>) -> Table {
    let mut cols = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if wide {
        cols.extend(["IP", "NODE"]);
    }
    let mut table = Table::new(&headers(show_namespace, &cols));
    for pod in pods {
        let mut row = vec![
            pod.metadata.name.clone(),
            pod_ready(pod),
            pod.display_status(),
            pod_restarts(pod, now),
            age(pod.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            row.push(or_none(pod.status.pod_ip.as_deref()));
            row.push(or_none(pod.spec.node_name.as_deref()));
        }
        table.push(with_namespace(
            show_namespace,
            pod.metadata.namespace_or_default(),
            row,
        ));
    }
    table
}

/// `ready/total` containers.
pub fn pod_ready(pod: &Pod) -> String {
    let statuses = &pod.status.container_statuses;
    let total = pod.spec.containers.len().max(statuses.len());
    let ready = statuses.iter().filter(|c| c.ready).count();
    format!("{ready}/{total}")
}

/// Restarts summed over containers (init containers too, as kubectl counts them), with
/// kubectl's ` (5m ago)` for the latest one.
pub fn pod_restarts(pod: &Pod, now: DateTime<Utc>) -> String {
    let statuses: Vec<_> = pod
        .status
        .init_container_statuses
        .iter()
        .chain(&pod.status.container_statuses)
        .collect();
    let total: i64 = statuses.iter().map(|c| i64::from(c.restart_count)).sum();
    let last = statuses
        .iter()
        .filter_map(|c| c.last_state.terminated.as_ref()?.finished_at)
        .max();
    match last {
        Some(t) if total > 0 => format!("{total} ({} ago)", age(Some(&t), now)),
        _ => total.to_string(),
    }
}

/// `NAME READY UP-TO-DATE AVAILABLE AGE` (+ `CONTAINERS IMAGES SELECTOR`).
pub fn deployment_table(
    deployments: &[Deployment],
    wide: bool,
    show_namespace: bool,
    now: DateTime<Utc>,
) -> Table {
    let mut cols = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
    if wide {
        cols.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
    }
    let mut table = Table::new(&headers(show_namespace, &cols));
    for d in deployments {
        let mut row = vec![
            d.metadata.name.clone(),
            format!("{}/{}", d.status.ready_replicas, d.spec.replicas()),
            d.status.updated_replicas.to_string(),
            d.status.available_replicas.to_string(),
            age(d.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            let containers = &d.spec.template.spec.containers;
            row.push(
                containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            row.push(
                containers
                    .iter()
                    .map(|c| c.image.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            row.push(selector_string(&d.spec.selector));
        }
        table.push(with_namespace(
            show_namespace,
            d.metadata.namespace_or_default(),
            row,
        ));
    }
    table
}

/// `NAME DATA AGE`: DATA counts the keys of `data` and `binaryData`.
pub fn config_map_table(items: &[ConfigMap], show_namespace: bool, now: DateTime<Utc>) -> Table {
    let mut table = Table::new(&headers(show_namespace, &["NAME", "DATA", "AGE"]));
    for c in items {
        let row = vec![
            c.metadata.name.clone(),
            (c.data.len() + c.binary_data.len()).to_string(),
            age(c.metadata.creation_timestamp.as_ref(), now),
        ];
        table.push(with_namespace(
            show_namespace,
            c.metadata.namespace_or_default(),
            row,
        ));
    }
    table
}

/// `NAME STATUS AGE`, as kubectl shows Namespaces.
pub fn namespace_table(items: &[Namespace], now: DateTime<Utc>) -> Table {
    let mut table = Table::new(&headers(false, &["NAME", "STATUS", "AGE"]));
    for n in items {
        table.push(vec![
            n.metadata.name.clone(),
            or_none(n.status.phase.as_deref()),
            age(n.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    table
}

/// `NAME TYPE DATA AGE`.
pub fn secret_table(items: &[Secret], show_namespace: bool, now: DateTime<Utc>) -> Table {
    let mut table = Table::new(&headers(show_namespace, &["NAME", "TYPE", "DATA", "AGE"]));
    for s in items {
        let row = vec![
            s.metadata.name.clone(),
            secret_type(s).to_string(),
            s.entries().len().to_string(),
            age(s.metadata.creation_timestamp.as_ref(), now),
        ];
        table.push(with_namespace(
            show_namespace,
            s.metadata.namespace_or_default(),
            row,
        ));
    }
    table
}

/// A Secret's type, `Opaque` when unset (as the API server defaults it).
pub fn secret_type(s: &Secret) -> &str {
    s.type_
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or("Opaque")
}

/// `NAME STATUS ROLES AGE VERSION` (+ `INTERNAL-IP OS-IMAGE KERNEL-VERSION ARCH`).
pub fn node_table(nodes: &[Node], wide: bool, now: DateTime<Utc>) -> Table {
    let mut cols = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
    if wide {
        cols.extend(["INTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "ARCH"]);
    }
    let mut table = Table::new(&cols);
    for n in nodes {
        let info = &n.status.node_info;
        let mut row = vec![
            n.metadata.name.clone(),
            node_status(n),
            node_roles(n),
            age(n.metadata.creation_timestamp.as_ref(), now),
            or_none(Some(&info.kubelet_version)),
        ];
        if wide {
            row.push(or_none(internal_ip(n)));
            let unknown = |s: &str| {
                if s.is_empty() {
                    "<unknown>".to_string()
                } else {
                    s.to_string()
                }
            };
            row.push(unknown(&info.os_image));
            row.push(unknown(&info.kernel_version));
            let arch = if info.architecture.is_empty() {
                n.metadata
                    .labels
                    .get(punnet_api::LABEL_ARCH)
                    .cloned()
                    .unwrap_or_default()
            } else {
                info.architecture.clone()
            };
            row.push(unknown(&arch));
        }
        table.push(row);
    }
    table
}

/// `Ready`, `NotReady` or `Unknown`, plus `,SchedulingDisabled` when cordoned.
pub fn node_status(n: &Node) -> String {
    let mut s = match n.condition("Ready").map(|c| c.status.as_str()) {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    }
    .to_string();
    if n.is_unschedulable() {
        s.push_str(",SchedulingDisabled");
    }
    s
}

/// Roles from `node-role.kubernetes.io/<role>` labels, as kubectl derives them.
pub fn node_roles(n: &Node) -> String {
    let mut roles: Vec<&str> = n
        .metadata
        .labels
        .iter()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => Some(role),
            _ if k == "kubernetes.io/role" && !v.is_empty() => Some(v.as_str()),
            _ => None,
        })
        .collect();
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

pub fn internal_ip(n: &Node) -> Option<&str> {
    n.status
        .addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.as_str())
}

#[cfg(test)]
mod tests {
    use punnet_api::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        NodeCondition, Time,
    };

    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn now() -> DateTime<Utc> {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn pod(name: &str, ns: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some(ns.into());
        p.metadata.creation_timestamp = Some(time("2024-05-01T11:56:40Z"));
        p.spec.containers = vec![Default::default(), Default::default()];
        p
    }

    #[test]
    fn pod_table_columns() {
        let mut a = pod("web-7d4b9c-x2x", "default");
        a.status.phase = Some("Running".into());
        a.spec.node_name = Some("pi-1".into());
        a.status.pod_ip = Some("10.42.0.7".into());
        a.status.container_statuses = vec![
            ContainerStatus {
                name: "web".into(),
                ready: true,
                restart_count: 2,
                last_state: ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 1,
                        finished_at: Some(time("2024-05-01T11:55:00Z")),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
            ContainerStatus {
                name: "side".into(),
                ready: false,
                restart_count: 3,
                state: ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        message: None,
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
        ];
        let b = pod("db", "tools");
        let t = pod_table(&[a, b], true, true, now());
        assert_eq!(
            t.render(),
            "NAMESPACE   NAME             READY   STATUS             RESTARTS     AGE     IP          NODE\n\
             default     web-7d4b9c-x2x   1/2     CrashLoopBackOff   5 (5m ago)   3m20s   10.42.0.7   pi-1\n\
             tools       db               0/2     Pending            0            3m20s   <none>      <none>\n"
        );
    }

    #[test]
    fn node_status_and_roles() {
        let mut n = Node::default();
        n.metadata.name = "pi-1".into();
        assert_eq!(node_status(&n), "Unknown");
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "False".into(),
            ..Default::default()
        });
        n.spec.unschedulable = Some(true);
        assert_eq!(node_status(&n), "NotReady,SchedulingDisabled");
        assert_eq!(node_roles(&n), "<none>");
        n.metadata
            .labels
            .insert("node-role.kubernetes.io/edge".into(), "".into());
        assert_eq!(node_roles(&n), "edge");
        n.status.node_info.kubelet_version = "v0.1.0".into();
        let t = node_table(&[n], false, now());
        assert_eq!(
            t.render(),
            "NAME   STATUS                        ROLES   AGE         VERSION\n\
             pi-1   NotReady,SchedulingDisabled   edge    <unknown>   v0.1.0\n"
        );
    }

    #[test]
    fn json_output_is_a_kubernetes_list() {
        let raw = json!({"metadata": {"name": "web", "labels": {}}, "spec": {"containers": []}});
        let item = complete(Kind::Deployment, raw);
        assert_eq!(
            item,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}})
        );
        let doc = document(std::slice::from_ref(&item), false);
        assert_eq!(
            doc,
            json!({"apiVersion": "v1", "kind": "List", "items": [item.clone()]})
        );
        assert_eq!(document(std::slice::from_ref(&item), true), item);
        assert_eq!(
            document(&[], false)["items"],
            json!([]),
            "an empty list keeps its items"
        );
        let mut out = Vec::new();
        write_json(&mut out, &document(&[], false)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n    \"apiVersion\": \"v1\",\n    \"items\": [],\n    \"kind\": \"List\"\n}\n"
        );
    }

    #[test]
    fn config_map_and_secret_tables() {
        let mut c = ConfigMap::default();
        c.metadata.name = "web-config".into();
        c.metadata.namespace = Some("default".into());
        c.metadata.creation_timestamp = Some(time("2024-05-01T11:00:00Z"));
        c.data.insert("a".into(), "1".into());
        c.binary_data.insert("b".into(), "AA==".into());
        assert_eq!(
            config_map_table(&[c], false, now()).render(),
            "NAME         DATA   AGE\nweb-config   2      60m\n"
        );
        let mut s = Secret::default();
        s.metadata.name = "regcred".into();
        s.metadata.namespace = Some("tools".into());
        s.metadata.creation_timestamp = Some(time("2024-05-01T11:59:00Z"));
        s.type_ = Some("kubernetes.io/dockerconfigjson".into());
        s.data.insert(".dockerconfigjson".into(), "e30=".into());
        let mut plain = Secret::default();
        plain.metadata.name = "db".into();
        plain.metadata.namespace = Some("tools".into());
        assert_eq!(
            secret_table(&[s, plain], true, now()).render(),
            "NAMESPACE   NAME      TYPE                             DATA   AGE\n\
             tools       regcred   kubernetes.io/dockerconfigjson   1      60s\n\
             tools       db        Opaque                           0      <unknown>\n"
        );
    }

    #[test]
    fn empty_messages() {
        assert_eq!(
            no_resources(Kind::Pod, Some("default")),
            "No resources found in default namespace."
        );
        assert_eq!(no_resources(Kind::Pod, None), "No resources found");
        assert_eq!(
            no_resources(Kind::Node, Some("default")),
            "No resources found"
        );
    }
}
