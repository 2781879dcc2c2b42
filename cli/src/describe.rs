//! `punnet describe`: the human view of one Pod, Deployment or Node, laid out as
//! kubectl does (key/value blocks aligned with `table::tabwrite`). The text is built by
//! pure functions of the objects (and the current time, for ages), so it is tested as plain strings.
//! Every description ends with the object's Events (see `events::section`).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::Write;

use chrono::{DateTime, Utc};
use punnet_api::metrics::NodeMetrics;
use punnet_api::quantity::{format_bytes, format_cpu_millis, parse_bytes, parse_cpu_millis};
use punnet_api::{
    phase, Container, ContainerState, ContainerStatus, Deployment, Node, Pod, PodSpec, Probe,
    ReplicaSet, Time,
};
use serde_json::Value;

use crate::age::age;
use crate::args::DescribeArgs;
use crate::error::{Error, Result};
use crate::get::{complete, list_items, no_resources, node_roles, typed};
use crate::kinds::{Kind, Targets};
use crate::labels::{selector_query, selector_string};
use crate::table::tabwrite;
use crate::Ctx;

pub async fn describe(
    ctx: &Ctx,
    args: &DescribeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let targets = Targets::parse(&args.resource, &args.names)?;
    let query = selector_query(args.selector.as_deref())?;
    let mut objects: Vec<(Kind, Value)> = Vec::new();
    let mut failures = Vec::new();
    match targets.pairs() {
        Some(pairs) => {
            for (kind, name) in pairs {
                match ctx
                    .client
                    .get(&kind.object(&ctx.namespace, &name), &[])
                    .await
                {
                    Ok(v) => objects.push((kind, complete(kind, v))),
                    Err(e) => failures.push(Error::from(e)),
                }
            }
        }
        None => {
            let Targets::Kind { kind, .. } = targets else {
                unreachable!("only a bare kind has no names")
            };
            let scope = ctx.list_namespace(kind);
            let list = ctx.client.get(&kind.collection(scope), &query).await?;
            objects.extend(
                list_items(list)
                    .into_iter()
                    .map(|v| (kind, complete(kind, v))),
            );
            if objects.is_empty() {
                writeln!(err, "{}", no_resources(kind, scope))?;
                return Ok(());
            }
        }
    }
    if objects.is_empty() && failures.len() == 1 {
        return Err(failures.remove(0));
    }

    let now = Utc::now();
    // A node's Pods come from one list of every namespace, fetched only if needed.
    let mut all_pods: Option<Vec<Pod>> = None;
    for (i, (kind, v)) in objects.iter().enumerate() {
        let text = match kind {
            Kind::Pod => describe_pod(&typed(*kind, v)?),
            Kind::Deployment => {
                let d: Deployment = typed(*kind, v)?;
                let sets = crate::rollout::replica_sets_of(ctx, &d).await?;
                describe_deployment(&d, &sets)
            }
            Kind::ReplicaSet => crate::rollout::describe_replica_set(&typed(*kind, v)?),
            Kind::ConfigMap => configdata::describe_config_map(&typed(*kind, v)?),
            Kind::Secret => configdata::describe_secret(&typed(*kind, v)?),
            Kind::DaemonSet => describe_daemon_set(&typed(*kind, v)?),
            Kind::Job => describe_job(&typed(*kind, v)?),
            Kind::Namespace => namespace::describe_namespace(&typed(*kind, v)?),
            Kind::Node => {
                if all_pods.is_none() {
                    let list = ctx.client.get(&Kind::Pod.collection(None), &[]).await?;
                    let pods = list_items(list)
                        .iter()
                        .map(|p| typed(Kind::Pod, p))
                        .collect::<Result<Vec<Pod>>>()?;
                    all_pods = Some(pods);
                }
                let node: Node = typed(*kind, v)?;
                let metrics = node_metrics(ctx, &node.metadata.name).await;
                describe_node(
                    &node,
                    all_pods.as_deref().unwrap_or_default(),
                    metrics.as_ref(),
                    now,
                )
            }
        };
        let text = match crate::events::for_object(ctx, *kind, v).await {
            Some(events) => text + &crate::events::section(&events, now),
            None => text,
        };
        if i > 0 {
            writeln!(out)?;
            writeln!(out)?;
        }
        out.write_all(text.as_bytes())?;
    }
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

/// The node's latest figures; `None` when it sent none lately (or the server has no
/// metrics API), which leaves the section out rather than failing the command.
async fn node_metrics(ctx: &Ctx, name: &str) -> Option<NodeMetrics> {
    let path: Vec<String> = ["apis", "metrics.k8s.io", "v1beta1", "nodes", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let v = ctx.client.get(&path, &[]).await.ok()?;
    serde_json::from_value(v).ok()
}

/// Lines with `\t` between a key and its value; `finish` aligns them.
#[derive(Default)]
struct Doc(String);

impl Doc {
    fn line(&mut self, level: usize, text: impl Display) {
        let text = clean(&text.to_string());
        self.0.push_str(&format!("{}{text}\n", indent(level)));
    }

    fn field(&mut self, level: usize, key: &str, value: impl Display) {
        let value = clean(&value.to_string());
        self.0
            .push_str(&format!("{}{key}:\t{value}\n", indent(level)));
    }

    /// `Labels:  a=b` with further entries on their own lines under the first.
    fn map(&mut self, level: usize, key: &str, map: &BTreeMap<String, String>) {
        if map.is_empty() {
            return self.field(level, key, "<none>");
        }
        for (i, (k, v)) in map.iter().enumerate() {
            let entry = clean(&format!("{k}={v}"));
            if i == 0 {
                self.0
                    .push_str(&format!("{}{key}:\t{entry}\n", indent(level)));
            } else {
                self.0.push_str(&format!("{}\t{entry}\n", indent(level)));
            }
        }
    }

    /// `Taints:  a:NoSchedule` with further items on their own lines under the first.
    fn list(&mut self, level: usize, key: &str, items: &[String]) {
        if items.is_empty() {
            return self.field(level, key, "<none>");
        }
        for (i, item) in items.iter().enumerate() {
            let item = clean(item);
            if i == 0 {
                self.0
                    .push_str(&format!("{}{key}:\t{item}\n", indent(level)));
            } else {
                self.0.push_str(&format!("{}\t{item}\n", indent(level)));
            }
        }
    }

    /// A small table: tab-separated rows at `level`, aligned by `finish`.
    fn rows(&mut self, level: usize, rows: &[Vec<String>]) {
        for row in rows {
            let cells: Vec<String> = row.iter().map(|c| clean(c)).collect();
            self.0
                .push_str(&format!("{}{}\n", indent(level), cells.join("\t")));
        }
    }

    fn finish(self) -> String {
        tabwrite(&self.0, 2)
    }
}

fn indent(level: usize) -> String {
    "  ".repeat(level)
}

/// Values are one cell: tabs and line breaks would break the layout.
fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// kubectl's RFC 1123 time with a numeric zone, in UTC so output does not depend on the
/// machine's time zone.
fn timestamp(t: &Time) -> String {
    t.0.format("%a, %d %b %Y %H:%M:%S %z").to_string()
}

fn or_none(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "<none>".into(),
    }
}

fn title_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

pub fn describe_pod(pod: &Pod) -> String {
    let mut d = Doc::default();
    let m = &pod.metadata;
    d.field(0, "Name", &m.name);
    d.field(0, "Namespace", m.namespace_or_default());
    let node = match (pod.spec.node_name.as_deref(), pod.status.host_ip.as_deref()) {
        (Some(n), Some(ip)) if !ip.is_empty() => format!("{n}/{ip}"),
        (Some(n), _) => n.to_string(),
        (None, _) => "<none>".into(),
    };
    d.field(0, "Node", node);
    if let Some(t) = &pod.status.start_time {
        d.field(0, "Start Time", timestamp(t));
    }
    d.map(0, "Labels", &m.labels);
    d.map(0, "Annotations", &m.annotations);
    let status = if m.deletion_timestamp.is_some() {
        "Terminating".to_string()
    } else {
        pod.phase().to_string()
    };
    d.field(0, "Status", status);
    if let Some(r) = &pod.status.reason {
        d.field(0, "Reason", r);
    }
    if let Some(msg) = &pod.status.message {
        d.field(0, "Message", msg);
    }
    d.field(0, "IP", or_none(pod.status.pod_ip.as_deref()));
    if !pod.status.pod_ips.is_empty() {
        d.line(0, "IPs:");
        for ip in &pod.status.pod_ips {
            d.field(1, "IP", &ip.ip);
        }
    }
    if let Some(owner) = m.controller() {
        d.field(0, "Controlled By", format!("{}/{}", owner.kind, owner.name));
    }
    if !pod.spec.init_containers.is_empty() {
        d.line(0, "Init Containers:");
        containers(
            &mut d,
            1,
            &pod.spec.init_containers,
            Some(&pod.status.init_container_statuses),
        );
    }
    d.line(0, "Containers:");
    containers(
        &mut d,
        1,
        &pod.spec.containers,
        Some(&pod.status.container_statuses),
    );
    if !pod.status.conditions.is_empty() {
        d.line(0, "Conditions:");
        let detailed = pod
            .status
            .conditions
            .iter()
            .any(|c| c.reason.is_some() || c.message.is_some());
        let mut rows = vec![if detailed {
            vec!["Type", "Status", "Reason", "Message"]
        } else {
            vec!["Type", "Status"]
        }
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()];
        for c in &pod.status.conditions {
            let mut row = vec![c.type_.clone(), c.status.clone()];
            if detailed {
                row.push(c.reason.clone().unwrap_or_default());
                row.push(c.message.clone().unwrap_or_default());
            }
            rows.push(row);
        }
        d.rows(1, &rows);
    }
    volumes(&mut d, 0, &pod.spec);
    d.field(0, "QoS Class", qos_class(&pod.spec));
    d.map(0, "Node-Selectors", &pod.spec.node_selector);
    let tolerations: Vec<String> = pod
        .spec
        .tolerations
        .iter()
        .map(|t| t.to_kubectl())
        .collect();
    d.list(0, "Tolerations", &tolerations);
    d.finish()
}

/// One block per container; `statuses` is `None` for a Pod template.
fn containers(d: &mut Doc, level: usize, list: &[Container], statuses: Option<&[ContainerStatus]>) {
    for c in list {
        let status = statuses.and_then(|s| s.iter().find(|s| s.name == c.name));
        d.line(level, format!("{}:", c.name));
        let l = level + 1;
        if let Some(id) = status.and_then(|s| s.container_id.as_deref()) {
            d.field(l, "Container ID", id);
        }
        d.field(l, "Image", &c.image);
        if let Some(s) = status.filter(|s| !s.image_id.is_empty()) {
            d.field(l, "Image ID", &s.image_id);
        }
        ports(d, l, c);
        for (key, list) in [("Command", &c.command), ("Args", &c.args)] {
            if !list.is_empty() {
                d.line(l, format!("{key}:"));
                for item in list {
                    d.line(l + 1, item);
                }
            }
        }
        if let Some(s) = status {
            state(d, l, "State", &s.state);
            if s.last_state.terminated.is_some() {
                state(d, l, "Last State", &s.last_state);
            }
            d.field(l, "Ready", title_bool(s.ready));
            d.field(l, "Restart Count", s.restart_count);
        }
        for (key, map) in [
            ("Limits", &c.resources.limits),
            ("Requests", &c.resources.requests),
        ] {
            if !map.is_empty() {
                d.line(l, format!("{key}:"));
                for (name, q) in map {
                    d.field(l + 1, name, q);
                }
            }
        }
        for (key, probe) in [
            ("Liveness", &c.liveness_probe),
            ("Readiness", &c.readiness_probe),
            ("Startup", &c.startup_probe),
        ] {
            if let Some(p) = probe {
                d.field(l, key, describe_probe(p));
            }
        }
        env::describe(d, l, c);
        if c.volume_mounts.is_empty() {
            d.field(l, "Mounts", "<none>");
        } else {
            d.line(l, "Mounts:");
            for vm in &c.volume_mounts {
                let mode = if vm.read_only == Some(true) {
                    "ro"
                } else {
                    "rw"
                };
                d.line(
                    l + 1,
                    format!("{} from {} ({mode})", vm.mount_path, vm.name),
                );
            }
        }
    }
}

fn ports(d: &mut Doc, level: usize, c: &Container) {
    let fmt =
        |port: i32, proto: &Option<String>| format!("{port}/{}", proto.as_deref().unwrap_or("TCP"));
    let ports: Vec<String> = c
        .ports
        .iter()
        .map(|p| fmt(p.container_port, &p.protocol))
        .collect();
    let host: Vec<String> = c
        .ports
        .iter()
        .map(|p| fmt(p.host_port.unwrap_or(0), &p.protocol))
        .collect();
    let (port_key, host_key) = if ports.len() > 1 {
        ("Ports", "Host Ports")
    } else {
        ("Port", "Host Port")
    };
    let join = |v: Vec<String>| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.join(", ")
        }
    };
    d.field(level, port_key, join(ports));
    d.field(level, host_key, join(host));
}

fn state(d: &mut Doc, level: usize, name: &str, s: &ContainerState) {
    let l = level + 1;
    if let Some(r) = &s.running {
        d.field(level, name, "Running");
        if let Some(t) = &r.started_at {
            d.field(l, "Started", timestamp(t));
        }
    } else if let Some(t) = &s.terminated {
        d.field(level, name, "Terminated");
        if let Some(r) = &t.reason {
            d.field(l, "Reason", r);
        }
        if let Some(m) = &t.message {
            d.field(l, "Message", m);
        }
        d.field(l, "Exit Code", t.exit_code);
        if let Some(sig) = t.signal {
            d.field(l, "Signal", sig);
        }
        if let Some(at) = &t.started_at {
            d.field(l, "Started", timestamp(at));
        }
        if let Some(at) = &t.finished_at {
            d.field(l, "Finished", timestamp(at));
        }
    } else {
        d.field(level, name, "Waiting");
        if let Some(w) = &s.waiting {
            if let Some(r) = &w.reason {
                d.field(l, "Reason", r);
            }
            if let Some(m) = &w.message {
                d.field(l, "Message", m);
            }
        }
    }
}

fn volumes(d: &mut Doc, level: usize, spec: &PodSpec) {
    if spec.volumes.is_empty() {
        return d.field(level, "Volumes", "<none>");
    }
    d.line(level, "Volumes:");
    for v in &spec.volumes {
        d.line(level + 1, format!("{}:", v.name));
        let l = level + 2;
        if let Some(hp) = &v.host_path {
            d.field(l, "Type", "HostPath (bare host directory volume)");
            d.field(l, "Path", &hp.path);
            d.field(l, "HostPathType", hp.type_.as_deref().unwrap_or(""));
        } else if let Some(e) = &v.empty_dir {
            d.field(
                l,
                "Type",
                "EmptyDir (a temporary directory that shares a pod's lifetime)",
            );
            d.field(l, "Medium", e.medium.as_deref().unwrap_or(""));
            d.field(l, "SizeLimit", or_unset(e.size_limit.as_deref()));
        } else if let Some(c) = &v.config_map {
            d.field(l, "Type", "ConfigMap (a volume populated by a ConfigMap)");
            d.field(l, "Name", &c.name);
            d.field(l, "Optional", c.optional.unwrap_or(false));
        } else if let Some(sec) = &v.secret {
            d.field(l, "Type", "Secret (a volume populated by a Secret)");
            d.field(l, "SecretName", &sec.secret_name);
            d.field(l, "Optional", sec.optional.unwrap_or(false));
        } else {
            d.field(l, "Type", "<unknown>");
        }
    }
}

fn or_unset(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("<unset>").to_string()
}

/// kubectl's one-line probe: `http-get http://:8080/healthz delay=0s timeout=1s
/// period=10s #success=1 #failure=3`.
pub fn describe_probe(p: &Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay(),
        p.timeout(),
        p.period(),
        p.success_threshold(),
        p.failure_threshold()
    );
    if let Some(e) = &p.exec {
        format!("exec [{}] {attrs}", e.command.join(" "))
    } else if let Some(h) = &p.http_get {
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let host = h.host.as_deref().unwrap_or("");
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let path = h.path.as_deref().unwrap_or("");
        let path = if path.is_empty() || path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        format!("http-get {scheme}://{host}:{}{path} {attrs}", h.port)
    } else if let Some(t) = &p.tcp_socket {
        format!(
            "tcp-socket {}:{} {attrs}",
            t.host.as_deref().unwrap_or(""),
            t.port
        )
    } else {
        format!("unknown {attrs}")
    }
}

/// Kubernetes' QoS class from the cpu and memory requests and limits.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let tracked = ["cpu", "memory"];
    let any = spec.containers.iter().any(|c| {
        tracked
            .iter()
            .any(|r| c.resources.limits.contains_key(*r) || c.resources.requests.contains_key(*r))
    });
    if !any {
        return "BestEffort";
    }
    let same = |r: &str, a: &str, b: &str| match r {
        "cpu" => parse_cpu_millis(a).ok() == parse_cpu_millis(b).ok(),
        _ => parse_bytes(a).ok() == parse_bytes(b).ok(),
    };
    let guaranteed = !spec.containers.is_empty()
        && spec.containers.iter().all(|c| {
            tracked.iter().all(|r| match c.resources.limits.get(*r) {
                // A request defaults to the limit.
                Some(limit) => c
                    .resources
                    .requests
                    .get(*r)
                    .is_none_or(|req| same(r, req, limit)),
                None => false,
            })
        });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// `sets` are the Deployment's ReplicaSets (for OldReplicaSets and NewReplicaSet).
pub fn describe_deployment(dep: &Deployment, sets: &[ReplicaSet]) -> String {
    let mut d = Doc::default();
    let m = &dep.metadata;
    d.field(0, "Name", &m.name);
    d.field(0, "Namespace", m.namespace_or_default());
    d.field(
        0,
        "CreationTimestamp",
        m.creation_timestamp
            .as_ref()
            .map(timestamp)
            .unwrap_or_else(|| "<unknown>".into()),
    );
    d.map(0, "Labels", &m.labels);
    d.map(0, "Annotations", &m.annotations);
    d.field(
        0,
        "Selector",
        or_none(Some(&selector_string(&dep.spec.selector))),
    );
    let s = &dep.status;
    d.field(
        0,
        "Replicas",
        format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            dep.spec.replicas(),
            s.updated_replicas,
            s.replicas,
            s.available_replicas,
            s.unavailable_replicas
        ),
    );
    let (strategy, rolling) = crate::rollout::strategy_lines(dep);
    d.field(0, "StrategyType", strategy);
    d.field(0, "MinReadySeconds", dep.spec.min_ready_seconds());
    if let Some(rolling) = rolling {
        d.field(0, "RollingUpdateStrategy", rolling);
    }
    d.line(0, "Pod Template:");
    let template = &dep.spec.template;
    d.map(1, "Labels", &template.metadata.labels);
    if !template.spec.init_containers.is_empty() {
        d.line(1, "Init Containers:");
        containers(&mut d, 2, &template.spec.init_containers, None);
    }
    d.line(1, "Containers:");
    containers(&mut d, 2, &template.spec.containers, None);
    volumes(&mut d, 1, &template.spec);
    d.map(1, "Node-Selectors", &template.spec.node_selector);
    if !s.conditions.is_empty() {
        d.line(0, "Conditions:");
        // kubectl shows Type, Status and Reason; a Message column only when there is one.
        let with_message = s.conditions.iter().any(|c| c.message.is_some());
        let mut rows = vec![
            vec![
                "Type".to_string(),
                "Status".into(),
                "Reason".into(),
                "Message".into(),
            ],
            vec![
                "----".to_string(),
                "------".into(),
                "------".into(),
                "-------".into(),
            ],
        ];
        for c in &s.conditions {
            rows.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ]);
        }
        if !with_message {
            rows.iter_mut().for_each(|r| r.truncate(3));
        }
        d.rows(1, &rows);
    }
    let (old, new) = crate::rollout::old_and_new(dep, sets);
    d.field(0, "OldReplicaSets", old);
    d.field(0, "NewReplicaSet", new);
    d.finish()
}

/// What a node's Pods ask for: cpu in millicores and memory in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    cpu_requests: u64,
    cpu_limits: u64,
    memory_requests: u64,
    memory_limits: u64,
}

impl Usage {
    fn of(pod: &Pod) -> Usage {
        let mut u = Usage::default();
        // Stored objects were validated; an unparsable quantity counts as nothing.
        let cpu = |m: &BTreeMap<String, String>| {
            m.get("cpu")
                .and_then(|q| parse_cpu_millis(q).ok())
                .unwrap_or(0)
        };
        let mem = |m: &BTreeMap<String, String>| {
            m.get("memory")
                .and_then(|q| parse_bytes(q).ok())
                .unwrap_or(0)
        };
        for c in &pod.spec.containers {
            u.cpu_requests += cpu(&c.resources.requests);
            u.cpu_limits += cpu(&c.resources.limits);
            u.memory_requests += mem(&c.resources.requests);
            u.memory_limits += mem(&c.resources.limits);
        }
        u
    }

    fn add(&mut self, o: Usage) {
        self.cpu_requests += o.cpu_requests;
        self.cpu_limits += o.cpu_limits;
        self.memory_requests += o.memory_requests;
        self.memory_limits += o.memory_limits;
    }
}

/// `100m (2%)`: an amount and its share of what the node can allocate.
fn share(amount: u64, total: Option<u64>, format: fn(u64) -> String) -> String {
    match total {
        Some(t) if t > 0 => format!("{} ({}%)", format(amount), amount * 100 / t),
        _ => format(amount),
    }
}

/// `metrics`: the node's latest figures, when it sent any lately.
pub fn describe_node(
    node: &Node,
    pods: &[Pod],
    metrics: Option<&NodeMetrics>,
    now: DateTime<Utc>,
) -> String {
    let mut d = Doc::default();
    let m = &node.metadata;
    d.field(0, "Name", &m.name);
    d.field(0, "Roles", node_roles(node));
    d.map(0, "Labels", &m.labels);
    d.map(0, "Annotations", &m.annotations);
    d.field(
        0,
        "CreationTimestamp",
        m.creation_timestamp
            .as_ref()
            .map(timestamp)
            .unwrap_or_else(|| "<unknown>".into()),
    );
    let taints: Vec<String> = node.spec.taints.iter().map(|t| t.to_kubectl()).collect();
    d.list(0, "Taints", &taints);
    d.field(0, "Unschedulable", node.is_unschedulable());
    if node.status.conditions.is_empty() {
        d.field(0, "Conditions", "<none>");
    } else {
        d.line(0, "Conditions:");
        let mut rows: Vec<Vec<String>> = [
            [
                "Type",
                "Status",
                "LastHeartbeatTime",
                "LastTransitionTime",
                "Reason",
                "Message",
            ],
            [
                "----",
                "------",
                "-----------------",
                "------------------",
                "------",
                "-------",
            ],
        ]
        .iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect();
        for c in &node.status.conditions {
            rows.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.last_heartbeat_time
                    .as_ref()
                    .map(timestamp)
                    .unwrap_or_default(),
                c.last_transition_time
                    .as_ref()
                    .map(timestamp)
                    .unwrap_or_default(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ]);
        }
        d.rows(1, &rows);
    }
    if node.status.addresses.is_empty() {
        d.field(0, "Addresses", "<none>");
    } else {
        d.line(0, "Addresses:");
        for a in &node.status.addresses {
            d.field(1, &a.type_, &a.address);
        }
    }
    for (key, map) in [
        ("Capacity", &node.status.capacity),
        ("Allocatable", &node.status.allocatable),
    ] {
        if map.is_empty() {
            d.field(0, key, "<none>");
        } else {
            d.line(0, format!("{key}:"));
            for (name, q) in map {
                d.field(1, name, q);
            }
        }
    }
    let info = &node.status.node_info;
    d.line(0, "System Info:");
    d.field(1, "Machine ID", &info.machine_id);
    d.field(1, "Architecture", &info.architecture);
    d.field(1, "Kernel Version", &info.kernel_version);
    d.field(1, "OS Image", &info.os_image);
    d.field(1, "Operating System", &info.operating_system);
    d.field(1, "Agent Version", &info.kubelet_version);
    node::system_info(&mut d, 1, node);
    if let Some(cidr) = &node.spec.pod_cidr {
        d.field(0, "PodCIDR", cidr);
    }
    if let Some(m) = metrics {
        node::board_status(&mut d, m, now);
    }

    let on_node: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(m.name.as_str()))
        .filter(|p| !matches!(p.phase(), phase::SUCCEEDED | phase::FAILED))
        .collect();
    let resources = if node.status.allocatable.is_empty() {
        &node.status.capacity
    } else {
        &node.status.allocatable
    };
    let cpu_total = resources.get("cpu").and_then(|q| parse_cpu_millis(q).ok());
    let mem_total = resources.get("memory").and_then(|q| parse_bytes(q).ok());
    d.field(
        0,
        "Non-terminated Pods",
        format!("({} in total)", on_node.len()),
    );
    let mut rows: Vec<Vec<String>> = [
        [
            "Namespace",
            "Name",
            "CPU Requests",
            "CPU Limits",
            "Memory Requests",
            "Memory Limits",
            "Age",
        ],
        [
            "---------",
            "----",
            "------------",
            "----------",
            "---------------",
            "-------------",
            "---",
        ],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect();
    let mut total = Usage::default();
    for p in &on_node {
        let u = Usage::of(p);
        total.add(u);
        rows.push(vec![
            p.metadata.namespace_or_default().to_string(),
            p.metadata.name.clone(),
            share(u.cpu_requests, cpu_total, format_cpu_millis),
            share(u.cpu_limits, cpu_total, format_cpu_millis),
            share(u.memory_requests, mem_total, format_bytes),
            share(u.memory_limits, mem_total, format_bytes),
            age(p.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    if !on_node.is_empty() {
        d.rows(1, &rows);
    }
    d.line(0, "Allocated resources:");
    d.line(
        1,
        "(Total limits may be over 100 percent, i.e., overcommitted.)",
    );
    d.rows(
        1,
        &[
            vec!["Resource".into(), "Requests".into(), "Limits".into()],
            vec!["--------".into(), "--------".into(), "------".into()],
            vec![
                "cpu".into(),
                share(total.cpu_requests, cpu_total, format_cpu_millis),
                share(total.cpu_limits, cpu_total, format_cpu_millis),
            ],
            vec![
                "memory".into(),
                share(total.memory_requests, mem_total, format_bytes),
                share(total.memory_limits, mem_total, format_bytes),
            ],
        ],
    );
    d.finish()
}

mod configdata;
mod env;
mod namespace;
mod node;
#[cfg(test)]
mod tests;
mod workloads;

pub use configdata::{describe_config_map, describe_secret};
pub use workloads::{describe_daemon_set, describe_job};
