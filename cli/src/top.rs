//! `punnet top nodes|pods`: CPU and memory use from the controller's metrics API
//! (`metrics.k8s.io/v1beta1`), in `kubectl top`'s columns. The tables are pure
//! functions of the metrics (and, for nodes, the Nodes' allocatable resources).

use std::io::Write;

use punnet_api::metrics::{MetricsList, NodeMetrics, PodMetrics};
use punnet_api::quantity::{parse_bytes, parse_cpu_millis};
use punnet_api::Node;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::args::TopArgs;
use crate::error::{Error, Result};
use crate::get::{list_items, typed};
use crate::kinds::Kind;
use crate::table::Table;
use crate::Ctx;

fn metrics_path(rest: &[&str]) -> Vec<String> {
    ["apis", "metrics.k8s.io", "v1beta1"]
        .iter()
        .chain(rest)
        .map(|s| s.to_string())
        .collect()
}

fn decode<T: DeserializeOwned>(what: &str, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::decode(what, e))
}

pub async fn top(ctx: &Ctx, args: &TopArgs, out: &mut dyn Write) -> Result<()> {
    let kind = Kind::parse(&args.resource)?;
    match kind {
        Kind::Node => {
            let mut metrics: MetricsList<NodeMetrics> = decode(
                "node metrics",
                ctx.client.get(&metrics_path(&["nodes"]), &[]).await?,
            )?;
            let nodes = list_items(ctx.client.get(&Kind::Node.collection(None), &[]).await?)
                .iter()
                .map(|v| typed(Kind::Node, v))
                .collect::<Result<Vec<Node>>>()?;
            if let Some(name) = &args.name {
                metrics.items.retain(|m| &m.metadata.name == name);
                if metrics.items.is_empty() {
                    return Err(Error::Usage(format!(
                        "metrics not available yet for node {name:?}: its agent has sent no figures lately"
                    )));
                }
            }
            if metrics.items.is_empty() {
                return Err(Error::Usage(
                    "metrics not available yet: no node has sent figures lately".into(),
                ));
            }
            out.write_all(node_table(&metrics.items, &nodes).render().as_bytes())?;
        }
        Kind::Pod => {
            let ns = ctx.list_namespace(Kind::Pod);
            let path = match ns {
                Some(ns) => metrics_path(&["namespaces", ns, "pods"]),
                None => metrics_path(&["pods"]),
            };
            let mut metrics: MetricsList<PodMetrics> =
                decode("pod metrics", ctx.client.get(&path, &[]).await?)?;
            if let Some(name) = &args.name {
                metrics.items.retain(|m| &m.metadata.name == name);
                if metrics.items.is_empty() {
                    return Err(Error::Usage(format!(
                        "metrics not available yet for pod {}/{name}: it is not running, or its node has sent no figures lately",
                        ctx.namespace
                    )));
                }
            }
            if metrics.items.is_empty() {
                return Err(Error::Usage(match ns {
                    Some(ns) => format!("No resources found in {ns} namespace."),
                    None => "No resources found".into(),
                }));
            }
            let table = pod_table(&metrics.items, ctx.all_namespaces, args.containers);
            out.write_all(table.render().as_bytes())?;
        }
        other => {
            return Err(Error::Usage(format!(
                "top shows nodes or pods, not {}",
                other.plural()
            )))
        }
    }
    Ok(())
}

fn cpu(usage: &std::collections::BTreeMap<String, String>) -> u64 {
    usage
        .get("cpu")
        .and_then(|q| parse_cpu_millis(q).ok())
        .unwrap_or(0)
}

fn memory(usage: &std::collections::BTreeMap<String, String>) -> u64 {
    usage
        .get("memory")
        .and_then(|q| parse_bytes(q).ok())
        .unwrap_or(0)
}

/// kubectl's memory column: whole MiB.
fn mib(bytes: u64) -> String {
    format!("{}Mi", bytes >> 20)
}

fn percent(part: u64, whole: Option<u64>) -> String {
    match whole {
        Some(w) if w > 0 => format!("{}%", part * 100 / w),
        _ => "<unknown>".into(),
    }
}

/// `NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)`, shares of the Node's allocatable.
pub fn node_table(metrics: &[NodeMetrics], nodes: &[Node]) -> Table {
    let mut t =
        Table::with_headers(&["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]);
    for m in metrics {
        let node = nodes.iter().find(|n| n.metadata.name == m.metadata.name);
        let alloc = |name: &str| node.and_then(|n| n.status.allocatable.get(name));
        let cpu_total = alloc("cpu").and_then(|q| parse_cpu_millis(q).ok());
        let mem_total = alloc("memory").and_then(|q| parse_bytes(q).ok());
        let (c, mem) = (cpu(&m.usage), memory(&m.usage));
        t.push(vec![
            m.metadata.name.clone(),
            format!("{c}m"),
            percent(c, cpu_total),
            mib(mem),
            percent(mem, mem_total),
        ]);
    }
    t
}

/// `NAME CPU(cores) MEMORY(bytes)` summed per Pod, or per container with `containers`.
pub fn pod_table(metrics: &[PodMetrics], show_namespace: bool, containers: bool) -> Table {
    let mut cols = Vec::new();
    if show_namespace {
        cols.push("NAMESPACE");
    }
    if containers {
        cols.push("POD");
    }
    cols.extend(["NAME", "CPU(cores)", "MEMORY(bytes)"]);
    let mut t = Table::with_headers(&cols);
    for m in metrics {
        let mut lead = Vec::new();
        if show_namespace {
            lead.push(m.metadata.namespace_or_default().to_string());
        }
        if containers {
            for c in &m.containers {
                let mut row = lead.clone();
                row.push(m.metadata.name.clone());
                row.extend([
                    c.name.clone(),
                    format!("{}m", cpu(&c.usage)),
                    mib(memory(&c.usage)),
                ]);
                t.push(row);
            }
        } else {
            let c: u64 = m.containers.iter().map(|c| cpu(&c.usage)).sum();
            let mem: u64 = m.containers.iter().map(|c| memory(&c.usage)).sum();
            let mut row = lead;
            row.extend([m.metadata.name.clone(), format!("{c}m"), mib(mem)]);
            t.push(row);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::metrics::ContainerMetrics;
    use punnet_api::ObjectMeta;

    fn usage(cpu: &str, mem: &str) -> std::collections::BTreeMap<String, String> {
        [
            ("cpu".to_string(), cpu.to_string()),
            ("memory".to_string(), mem.to_string()),
        ]
        .into()
    }

    #[test]
    fn node_columns_are_shares_of_allocatable() {
        let mut n = Node::default();
        n.metadata.name = "pi-1".into();
        n.status.allocatable.insert("cpu".into(), "4".into());
        n.status.allocatable.insert("memory".into(), "1Gi".into());
        let m = |name: &str| NodeMetrics {
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            usage: usage("250m", "262144Ki"),
            ..Default::default()
        };
        assert_eq!(
            node_table(&[m("pi-1"), m("pi-2")], &[n]).render(),
            "NAME   CPU(cores)   CPU(%)      MEMORY(bytes)   MEMORY(%)\n\
             pi-1   250m         6%          256Mi           25%\n\
             pi-2   250m         <unknown>   256Mi           <unknown>\n"
        );
    }

    #[test]
    fn pod_columns_sum_containers_or_list_them() {
        let pod = PodMetrics {
            metadata: ObjectMeta {
                name: "web".into(),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            containers: vec![
                ContainerMetrics {
                    name: "nginx".into(),
                    usage: usage("12m", "3072Ki"),
                },
                ContainerMetrics {
                    name: "sidecar".into(),
                    usage: usage("1m", "2048Ki"),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            pod_table(std::slice::from_ref(&pod), false, false).render(),
            "NAME   CPU(cores)   MEMORY(bytes)\nweb    13m          5Mi\n"
        );
        assert_eq!(
            pod_table(&[pod], true, true).render(),
            "NAMESPACE   POD   NAME      CPU(cores)   MEMORY(bytes)\n\
             shop        web   nginx     12m          3Mi\n\
             shop        web   sidecar   1m           2Mi\n"
        );
    }
}
