//! `punnet apply -f`: every object is parsed and validated locally first, then sent
//! with server-side apply (`PATCH`, `application/apply-patch+yaml`). A `GET` before
//! the patch tells created from configured; an unchanged `resourceVersion` after it
//! means the server found nothing to change.

use std::fmt;
use std::io::Write;

use punnet_api::Object;
use serde_json::Value;

use crate::args::ApplyArgs;
use crate::client::{Client, APPLY_PATCH, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::kinds::Kind;
use crate::manifests::load;
use crate::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// From the object before the apply (`None`: it did not exist) and the server's answer.
pub fn decide(before: Option<&Value>, after: &Value) -> Outcome {
    let rv = |v: &Value| v["metadata"]["resourceVersion"].as_str().map(str::to_owned);
    match before {
        None => Outcome::Created,
        Some(b) if rv(b).is_some() && rv(b) == rv(after) => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    }
}

pub async fn apply(
    ctx: &Ctx,
    args: &ApplyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let objects = load(&args.files, ctx.namespace_flag.as_deref(), true)?;
    if objects.is_empty() {
        return Err(Error::Usage("no objects passed to apply".into()));
    }
    // Like kubectl, one object failing does not stop the others.
    let mut failed = false;
    for loaded in &objects {
        let reference = Kind::of(&loaded.object).reference(&loaded.object.meta().name);
        match apply_one(&ctx.client, &loaded.object).await {
            Ok(outcome) => writeln!(out, "{reference} {outcome}")?,
            Err(e) => {
                failed = true;
                if let Some(line) = e.report() {
                    writeln!(err, "{line}")?;
                }
            }
        }
    }
    if failed {
        Err(Error::AlreadyReported)
    } else {
        Ok(())
    }
}

async fn apply_one(client: &Client, object: &Object) -> Result<Outcome> {
    let kind = Kind::of(object);
    let meta = object.meta();
    let path = kind.object(meta.namespace_or_default(), &meta.name);
    let before = client.get_opt(&path).await?;
    // Status belongs to the server (the types' zero counters would otherwise be sent as
    // if the user had set them). JSON is YAML, and the server accepts either.
    let mut json = object.to_json();
    if let Some(map) = json.as_object_mut() {
        map.remove("status");
    }
    let body = serde_json::to_string(&json).map_err(|e| Error::decode(object.describe(), e))?;
    let query = [
        ("fieldManager", FIELD_MANAGER.to_string()),
        ("force", "true".to_string()),
    ];
    let after = client.patch(&path, APPLY_PATCH, body, &query).await?;
    Ok(decide(before.as_ref(), &after))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decision_from_resource_versions() {
        let at = |rv: &str| json!({"metadata": {"name": "web", "resourceVersion": rv}});
        assert_eq!(decide(None, &at("1")), Outcome::Created);
        assert_eq!(decide(Some(&at("1")), &at("1")), Outcome::Unchanged);
        assert_eq!(decide(Some(&at("1")), &at("2")), Outcome::Configured);
        // Without versions nothing can be shown unchanged.
        assert_eq!(decide(Some(&json!({})), &json!({})), Outcome::Configured);
    }
}
