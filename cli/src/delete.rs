//! `punnet delete KIND NAME…` and `punnet delete -f FILE`: one `DELETE` per object,
//! reported as kubectl does (`deployment.apps "web" deleted`). The server deletes a
//! Deployment's Pods afterwards; the CLI does not wait for that.

use std::io::Write;

use crate::args::DeleteArgs;
use crate::error::{Error, Result};
use crate::kinds::{Kind, Targets};
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
        let Some(pairs) = Targets::parse(resource, &args.names)?.pairs() else {
            return Err(Error::Usage(
                "resource(s) were provided, but no name was specified".into(),
            ));
        };
        pairs
            .into_iter()
            .map(|(kind, name)| (kind, ctx.namespace.clone(), name))
            .collect()
    };

    // Like kubectl, a missing object does not stop the others.
    let mut failed = false;
    for (kind, namespace, name) in targets {
        match ctx.client.delete(&kind.object(&namespace, &name)).await {
            Ok(_) => writeln!(out, "{} {name:?} deleted", kind.singular())?,
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) => {
                failed = true;
                if let Some(line) = Error::from(e).report() {
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
