//! `punnet cordon|uncordon NODE` and `punnet drain NODE`, as kubectl does them: cordon
//! sets `spec.unschedulable` (the controller then taints the node
//! `node.kubernetes.io/unschedulable:NoSchedule`); drain cordons, then evicts every Pod
//! on the node through the Eviction subresource and waits until they are gone.
//!
//! Which Pods drain may evict is `select`, pure and kubectl's rules: DaemonSet Pods are
//! refused unless `--ignore-daemonsets` (then left running: their DaemonSet would put
//! them back), Pods no controller would recreate need `--force`, Pods with `emptyDir`
//! data need `--delete-emptydir-data`.

use std::io::Write;
use std::time::Duration;

use punnet_api::taint::is_daemon_set_pod;
use punnet_api::{Node, Pod};
use serde_json::json;
use tokio::time::Instant;

use crate::args::{CordonArgs, DrainArgs};
use crate::client::MERGE_PATCH;
use crate::error::{Error, Result};
use crate::kinds::Kind;
use crate::Ctx;

/// How often drain looks whether evicted Pods are gone.
const POLL: Duration = Duration::from_millis(250);

pub async fn cordon(ctx: &Ctx, args: &CordonArgs, out: &mut dyn Write) -> Result<()> {
    set_unschedulable(ctx, &args.node, true, out).await
}

pub async fn uncordon(ctx: &Ctx, args: &CordonArgs, out: &mut dyn Write) -> Result<()> {
    set_unschedulable(ctx, &args.node, false, out).await
}

/// Patches `spec.unschedulable` unless it already is as asked; prints kubectl's line.
async fn set_unschedulable(ctx: &Ctx, node: &str, on: bool, out: &mut dyn Write) -> Result<()> {
    let segs = Kind::Node.object("", node);
    let current: Node = serde_json::from_value(ctx.client.get(&segs, &[]).await?)
        .map_err(|e| Error::decode(format!("node/{node}"), e))?;
    let verb = if on { "cordoned" } else { "uncordoned" };
    if current.is_unschedulable() == on {
        writeln!(out, "node/{node} already {verb}")?;
        return Ok(());
    }
    // `null` removes the field, as kubectl's uncordon leaves it.
    let value = if on { json!(true) } else { json!(null) };
    let body = json!({ "spec": { "unschedulable": value } }).to_string();
    ctx.client.patch(&segs, MERGE_PATCH, body, &[]).await?;
    writeln!(out, "node/{node} {verb}")?;
    Ok(())
}

/// The options of `select`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    pub ignore_daemonsets: bool,
    pub delete_emptydir_data: bool,
    pub force: bool,
}

/// What drain does with the Pods of a node.
#[derive(Debug, Default, PartialEq)]
pub struct Selection {
    /// `namespace/name` of the Pods to evict.
    pub evict: Vec<String>,
    /// Warnings to print (kubectl's wording), one per rule that let Pods through or past.
    pub warnings: Vec<String>,
    /// Why drain cannot go on; empty when it can.
    pub errors: Vec<String>,
}

/// Sorts the node's Pods by kubectl's drain rules. Finished Pods (Succeeded, Failed) are
/// always deletable: nothing is lost with them.
pub fn select(pods: &[Pod], rules: Rules) -> Selection {
    let mut daemon = Vec::new();
    let mut unmanaged = Vec::new();
    let mut local = Vec::new();
    let mut sel = Selection::default();
    for p in pods {
        let key = p.metadata.key();
        let finished = matches!(p.phase(), "Succeeded" | "Failed");
        if is_daemon_set_pod(p) {
            daemon.push(key);
            continue;
        }
        if !finished && p.metadata.controller().is_none() {
            unmanaged.push(key.clone());
            if !rules.force {
                continue;
            }
        }
        if !finished && p.spec.volumes.iter().any(|v| v.empty_dir.is_some()) {
            local.push(key.clone());
            if !rules.delete_emptydir_data {
                continue;
            }
        }
        sel.evict.push(key);
    }
    let list = |v: &[String]| v.join(", ");
    if !daemon.is_empty() {
        if rules.ignore_daemonsets {
            sel.warnings.push(format!(
                "ignoring DaemonSet-managed Pods: {}",
                list(&daemon)
            ));
        } else {
            sel.errors.push(format!(
                "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {}",
                list(&daemon)
            ));
        }
    }
    if !unmanaged.is_empty() {
        if rules.force {
            sel.warnings.push(format!(
                "deleting Pods that declare no controller: {}",
                list(&unmanaged)
            ));
        } else {
            sel.errors.push(format!(
                "cannot delete Pods that declare no controller (use --force to override): {}",
                list(&unmanaged)
            ));
        }
    }
    if !local.is_empty() {
        if rules.delete_emptydir_data {
            sel.warnings.push(format!(
                "deleting Pods with local storage: {}",
                list(&local)
            ));
        } else {
            sel.errors.push(format!(
                "cannot delete Pods with local storage (use --delete-emptydir-data to override): {}",
                list(&local)
            ));
        }
    }
    if !sel.errors.is_empty() {
        sel.evict.clear();
    }
    sel
}

pub async fn drain(
    ctx: &Ctx,
    args: &DrainArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let node = &args.node;
    set_unschedulable(ctx, node, true, out).await?;
    let unable = |why: String| {
        Error::Usage(format!(
            "unable to drain node {node:?} due to error: {why}, continuing command...\nThere are pending nodes to be drained:\n {node}"
        ))
    };
    let pods = pods_on(ctx, node).await?;
    let sel = select(
        &pods,
        Rules {
            ignore_daemonsets: args.ignore_daemonsets,
            delete_emptydir_data: args.delete_emptydir_data,
            force: args.force,
        },
    );
    if !sel.errors.is_empty() {
        return Err(unable(format!("[{}]", sel.errors.join(", "))));
    }
    for w in &sel.warnings {
        writeln!(err, "Warning: {w}")?;
    }
    let deadline = args
        .timeout
        .filter(|t| !t.is_zero())
        .map(|t| Instant::now() + t);
    let mut waiting = Vec::new();
    for key in &sel.evict {
        let pod = pods
            .iter()
            .find(|p| &p.metadata.key() == key)
            .expect("selected from this list");
        let namespace = pod.metadata.namespace_or_default().to_string();
        let name = pod.metadata.name.clone();
        writeln!(out, "evicting pod {namespace}/{name}")?;
        let mut segs = Kind::Pod.object(&namespace, &name);
        segs.push("eviction".into());
        let mut body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        });
        if let Some(g) = args.grace_period.filter(|g| *g >= 0) {
            body["deleteOptions"] = json!({ "gracePeriodSeconds": g });
        }
        match ctx.client.post(&segs, &body).await {
            Ok(_) => waiting.push((namespace, name, pod.metadata.uid.clone())),
            // Gone meanwhile: as good as evicted.
            Err(e) if e.is_not_found() => writeln!(out, "pod/{name} evicted")?,
            Err(e) => return Err(unable(e.to_string())),
        }
    }
    for (namespace, name, uid) in waiting {
        loop {
            let current = ctx
                .client
                .get_opt(&Kind::Pod.object(&namespace, &name))
                .await?;
            let gone = match &current {
                None => true,
                Some(obj) => obj["metadata"]["uid"].as_str() != uid.as_deref(),
            };
            if gone {
                writeln!(out, "pod/{name} evicted")?;
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let after = args.timeout.unwrap_or_default();
                return Err(unable(format!(
                    "global timeout reached: {after:?} (pod {namespace}/{name} is still terminating)"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    writeln!(out, "node/{node} drained")?;
    Ok(())
}

/// Every Pod bound to `node`, across namespaces.
async fn pods_on(ctx: &Ctx, node: &str) -> Result<Vec<Pod>> {
    let list = ctx
        .client
        .get(
            &Kind::Pod.collection(None),
            &[("fieldSelector", format!("spec.nodeName={node}"))],
        )
        .await?;
    let items: Vec<Pod> = serde_json::from_value(list["items"].clone())
        .map_err(|e| Error::decode("list of pods", e))?;
    Ok(items
        .into_iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{EmptyDirVolumeSource, OwnerReference, Volume};

    fn pod(name: &str, owner: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.status.phase = Some("Running".into());
        if let Some(kind) = owner {
            p.metadata.owner_references.push(OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: "x".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: None,
            });
        }
        p
    }

    fn with_empty_dir(mut p: Pod) -> Pod {
        p.spec.volumes.push(Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn replicated_pods_are_evicted_and_daemon_set_pods_refused_or_ignored() {
        let pods = [
            pod("web-1", Some("Deployment")),
            pod("logs-1", Some("DaemonSet")),
        ];
        let refused = select(&pods, Rules::default());
        assert!(refused.evict.is_empty());
        assert_eq!(
            refused.errors,
            ["cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/logs-1"]
        );
        let ok = select(
            &pods,
            Rules {
                ignore_daemonsets: true,
                ..Rules::default()
            },
        );
        assert_eq!(ok.evict, ["default/web-1"]);
        assert_eq!(
            ok.warnings,
            ["ignoring DaemonSet-managed Pods: default/logs-1"]
        );
        assert!(ok.errors.is_empty());
    }

    #[test]
    fn bare_pods_need_force_and_empty_dirs_need_consent() {
        let mut done = pod("job-x", None);
        done.status.phase = Some("Succeeded".into());
        let pods = [
            pod("bare", None),
            with_empty_dir(pod("cache", Some("Deployment"))),
            done,
        ];
        let sel = select(&pods, Rules::default());
        assert_eq!(
            sel.errors,
            [
                "cannot delete Pods that declare no controller (use --force to override): default/bare",
                "cannot delete Pods with local storage (use --delete-emptydir-data to override): default/cache",
            ]
        );
        assert!(sel.evict.is_empty());
        let all = select(
            &pods,
            Rules {
                force: true,
                delete_emptydir_data: true,
                ignore_daemonsets: false,
            },
        );
        assert_eq!(
            all.evict,
            ["default/bare", "default/cache", "default/job-x"]
        );
        assert_eq!(all.warnings.len(), 2);
    }
}
