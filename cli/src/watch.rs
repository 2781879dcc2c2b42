//! `punnet get KIND -w` / `--watch-only`: the list as a table, then one row per change
//! as the server's watch stream reports it (as kubectl prints them). A stream that ends
//! (the server's timeout, a restart, a dropped connection) is resumed from the last
//! version seen; when that version has expired (410 Gone) the list is fetched again and
//! the objects that changed meanwhile are printed. Runs until interrupted.

use std::io::Write;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use crate::args::{GetArgs, OutputFormat};
use crate::client::{ClientError, Segments};
use crate::error::{Error, Result};
use crate::get::{complete, list_items};
use crate::kinds::Kind;
use crate::Ctx;

/// Waits between reconnects grow to this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What is being watched and how one object becomes output.
struct Source<'a> {
    path: Segments,
    query: Vec<(&'static str, String)>,
    /// The text for some objects: a table with headers when `header`, else rows only.
    render: &'a dyn Fn(&[Value], bool) -> Result<String>,
}

fn version(v: &Value) -> Option<u64> {
    v["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

pub async fn watch(
    ctx: &Ctx,
    args: &GetArgs,
    kind: Kind,
    query: Vec<(&'static str, String)>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let scope = ctx.list_namespace(kind);
    let show_ns = ctx.all_namespaces && kind.namespaced();
    let format = args.output;
    let render = move |items: &[Value], header: bool| -> Result<String> {
        let pairs: Vec<(Kind, Value)> = items
            .iter()
            .map(|v| (kind, complete(kind, v.clone())))
            .collect();
        let mut buf = Vec::new();
        if !matches!(format, None | Some(OutputFormat::Wide)) {
            // -o json|yaml|name: each object on its own, as kubectl prints them.
            for pair in &pairs {
                crate::get::print(
                    std::slice::from_ref(pair),
                    format,
                    true,
                    show_ns,
                    Utc::now(),
                    &mut buf,
                )?;
            }
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        crate::get::print(&pairs, format, false, show_ns, Utc::now(), &mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        Ok(text
            .lines()
            .skip(usize::from(!header))
            .map(|l| format!("{l}\n"))
            .collect())
    };
    let source = Source {
        path: kind.collection(scope),
        query,
        render: &render,
    };
    run(ctx, &source, !args.watch_only, out, err).await
}

/// `punnet get events -w`.
pub async fn watch_events(
    ctx: &Ctx,
    args: &GetArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let scope = (!ctx.all_namespaces).then_some(ctx.namespace.as_str());
    let show_ns = ctx.all_namespaces;
    let render = move |items: &[Value], header: bool| -> Result<String> {
        let events = crate::events::decode(items)?;
        let text = crate::events::table(&events, show_ns, Utc::now()).render();
        Ok(if header {
            text
        } else {
            text.lines().skip(1).map(|l| format!("{l}\n")).collect()
        })
    };
    let source = Source {
        path: crate::events::collection(scope),
        query: crate::events::query(args)?,
        render: &render,
    };
    run(ctx, &source, !args.watch_only, out, err).await
}

/// Lists, then watches and resumes until the process is interrupted.
async fn run(
    ctx: &Ctx,
    source: &Source<'_>,
    show_list: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let list = ctx.client.get(&source.path, &source.query).await?;
    let mut rv = version(&list).unwrap_or(0);
    let items = list_items(list);
    let mut header_done = false;
    if show_list && !items.is_empty() {
        out.write_all((source.render)(&items, true)?.as_bytes())?;
        out.flush()?;
        header_done = true;
    }
    let mut failures: u32 = 0;
    loop {
        let mut query = source.query.clone();
        query.extend([
            ("watch", "true".to_string()),
            ("resourceVersion", rv.to_string()),
            ("allowWatchBookmarks", "true".to_string()),
        ]);
        let outcome = match ctx.client.stream(&source.path, &query).await {
            Ok(resp) => {
                failures = 0;
                follow(resp, source, &mut rv, &mut header_done, out).await?
            }
            Err(ClientError::Api { code: 410, .. }) => Outcome::Expired,
            Err(e @ (ClientError::Unreachable { .. } | ClientError::Transport { .. })) => {
                failures += 1;
                if failures == 1 {
                    writeln!(err, "{e}; retrying")?;
                }
                Outcome::Broken
            }
            Err(e) => return Err(e.into()),
        };
        match outcome {
            Outcome::Ended => {}
            Outcome::Broken => {
                let wait = Duration::from_millis(250 * 2u64.pow(failures.min(6))).min(MAX_BACKOFF);
                tokio::time::sleep(wait).await;
            }
            Outcome::Expired => {
                // Re-list: what changed while we could not follow is printed once.
                let list = ctx.client.get(&source.path, &source.query).await?;
                let new_rv = version(&list).unwrap_or(rv);
                let changed: Vec<Value> = list_items(list)
                    .into_iter()
                    .filter(|v| version(v).is_some_and(|r| r > rv))
                    .collect();
                if !changed.is_empty() {
                    out.write_all((source.render)(&changed, !header_done)?.as_bytes())?;
                    out.flush()?;
                    header_done = true;
                }
                rv = new_rv;
            }
        }
    }
}

enum Outcome {
    /// The server ended the stream (its timeout): resume.
    Ended,
    /// The connection failed: resume after a pause.
    Broken,
    /// The version is too old: list again.
    Expired,
}

async fn follow(
    mut resp: reqwest::Response,
    source: &Source<'_>,
    rv: &mut u64,
    header_done: &mut bool,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Outcome::Ended),
            Err(_) => return Ok(Outcome::Broken),
        };
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let object = &event["object"];
            match event["type"].as_str().unwrap_or_default() {
                "ADDED" | "MODIFIED" | "DELETED" => {
                    if let Some(v) = version(object) {
                        *rv = v;
                    }
                    let text = (source.render)(std::slice::from_ref(object), !*header_done)?;
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                    *header_done = true;
                }
                "BOOKMARK" => {
                    if let Some(v) = version(object) {
                        *rv = v;
                    }
                }
                "ERROR" if object["code"] == 410 => return Ok(Outcome::Expired),
                "ERROR" => {
                    return Err(Error::from(ClientError::Api {
                        code: object["code"].as_u64().unwrap_or(500) as u16,
                        reason: object["reason"]
                            .as_str()
                            .unwrap_or("InternalError")
                            .to_string(),
                        message: object["message"].as_str().unwrap_or_default().to_string(),
                    }))
                }
                _ => {}
            }
        }
    }
}
