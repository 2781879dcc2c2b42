//! `punnet token create`, `punnet get tokens` and `punnet delete token ID`, over
//! `/apis/punnet.io/v1/tokens` (admin only). The secret is printed once, by `create`;
//! the list never shows it.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::args::TokenCreateArgs;
use crate::table::Table;
use crate::{Ctx, Error, Result};

fn collection() -> Vec<String> {
    ["apis", "punnet.io", "v1", "tokens"]
        .map(String::from)
        .to_vec()
}

fn item(id: &str) -> Vec<String> {
    let mut s = collection();
    s.push(id.to_string());
    s
}

/// Whether `get`/`delete` RESOURCE means tokens.
pub fn is_tokens(resource: &str) -> bool {
    matches!(resource, "token" | "tokens")
}

/// The request body of `punnet token create`.
pub fn create_body(args: &TokenCreateArgs) -> Result<Value> {
    let mut labels = serde_json::Map::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--label {l:?}: expected KEY=VALUE")))?;
        labels.insert(k.to_string(), json!(v));
    }
    let mut body = json!({ "role": args.role, "labels": labels });
    if let Some(ttl) = args.ttl {
        body["ttlSeconds"] = json!(ttl.as_secs());
    }
    if let Some(uses) = args.uses {
        body["uses"] = json!(uses);
    }
    Ok(body)
}

pub async fn create(ctx: &Ctx, args: &TokenCreateArgs, out: &mut dyn Write) -> Result<()> {
    let made = ctx.client.post(&collection(), &create_body(args)?).await?;
    let token = made["token"].as_str().unwrap_or_default();
    writeln!(out, "{token}")?;
    let role = made["spec"]["role"].as_str().unwrap_or_default();
    if let Some(mqtt) = made.get("mqtt") {
        writeln!(
            out,
            "MQTT username: {}\nMQTT password: {}",
            mqtt["username"].as_str().unwrap_or_default(),
            mqtt["password"].as_str().unwrap_or_default()
        )?;
    }
    let hint = match role {
        "bootstrap" => {
            "enrol a board with `punnet-agent --token TOKEN` (or `token:` in its config file)"
        }
        _ => {
            "use it as the bearer token (`punnet --token TOKEN`, $PUNNET_TOKEN or the config file)"
        }
    };
    writeln!(
        out,
        "# token {} ({role}): shown only now, keep it safe; {hint}",
        made["metadata"]["name"].as_str().unwrap_or_default()
    )?;
    Ok(())
}

pub async fn get(ctx: &Ctx, names: &[String], out: &mut dyn Write) -> Result<()> {
    let items: Vec<Value> = if names.is_empty() {
        let list = ctx.client.get(&collection(), &[]).await?;
        crate::get::list_items(list)
    } else {
        let mut v = Vec::new();
        for n in names {
            v.push(ctx.client.get(&item(n), &[]).await?);
        }
        v
    };
    if items.is_empty() {
        writeln!(out, "No tokens found.")?;
        return Ok(());
    }
    write!(out, "{}", table(&items, Utc::now()).render())?;
    Ok(())
}

pub fn table(items: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(&["ID", "ROLE", "USES", "EXPIRES", "LABELS", "AGE"]);
    for v in items {
        let time = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let uses = match v.pointer("/spec/usesLeft").and_then(Value::as_u64) {
            Some(n) => n.to_string(),
            None => "unlimited".into(),
        };
        let expires = match time("/spec/expires") {
            Some(at) if at <= now => "expired".to_string(),
            Some(at) => format!(
                "in {}",
                crate::age::human_duration((at - now).num_seconds())
            ),
            None => "never".into(),
        };
        let labels = v
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into());
        let age = time("/metadata/creationTimestamp")
            .map(|c| crate::age::human_duration((now - c).num_seconds()))
            .unwrap_or_else(|| "<unknown>".into());
        t.push(vec![
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            v.pointer("/spec/role")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            uses,
            expires,
            labels,
            age,
        ]);
    }
    t
}

pub async fn delete(ctx: &Ctx, names: &[String], out: &mut dyn Write) -> Result<()> {
    if names.is_empty() {
        return Err(Error::Usage(
            "delete token: name the token ID(s) (`punnet get tokens` lists them)".into(),
        ));
    }
    for id in names {
        ctx.client.delete(&item(id), &[]).await?;
        writeln!(out, "token \"{id}\" deleted")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_never_shows_secrets_and_reads_times() {
        let now = Utc::now();
        let created = (now - chrono::Duration::seconds(90)).to_rfc3339();
        let expires = (now + chrono::Duration::hours(3)).to_rfc3339();
        let items = vec![json!({
            "metadata": {"name": "abcdefabcdef", "creationTimestamp": created, "labels": {"site": "barn"}},
            "spec": {"role": "bootstrap", "usesLeft": 4, "expires": expires},
        })];
        let text = table(&items, now).render();
        assert!(text.starts_with("ID"), "{text}");
        assert!(text.contains("abcdefabcdef"), "{text}");
        assert!(text.contains("bootstrap"), "{text}");
        assert!(text.contains("site=barn"), "{text}");
        assert!(text.contains("in 3h") || text.contains("in 179m"), "{text}");
        assert!(text.contains("90s"), "{text}");
    }

    #[test]
    fn create_body_from_flags() {
        let args = TokenCreateArgs {
            ttl: Some(std::time::Duration::from_secs(3600)),
            uses: Some(5),
            labels: vec!["site=barn".into()],
            role: "bootstrap".into(),
        };
        let b = create_body(&args).unwrap();
        assert_eq!(b["ttlSeconds"], 3600);
        assert_eq!(b["uses"], 5);
        assert_eq!(b["labels"]["site"], "barn");
        let bad = TokenCreateArgs {
            labels: vec!["nolabel".into()],
            ..args
        };
        assert!(create_body(&bad).is_err());
    }
}
