//! `punnet rollout status|history|undo|restart|pause|resume deployment NAME`, and the
//! ReplicaSet views `get rs` and `describe rs` / `describe deployment` use. As kubectl
//! does, undo is client-side: it copies the chosen revision's template (kept in that
//! revision's ReplicaSet) back into the Deployment. The texts are pure functions of
//! the objects, tested as strings.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use punnet_api::{
    Deployment, PodTemplateSpec, ReplicaSet, ANNOTATION_RESTARTED_AT, ANNOTATION_REVISION,
    LABEL_POD_TEMPLATE_HASH,
};
use serde_json::{json, Map, Value};

use crate::age::age;
use crate::args::{RolloutCommand, RolloutTarget};
use crate::client::MERGE_PATCH;
use crate::error::{Error, Result};
use crate::get::{list_items, typed};
use crate::kinds::{parse_reference, Kind};
use crate::labels::selector_string;
use crate::table::{tabwrite, Table};
use crate::Ctx;

/// How often `rollout status` looks again.
const POLL: Duration = Duration::from_millis(500);
/// kubectl's annotation for why a revision was made.
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

pub async fn rollout(
    ctx: &Ctx,
    cmd: &RolloutCommand,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> Result<()> {
    match cmd {
        RolloutCommand::Status(a) => {
            let name = target(&a.target)?;
            status(ctx, &name, a.timeout, a.watch, out).await
        }
        RolloutCommand::History(a) => {
            let name = target(&a.target)?;
            let d = get(ctx, &name).await?;
            let sets = replica_sets_of(ctx, &d).await?;
            let text = match a.revision {
                None => history(&d, &sets),
                Some(r) => revision_detail(&d, &sets, r)?,
            };
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        RolloutCommand::Undo(a) => {
            let name = target(&a.target)?;
            let d = get(ctx, &name).await?;
            let sets = replica_sets_of(ctx, &d).await?;
            let reference = Kind::Deployment.reference(&name);
            match undo_patch(&d, &sets, a.to_revision)? {
                Undo::Skip(rev) => writeln!(
                    out,
                    "{reference} skipped rollback (current template already matches revision {rev})"
                )?,
                Undo::Patch(patch) => {
                    patch_deployment(ctx, &name, patch).await?;
                    writeln!(out, "{reference} rolled back")?;
                }
            }
            Ok(())
        }
        RolloutCommand::Restart(t) => {
            let name = target(t)?;
            let d = get(ctx, &name).await?;
            if d.spec.paused {
                return Err(Error::Rollout(format!(
                    "deployments.apps {name:?} can't restart paused deployment (run rollout resume first)"
                )));
            }
            let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                ANNOTATION_RESTARTED_AT: now
            }}}}});
            patch_deployment(ctx, &name, patch).await?;
            writeln!(out, "{} restarted", Kind::Deployment.reference(&name))?;
            Ok(())
        }
        RolloutCommand::Pause(t) => set_paused(ctx, t, true, out).await,
        RolloutCommand::Resume(t) => set_paused(ctx, t, false, out).await,
    }
}

/// The Deployment a `rollout` command names: `deployment NAME` or `deployment/NAME`.
fn target(t: &RolloutTarget) -> Result<String> {
    let (kind, name) = match (&t.resource, &t.name) {
        (r, None) if r.contains('/') => parse_reference(r)?,
        (r, Some(_)) if r.contains('/') => {
            return Err(Error::Usage(
                "there is no need to specify a resource type as a separate argument when \
                 passing arguments in resource/name form"
                    .into(),
            ))
        }
        (r, Some(name)) => (Kind::parse(r)?, name.clone()),
        (_, None) => {
            return Err(Error::Usage(
                "required resource not specified: name a deployment, e.g. `deployment/web`".into(),
            ))
        }
    };
    if kind != Kind::Deployment {
        return Err(Error::Usage(format!(
            "no rollout for {}: only deployments roll out",
            kind.plural()
        )));
    }
    Ok(name)
}

async fn get(ctx: &Ctx, name: &str) -> Result<Deployment> {
    let v = ctx
        .client
        .get(&Kind::Deployment.object(&ctx.namespace, name), &[])
        .await?;
    typed(Kind::Deployment, &v)
}

async fn patch_deployment(ctx: &Ctx, name: &str, patch: Value) -> Result<()> {
    ctx.client
        .patch(
            &Kind::Deployment.object(&ctx.namespace, name),
            MERGE_PATCH,
            patch.to_string(),
            &[],
        )
        .await?;
    Ok(())
}

async fn set_paused(ctx: &Ctx, t: &RolloutTarget, paused: bool, out: &mut dyn Write) -> Result<()> {
    let name = target(t)?;
    let d = get(ctx, &name).await?;
    let word = if paused { "paused" } else { "resumed" };
    if d.spec.paused == paused {
        return Err(Error::Rollout(format!(
            "deployments.apps {name:?} is not {}",
            if paused { "resumed" } else { "paused" }
        )));
    }
    patch_deployment(ctx, &name, json!({"spec": {"paused": paused}})).await?;
    writeln!(out, "{} {word}", Kind::Deployment.reference(&name))?;
    Ok(())
}

/// The ReplicaSets a Deployment controls (by its selector, then by owner uid).
pub async fn replica_sets_of(ctx: &Ctx, d: &Deployment) -> Result<Vec<ReplicaSet>> {
    let namespace = d.metadata.namespace_or_default();
    let list = ctx
        .client
        .get(
            &Kind::ReplicaSet.collection(Some(namespace)),
            &[("labelSelector", selector_string(&d.spec.selector))],
        )
        .await?;
    let mut sets: Vec<ReplicaSet> = list_items(list)
        .iter()
        .map(|v| typed(Kind::ReplicaSet, v))
        .collect::<Result<_>>()?;
    sets.retain(|rs| {
        rs.metadata
            .controller()
            .is_some_and(|o| o.kind == "Deployment" && Some(&o.uid) == d.metadata.uid.as_ref())
    });
    sets.sort_by_key(revision);
    Ok(sets)
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .get(ANNOTATION_REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// A ReplicaSet's template without the label the controller added.
fn template_of(rs: &ReplicaSet) -> PodTemplateSpec {
    let mut t = rs.spec.template.clone();
    t.metadata.labels.remove(LABEL_POD_TEMPLATE_HASH);
    t
}

/// kubectl's `rollout status` line for the Deployment, and whether it is done; an error
/// once it exceeded its progress deadline.
pub fn status_line(d: &Deployment) -> Result<(String, bool)> {
    let name = &d.metadata.name;
    let s = &d.status;
    if d.metadata.generation.unwrap_or(0) > s.observed_generation.unwrap_or(0) {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    let progressing = s.conditions.iter().find(|c| c.type_ == "Progressing");
    if progressing.and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded") {
        return Err(Error::Rollout(format!(
            "deployment {name:?} exceeded its progress deadline"
        )));
    }
    let want = d.spec.replicas();
    let line = if s.updated_replicas < want {
        format!(
            "Waiting for deployment {name:?} rollout to finish: {} out of {want} new replicas have been updated...",
            s.updated_replicas
        )
    } else if s.replicas > s.updated_replicas {
        format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            s.replicas - s.updated_replicas
        )
    } else if s.available_replicas < s.updated_replicas {
        format!(
            "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
            s.available_replicas, s.updated_replicas
        )
    } else {
        return Ok((format!("deployment {name:?} successfully rolled out"), true));
    };
    Ok((line, false))
}

async fn status(
    ctx: &Ctx,
    name: &str,
    timeout: Duration,
    watch: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let d = get(ctx, name).await?;
        let (line, done) = status_line(&d)?;
        if line != last {
            writeln!(out, "{line}")?;
            out.flush()?;
            last = line;
        }
        if done || !watch {
            return Ok(());
        }
        if !timeout.is_zero() && started.elapsed() >= timeout {
            return Err(Error::Rollout("timed out waiting for the condition".into()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `REVISION  CHANGE-CAUSE`, oldest first.
pub fn history(d: &Deployment, sets: &[ReplicaSet]) -> String {
    let mut text = format!("{}\n", Kind::Deployment.reference(&d.metadata.name));
    let mut rows = vec!["REVISION\tCHANGE-CAUSE".to_string()];
    let mut sets: Vec<&ReplicaSet> = sets.iter().filter(|r| revision(r) > 0).collect();
    sets.sort_by_key(|r| revision(r));
    for rs in sets {
        let cause = rs
            .metadata
            .annotations
            .get(CHANGE_CAUSE)
            .map(String::as_str)
            .unwrap_or("<none>");
        rows.push(format!("{}\t{cause}", revision(rs)));
    }
    text.push_str(&tabwrite(&(rows.join("\n") + "\n"), 2));
    text
}

/// `--revision N`: that revision's Pod template.
pub fn revision_detail(d: &Deployment, sets: &[ReplicaSet], rev: i64) -> Result<String> {
    let rs = sets
        .iter()
        .find(|r| revision(r) == rev)
        .ok_or_else(|| Error::Rollout(format!("unable to find the specified revision {rev}")))?;
    let t = &rs.spec.template;
    let mut doc = format!(
        "{} with revision #{rev}\nPod Template:\n",
        Kind::Deployment.reference(&d.metadata.name)
    );
    let mut body = String::new();
    let map = |key: &str, m: &std::collections::BTreeMap<String, String>, body: &mut String| {
        if m.is_empty() {
            body.push_str(&format!("  {key}:\t<none>\n"));
        }
        for (i, (k, v)) in m.iter().enumerate() {
            let head = if i == 0 {
                format!("{key}:")
            } else {
                String::new()
            };
            body.push_str(&format!("  {head}\t{k}={v}\n"));
        }
    };
    map("Labels", &t.metadata.labels, &mut body);
    map("Annotations", &t.metadata.annotations, &mut body);
    doc.push_str(&tabwrite(&body, 2));
    doc.push_str("  Containers:\n");
    let mut containers = String::new();
    for c in &t.spec.containers {
        containers.push_str(&format!("   {}:\n", c.name));
        containers.push_str(&format!("    Image:\t{}\n", c.image));
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.container_port,
                    p.protocol.as_deref().unwrap_or("TCP")
                )
            })
            .collect();
        let ports = if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(", ")
        };
        containers.push_str(&format!("    Port:\t{ports}\n"));
        let env: Vec<String> = c
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value.as_deref().unwrap_or("")))
            .collect();
        containers.push_str(&format!(
            "    Environment:\t{}\n",
            if env.is_empty() {
                "<none>".into()
            } else {
                env.join(", ")
            }
        ));
    }
    doc.push_str(&tabwrite(&containers, 2));
    Ok(doc)
}

/// What `rollout undo` does.
#[derive(Debug, PartialEq)]
pub enum Undo {
    /// The template already is that revision's.
    Skip(i64),
    /// A JSON merge patch that sets the Deployment's template to the revision's.
    Patch(Value),
}

/// Undo to `to_revision` (0: the one before the current). The patch replaces the whole
/// template: fields the revision does not have are removed (set to null).
pub fn undo_patch(d: &Deployment, sets: &[ReplicaSet], to_revision: i64) -> Result<Undo> {
    let rs = if to_revision == 0 {
        let mut revs: Vec<&ReplicaSet> = sets.iter().filter(|r| revision(r) > 0).collect();
        revs.sort_by_key(|r| std::cmp::Reverse(revision(r)));
        revs.get(1).copied().ok_or_else(|| {
            Error::Rollout(
                "no rollout history found for deployment; nothing to roll back to".into(),
            )
        })?
    } else {
        sets.iter()
            .find(|r| revision(r) == to_revision)
            .ok_or_else(|| {
                Error::Rollout(format!(
                    "unable to find specified revision {to_revision} in history"
                ))
            })?
    };
    let target = template_of(rs);
    if target == d.spec.template {
        return Ok(Undo::Skip(revision(rs)));
    }
    let from = punnet_api::object::to_json(&d.spec.template);
    let to = punnet_api::object::to_json(&target);
    Ok(Undo::Patch(
        json!({"spec": {"template": merge_diff(&from, &to)}}),
    ))
}

/// The RFC 7386 merge patch that turns `from` into `to`.
pub fn merge_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(f), Value::Object(t)) => {
            let mut patch = Map::new();
            for (k, fv) in f {
                match t.get(k) {
                    None => {
                        patch.insert(k.clone(), Value::Null);
                    }
                    Some(tv) if tv != fv => {
                        patch.insert(k.clone(), merge_diff(fv, tv));
                    }
                    Some(_) => {}
                }
            }
            for (k, tv) in t {
                if !f.contains_key(k) {
                    patch.insert(k.clone(), tv.clone());
                }
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}

/// `describe deployment`'s StrategyType and RollingUpdateStrategy.
pub fn strategy_lines(d: &Deployment) -> (String, Option<String>) {
    if d.spec.is_recreate() {
        return ("Recreate".into(), None);
    }
    let (surge, unavailable) = d.spec.rolling_params();
    (
        "RollingUpdate".into(),
        Some(format!("{unavailable} max unavailable, {surge} max surge")),
    )
}

/// `describe deployment`'s OldReplicaSets (those still asked to run Pods) and
/// NewReplicaSet (the one of the current template), as `name (ready/desired replicas
/// created)`.
pub fn old_and_new(d: &Deployment, sets: &[ReplicaSet]) -> (String, String) {
    let show = |rs: &ReplicaSet| {
        format!(
            "{} ({}/{} replicas created)",
            rs.metadata.name,
            rs.status.replicas,
            rs.spec.replicas()
        )
    };
    let is_new = |rs: &ReplicaSet| template_of(rs) == d.spec.template;
    let old: Vec<String> = sets
        .iter()
        .filter(|rs| !is_new(rs) && rs.spec.replicas() > 0)
        .map(show)
        .collect();
    let new = sets.iter().find(|rs| is_new(rs)).map(show);
    (
        if old.is_empty() {
            "<none>".into()
        } else {
            old.join(", ")
        },
        new.unwrap_or_else(|| "<none>".into()),
    )
}

/// `NAME DESIRED CURRENT READY AGE` (+ `CONTAINERS IMAGES SELECTOR`).
pub fn replica_set_table(
    sets: &[ReplicaSet],
    wide: bool,
    show_namespace: bool,
    now: DateTime<Utc>,
) -> Table {
    let mut cols: Vec<String> = ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if wide {
        cols.extend(["CONTAINERS", "IMAGES", "SELECTOR"].map(String::from));
    }
    if show_namespace {
        cols.insert(0, "NAMESPACE".into());
    }
    let mut table = Table::new(&cols);
    for rs in sets {
        let mut row = vec![
            rs.metadata.name.clone(),
            rs.spec.replicas().to_string(),
            rs.status.replicas.to_string(),
            rs.status.ready_replicas.to_string(),
            age(rs.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            let c = &rs.spec.template.spec.containers;
            row.push(
                c.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            row.push(
                c.iter()
                    .map(|c| c.image.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            row.push(selector_string(&rs.spec.selector));
        }
        if show_namespace {
            row.insert(0, rs.metadata.namespace_or_default().to_string());
        }
        table.push(row);
    }
    table
}

/// `describe rs`.
pub fn describe_replica_set(rs: &ReplicaSet) -> String {
    let m = &rs.metadata;
    let mut text = String::new();
    let mut field =
        |k: &str, v: String| text.push_str(&format!("{k}:\t{}\n", v.replace('\t', " ")));
    field("Name", m.name.clone());
    field("Namespace", m.namespace_or_default().to_string());
    field("Selector", selector_string(&rs.spec.selector));
    let pairs = |map: &std::collections::BTreeMap<String, String>| {
        if map.is_empty() {
            "<none>".to_string()
        } else {
            map.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    field("Labels", pairs(&m.labels));
    field("Annotations", pairs(&m.annotations));
    field(
        "Controlled By",
        m.controller()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .unwrap_or_else(|| "<none>".into()),
    );
    field(
        "Replicas",
        format!(
            "{} current / {} desired",
            rs.status.replicas,
            rs.spec.replicas()
        ),
    );
    field(
        "Pods Status",
        format!(
            "{} Ready / {} Available",
            rs.status.ready_replicas, rs.status.available_replicas
        ),
    );
    field(
        "Pod Template Labels",
        pairs(&rs.spec.template.metadata.labels),
    );
    field(
        "Images",
        rs.spec
            .template
            .spec
            .containers
            .iter()
            .map(|c| format!("{}={}", c.name, c.image))
            .collect::<Vec<_>>()
            .join(", "),
    );
    tabwrite(&text, 2)
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
