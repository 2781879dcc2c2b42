//! Events in the CLI: `punnet get events` (kubectl's `LAST SEEN TYPE REASON OBJECT
//! MESSAGE`, oldest first, `-A`, `--for pod/NAME`) and the `Events:` section at the end
//! of `describe` (`Type Reason Age From Message`, with `(x3 over 2m)` for repeats).
//! The text is built by pure functions of the Events and the current time.

use std::io::Write;

use chrono::{DateTime, Utc};
use punnet_api::Event;
use serde_json::Value;

use crate::age::age;
use crate::args::{GetArgs, OutputFormat};
use crate::client::Segments;
use crate::error::{Error, Result};
use crate::get::{list_items, write_json};
use crate::kinds::{parse_reference, Kind};
use crate::labels::selector_query;
use crate::table::{tabwrite, Table};
use crate::Ctx;

/// Whether `get`'s resource names Events.
pub fn is_events(resource: &str) -> bool {
    matches!(
        resource.to_ascii_lowercase().as_str(),
        "events" | "event" | "ev" | "events.events.k8s.io"
    )
}

/// `api/v1/events` or `api/v1/namespaces/NS/events`.
pub fn collection(namespace: Option<&str>) -> Segments {
    let mut segs: Segments = vec!["api".into(), "v1".into()];
    if let Some(ns) = namespace {
        segs.extend(["namespaces".to_string(), ns.to_string()]);
    }
    segs.push("events".into());
    segs
}

/// The `fieldSelector` that picks one object's Events.
pub fn field_selector(kind: &str, name: &str) -> String {
    format!("involvedObject.kind={kind},involvedObject.name={name}")
}

/// The query of `get events`: `-l` and `--for KIND/NAME`.
pub fn query(args: &GetArgs) -> Result<Vec<(&'static str, String)>> {
    let mut query = selector_query(args.selector.as_deref())?;
    if let Some(target) = &args.for_object {
        let (kind, name) = parse_reference(target)?;
        query.push(("fieldSelector", field_selector(kind.kind(), &name)));
    }
    Ok(query)
}

pub async fn get(
    ctx: &Ctx,
    args: &GetArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    if !args.names.is_empty() {
        return Err(Error::Usage(
            "events are listed, not fetched by name: use --for KIND/NAME to see one object's"
                .into(),
        ));
    }
    if args.watch || args.watch_only {
        return crate::watch::watch_events(ctx, args, out, err).await;
    }
    let scope = (!ctx.all_namespaces).then_some(ctx.namespace.as_str());
    let list = ctx.client.get(&collection(scope), &query(args)?).await?;
    let values = list_items(list);
    let mut events = decode(&values)?;
    sort(&mut events);
    match args.output {
        Some(OutputFormat::Json) | Some(OutputFormat::Yaml) => {
            let doc = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values});
            if args.output == Some(OutputFormat::Json) {
                write_json(out, &doc)
            } else {
                let text = serde_norway::to_string(&doc)
                    .map_err(|e| Error::decode("events as YAML", e))?;
                out.write_all(text.as_bytes())?;
                Ok(())
            }
        }
        Some(OutputFormat::Name) => {
            for e in &events {
                writeln!(out, "event/{}", e.metadata.name)?;
            }
            Ok(())
        }
        None | Some(OutputFormat::Wide) => {
            if events.is_empty() {
                writeln!(err, "{}", crate::get::no_resources(Kind::Pod, scope))?;
                return Ok(());
            }
            let table = table(&events, ctx.all_namespaces, Utc::now());
            out.write_all(table.render().as_bytes())?;
            Ok(())
        }
    }
}

pub fn decode(values: &[Value]) -> Result<Vec<Event>> {
    values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).map_err(|e| Error::decode("Event", e)))
        .collect()
}

/// Oldest last seen first, as `kubectl get events` sorts them.
pub fn sort(events: &mut [Event]) {
    events.sort_by_key(last_seen);
}

fn last_seen(e: &Event) -> Option<punnet_api::Time> {
    e.last_timestamp
        .or(e.first_timestamp)
        .or(e.metadata.creation_timestamp)
}

/// `pod/web-1`, as kubectl names the involved object.
pub fn object(e: &Event) -> String {
    format!(
        "{}/{}",
        e.involved_object.kind.to_ascii_lowercase(),
        e.involved_object.name
    )
}

/// `LAST SEEN TYPE REASON OBJECT MESSAGE` (NAMESPACE first with `-A`).
pub fn table(events: &[Event], show_namespace: bool, now: DateTime<Utc>) -> Table {
    let mut cols = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];
    if show_namespace {
        cols.insert(0, "NAMESPACE");
    }
    let mut table = Table::new(&cols);
    for e in events {
        let mut row = vec![
            age(last_seen(e).as_ref(), now),
            e.type_.clone(),
            e.reason.clone(),
            object(e),
            e.message.trim().to_string(),
        ];
        if show_namespace {
            row.insert(0, e.metadata.namespace.clone().unwrap_or_default());
        }
        table.push(row);
    }
    table
}

/// `2m`, or `10s (x3 over 2m)` for an Event seen more than once.
pub fn event_age(e: &Event, now: DateTime<Utc>) -> String {
    let last = age(last_seen(e).as_ref(), now);
    if e.count > 1 {
        let first = age(e.first_timestamp.as_ref(), now);
        format!("{last} (x{} over {first})", e.count)
    } else {
        last
    }
}

/// The `Events:` section `describe` ends with; `Events:  <none>` when there are none.
pub fn section(events: &[Event], now: DateTime<Utc>) -> String {
    if events.is_empty() {
        return "Events:  <none>\n".into();
    }
    let mut events = events.to_vec();
    sort(&mut events);
    let mut text = String::from("Events:\n");
    let mut rows = vec![
        ["Type", "Reason", "Age", "From", "Message"].map(String::from),
        ["----", "------", "----", "----", "-------"].map(String::from),
    ];
    for e in &events {
        rows.push([
            e.type_.clone(),
            e.reason.clone(),
            event_age(e, now),
            e.source.component.clone(),
            e.message.trim().replace(['\t', '\n', '\r'], " "),
        ]);
    }
    let body: String = rows
        .iter()
        .map(|r| format!("  {}\n", r.join("\t")))
        .collect();
    text.push_str(&tabwrite(&body, 2));
    text
}

/// The Events of one described object (its uid, when both sides know one). `None` when
/// the server has no Events API: the section is then left out.
pub async fn for_object(ctx: &Ctx, kind: Kind, object: &Value) -> Option<Vec<Event>> {
    let meta = &object["metadata"];
    let name = meta["name"].as_str()?;
    let namespace = meta["namespace"].as_str().filter(|_| kind.namespaced());
    let uid = meta["uid"].as_str();
    let query = [("fieldSelector", field_selector(kind.kind(), name))];
    let list = ctx.client.get(&collection(namespace), &query).await.ok()?;
    let events = decode(&list_items(list)).ok()?;
    Some(
        events
            .into_iter()
            .filter(|e| match (e.involved_object.uid.as_deref(), uid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{EventSource, ObjectReference, Time};

    fn at(secs: i64) -> Time {
        Time(DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap())
    }

    fn event(name: &str, type_: &str, reason: &str, count: i32, first: i64, last: i64) -> Event {
        Event {
            involved_object: ObjectReference {
                kind: "Pod".into(),
                name: name.into(),
                namespace: Some("default".into()),
                ..Default::default()
            },
            metadata: punnet_api::ObjectMeta {
                namespace: Some("default".into()),
                ..Default::default()
            },
            type_: type_.into(),
            reason: reason.into(),
            message: format!("{reason} happened"),
            count,
            first_timestamp: Some(at(first)),
            last_timestamp: Some(at(last)),
            source: EventSource {
                component: "punnet-agent".into(),
                host: Some("pi-1".into()),
            },
            ..Default::default()
        }
    }

    #[test]
    fn get_events_table_is_sorted_by_last_seen() {
        let mut events = vec![
            event("web", "Warning", "BackOff", 3, 0, 110),
            event("web", "Normal", "Scheduled", 1, 0, 0),
        ];
        sort(&mut events);
        let now = at(120).0;
        assert_eq!(
            table(&events, false, now).render(),
            "LAST SEEN   TYPE      REASON      OBJECT    MESSAGE\n\
             2m          Normal    Scheduled   pod/web   Scheduled happened\n\
             10s         Warning   BackOff     pod/web   BackOff happened\n"
        );
        assert!(table(&events, true, now)
            .render()
            .starts_with("NAMESPACE   LAST SEEN"));
    }

    #[test]
    fn describe_section_counts_repeats() {
        let events = vec![
            event("web", "Warning", "BackOff", 3, 0, 110),
            event("web", "Normal", "Scheduled", 1, 0, 0),
        ];
        assert_eq!(
            section(&events, at(240).0),
            "Events:\n\
             \x20 Type     Reason     Age                 From          Message\n\
             \x20 ----     ------     ----                ----          -------\n\
             \x20 Normal   Scheduled  4m                  punnet-agent  Scheduled happened\n\
             \x20 Warning  BackOff    2m10s (x3 over 4m)  punnet-agent  BackOff happened\n"
        );
        assert_eq!(section(&[], at(0).0), "Events:  <none>\n");
        assert!(is_events("ev") && is_events("Events") && !is_events("pods"));
        assert_eq!(
            collection(Some("default")).join("/"),
            "api/v1/namespaces/default/events"
        );
    }
}
