//! `punnet scale deployment NAME --replicas N`: a JSON merge patch of `spec.replicas`,
//! so nothing else in the Deployment is touched.

use std::io::Write;

use serde_json::json;

use crate::args::ScaleArgs;
use crate::client::MERGE_PATCH;
use crate::error::{Error, Result};
use crate::kinds::{parse_reference, Kind};
use crate::Ctx;

pub async fn scale(ctx: &Ctx, args: &ScaleArgs, out: &mut dyn Write) -> Result<()> {
    let (kind, name) =
        match (&args.resource, &args.name) {
            (r, None) if r.contains('/') => parse_reference(r)?,
            (r, Some(_)) if r.contains('/') => return Err(Error::Usage(
                "there is no need to specify a resource type as a separate argument when passing \
                 arguments in resource/name form"
                    .into(),
            )),
            (r, Some(name)) => (Kind::parse(r)?, name.clone()),
            (_, None) => {
                return Err(Error::Usage(
                    "resource(s) were provided, but no name was specified".into(),
                ))
            }
        };
    if kind != Kind::Deployment {
        return Err(Error::Usage(format!(
            "{} cannot be scaled: only deployments have replicas",
            kind.plural()
        )));
    }
    let body = json!({ "spec": { "replicas": args.replicas } }).to_string();
    ctx.client
        .patch(&kind.object(&ctx.namespace, &name), MERGE_PATCH, body, &[])
        .await?;
    writeln!(out, "{} scaled", kind.reference(&name))?;
    Ok(())
}
