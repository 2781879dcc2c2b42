//! `punnet logs`: streams `GET …/pods/NAME/log` to stdout as it arrives, flushing each
//! chunk so `-f` shows lines as the container writes them. `deployment/NAME` picks the
//! Pod kubectl would: scheduled, running and ready first, then the oldest.

use std::io::Write;

use futures_util::StreamExt;
use punnet_api::{phase, Deployment, Pod};

use crate::args::LogsArgs;
use crate::client::Segments;
use crate::error::{Error, Result};
use crate::get::{list_items, typed};
use crate::kinds::{parse_reference, Kind};
use crate::labels::selector_string;
use crate::Ctx;

pub async fn logs(
    ctx: &Ctx,
    args: &LogsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let pod = if args.target.contains('/') {
        match parse_reference(&args.target)? {
            (Kind::Pod, name) => name,
            (Kind::Deployment, name) => first_pod(ctx, &name, err).await?,
            (kind, _) => {
                return Err(Error::Usage(format!(
                    "cannot get logs from a {}: name a pod or a deployment",
                    kind.kind().to_ascii_lowercase()
                )))
            }
        }
    } else {
        args.target.clone()
    };
    let query = log_query(args.container.as_deref(), args.follow, args.tail);
    let response = ctx
        .client
        .stream(&log_path(&ctx.namespace, &pod), &query)
        .await?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Stream {
            pod: pod.clone(),
            message: e.to_string(),
        })?;
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

pub fn log_path(namespace: &str, pod: &str) -> Segments {
    let mut segs = Kind::Pod.object(namespace, pod);
    segs.push("log".into());
    segs
}

pub fn log_query(
    container: Option<&str>,
    follow: bool,
    tail: Option<i64>,
) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(c) = container {
        q.push(("container", c.to_string()));
    }
    if follow {
        q.push(("follow", "true".to_string()));
    }
    // kubectl's `--tail=-1` means everything.
    if let Some(n) = tail.filter(|n| *n >= 0) {
        q.push(("tailLines", n.to_string()));
    }
    q
}

async fn first_pod(ctx: &Ctx, deployment: &str, err: &mut dyn Write) -> Result<String> {
    let d: Deployment = typed(
        Kind::Deployment,
        &ctx.client
            .get(&Kind::Deployment.object(&ctx.namespace, deployment), &[])
            .await?,
    )?;
    let selector = selector_string(&d.spec.selector);
    let reference = Kind::Deployment.reference(deployment);
    if selector.is_empty() {
        return Err(Error::Usage(format!("{reference} has an empty selector")));
    }
    let list = ctx
        .client
        .get(
            &Kind::Pod.collection(Some(&ctx.namespace)),
            &[("labelSelector", selector)],
        )
        .await?;
    let pods = list_items(list)
        .iter()
        .map(|v| typed(Kind::Pod, v))
        .collect::<Result<Vec<Pod>>>()?;
    let Some(pod) = pick_pod(&pods) else {
        return Err(Error::Usage(format!("{reference} has no pods yet")));
    };
    if pods.len() > 1 {
        writeln!(
            err,
            "Found {} pods, using pod/{}",
            pods.len(),
            pod.metadata.name
        )?;
    }
    Ok(pod.metadata.name.clone())
}

/// The Pod whose logs are most likely the interesting ones.
pub fn pick_pod(pods: &[Pod]) -> Option<&Pod> {
    pods.iter().min_by_key(|p| {
        let phase_rank = match p.phase() {
            phase::RUNNING => 0,
            phase::PENDING => 1,
            _ => 2,
        };
        (
            p.metadata.deletion_timestamp.is_some(),
            p.spec.node_name.is_none(),
            phase_rank,
            !p.is_ready(),
            p.metadata.creation_timestamp,
            p.metadata.name.clone(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_path() {
        assert_eq!(
            log_query(Some("web"), true, Some(10)),
            vec![
                ("container", "web".to_string()),
                ("follow", "true".to_string()),
                ("tailLines", "10".to_string())
            ]
        );
        assert!(log_query(None, false, Some(-1)).is_empty());
        assert_eq!(
            log_path("default", "x").join("/"),
            "api/v1/namespaces/default/pods/x/log"
        );
    }

    #[test]
    fn prefers_running_pods_on_a_node() {
        let mut pending = Pod::default();
        pending.metadata.name = "a".into();
        let mut running = Pod::default();
        running.metadata.name = "b".into();
        running.spec.node_name = Some("pi-1".into());
        running.status.phase = Some("Running".into());
        let pods = [pending, running];
        assert_eq!(pick_pod(&pods).unwrap().metadata.name, "b");
        assert!(pick_pod(&[]).is_none());
    }
}
