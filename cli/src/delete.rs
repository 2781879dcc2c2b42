//! `punnet delete KIND NAME…` and `punnet delete -f FILE`: one `DELETE` per object,
//! reported as kubectl does (`deployment.apps "web" deleted`), then, by default, a wait
//! until each object is gone: a Pod that runs somewhere is only `Terminating` until its
//! node has stopped its containers. `--grace-period`, `--now` and `--force` pass the
//! grace period on as `gracePeriodSeconds`. `--cascade=background|foreground|orphan`
//! becomes `propagationPolicy`: by default the server deletes the owner's Pods after it
//! (the CLI does not wait for them); with `foreground` the owner, and so the wait,
//! lasts until they are gone; with `orphan` they stay.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

use crate::args::DeleteArgs;
use crate::error::{Error, Result};
use crate::get::{list_items, no_resources};
use crate::kinds::{Kind, Targets};
use crate::labels::selector_query;
use crate::manifests::load;
use crate::Ctx;

pub async fn delete(
    ctx: &Ctx,
    args: &DeleteArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let targets: Vec<(Kind, String, String)> = if !args.files.is_empty() {
        if args.resource.is_some() {
            return Err(Error::Usage(
                "give either -f or resources by name, not both".into(),
            ));
        }
        load(&args.files, ctx.namespace_flag.as_deref(), false)?
            .into_iter()
            .map(|l| {
                let m = l.object.meta();
                (
                    Kind::of(&l.object),
                    m.namespace_or_default().to_string(),
                    m.name.clone(),
                )
            })
            .collect()
    } else {
        let Some(resource) = &args.resource else {
            return Err(Error::Usage(
                "you must provide one or more resources by argument or filename".into(),
            ));
        };
        let targets = Targets::parse(resource, &args.names)?;
        match (targets.pairs(), &args.selector) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "name cannot be provided when a selector is specified".into(),
                ))
            }
            (Some(pairs), None) => pairs
                .into_iter()
                .map(|(kind, name)| (kind, ctx.namespace.clone(), name))
                .collect(),
            (None, Some(selector)) => {
                let Targets::Kind { kind, .. } = targets else {
                    unreachable!("only a bare kind has no names")
                };
                let matching = selected(ctx, kind, selector).await?;
                if matching.is_empty() {
                    writeln!(err, "{}", no_resources(kind, ctx.list_namespace(kind)))?;
                    return Ok(());
                }
                matching
            }
            (None, None) => {
                return Err(Error::Usage(
                    "resource(s) were provided, but no name was specified".into(),
                ))
            }
        }
    };

    let grace = grace_period(args)?;
    if args.force {
        writeln!(err, "Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely.")?;
    }
    let mut query: Vec<(&str, String)> = grace
        .map(|g| vec![("gracePeriodSeconds", g.to_string())])
        .unwrap_or_default();
    // Background is the server's default: sent only when something else is asked.
    match propagation_policy(&args.cascade)? {
        "Background" => {}
        policy => query.push(("propagationPolicy", policy.into())),
    }

    // Like kubectl, a missing object does not stop the others.
    let mut failed = false;
    let mut deleting = Vec::new();
    for (kind, namespace, name) in targets {
        match ctx
            .client
            .delete(&kind.object(&namespace, &name), &query)
            .await
        {
            Ok(obj) => {
                let verb = if grace == Some(0) {
                    "force deleted"
                } else {
                    "deleted"
                };
                writeln!(out, "{} {name:?} {verb}", kind.singular())?;
                let uid = obj["metadata"]["uid"].as_str().map(str::to_string);
                deleting.push((kind, namespace, name, uid));
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) => {
                failed = true;
                if let Some(line) = Error::from(e).report() {
                    writeln!(err, "{line}")?;
                }
            }
        }
    }
    if args.wait {
        wait_gone(ctx, &deleting, args.timeout).await?;
    }
    if failed {
        Err(Error::AlreadyReported)
    } else {
        Ok(())
    }
}

/// The objects of `kind` the selector matches, in the namespace (or all, with `-A`).
async fn selected(ctx: &Ctx, kind: Kind, selector: &str) -> Result<Vec<(Kind, String, String)>> {
    let query = selector_query(Some(selector))?;
    let list = ctx
        .client
        .get(&kind.collection(ctx.list_namespace(kind)), &query)
        .await?;
    Ok(list_items(list)
        .into_iter()
        .map(|v| {
            let namespace = v["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&ctx.namespace)
                .to_string();
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (kind, namespace, name)
        })
        .collect())
}

/// The `gracePeriodSeconds` to send, by kubectl's rules: `--now` is 1; 0 only with
/// `--force` (else 1: an accidental 0 must not skip the stop); `--force` alone is 0; a
/// negative value means the Pod's own.
pub fn grace_period(args: &DeleteArgs) -> Result<Option<i64>> {
    if args.now && args.grace_period.is_some() {
        return Err(Error::Usage(
            "--now and --grace-period cannot be specified together".into(),
        ));
    }
    let requested = if args.now {
        Some(1)
    } else {
        args.grace_period.filter(|g| *g >= 0)
    };
    Ok(match (requested, args.force) {
        (None, true) => Some(0),
        (Some(0), false) => Some(1),
        (g, _) => g,
    })
}

/// The `propagationPolicy` for kubectl's `--cascade` values (`true` and `false` are
/// its deprecated spellings of background and orphan).
pub fn propagation_policy(cascade: &str) -> Result<&'static str> {
    match cascade {
        "background" | "true" => Ok("Background"),
        "foreground" => Ok("Foreground"),
        "orphan" | "false" => Ok("Orphan"),
        other => Err(Error::Usage(format!(
            "invalid cascade value ({other}). Must be \"background\", \"foreground\", or \"orphan\""
        ))),
    }
}

/// How often the wait looks again.
const POLL: Duration = Duration::from_millis(250);

/// Waits until every object is gone (not found, or another incarnation by uid).
async fn wait_gone(
    ctx: &Ctx,
    objects: &[(Kind, String, String, Option<String>)],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for (kind, namespace, name, uid) in objects {
        loop {
            let current = ctx.client.get_opt(&kind.object(namespace, name)).await?;
            let gone = match &current {
                None => true,
                Some(obj) => uid
                    .as_deref()
                    .is_some_and(|u| obj["metadata"]["uid"].as_str() != Some(u)),
            };
            if gone {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::DeleteTimeout {
                    what: format!("{} {name:?}", kind.singular()),
                    after: format!("{timeout:?}"),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cascade_values_as_kubectl_takes_them() {
        assert_eq!(propagation_policy("background").unwrap(), "Background");
        assert_eq!(propagation_policy("true").unwrap(), "Background");
        assert_eq!(propagation_policy("foreground").unwrap(), "Foreground");
        assert_eq!(propagation_policy("false").unwrap(), "Orphan");
        assert_eq!(
            propagation_policy("sometimes").unwrap_err().to_string(),
            "invalid cascade value (sometimes). Must be \"background\", \"foreground\", or \"orphan\""
        );
    }
}
