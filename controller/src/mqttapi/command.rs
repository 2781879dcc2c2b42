//! The JSON commands of the MQTT API (`<prefix>/cmd/<verb>`), parsed into plain values,
//! and the REST request each one becomes. Pure: no I/O, unit-tested with plain values.
//!
//! A command is turned into exactly the request `punnet` (or kubectl) would send for the
//! same action, and `exec` runs it through the REST API's own router, so that every
//! check, validation message and status code is the REST API's.

use punnet_api::{
    ConfigMap, DaemonSet, Deployment, Job, Namespace, Node, Pod, ReplicaSet, Resource, Secret,
    ANNOTATION_RESTARTED_AT, DEFAULT_NAMESPACE,
};
use serde_json::{json, Value};

/// The verbs, each a topic `<prefix>/cmd/<verb>`.
pub const VERBS: [&str; 6] = ["apply", "delete", "scale", "restart", "cordon", "uncordon"];

/// What a command's sender proves and where the answer goes, common to every verb.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Echoed in the reply; names the reply topic `cmd/reply/<id>` when there is no MQTT 5
    /// response topic.
    pub id: Option<String>,
    /// The operator's token (the `token` field or the MQTT 5 user property `token`).
    pub token: Option<String>,
}

/// One object a command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: &'static KindInfo,
    /// `None` for cluster-scoped kinds (Node, Namespace).
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Server-side apply of each document, in order.
    Apply(Vec<Value>),
    Delete(ObjectRef),
    Scale(ObjectRef, i64),
    /// A Deployment (a rolling restart, as `punnet rollout restart`) or a Pod (deleted,
    /// so that its controller makes a new one).
    Restart(ObjectRef),
    Cordon(String),
    Uncordon(String),
}

/// A command that cannot be carried out as sent: the reply's message, code 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCommand(pub String);

/// How a kind is served by the REST API.
#[derive(Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

const fn info<T: Resource>() -> KindInfo {
    KindInfo {
        kind: T::KIND,
        api_version: T::API_VERSION,
        plural: T::PLURAL,
        namespaced: T::NAMESPACED,
    }
}

/// Every kind the REST API serves.
pub static KINDS: [KindInfo; 9] = [
    info::<Pod>(),
    info::<Deployment>(),
    info::<ReplicaSet>(),
    info::<DaemonSet>(),
    info::<Job>(),
    info::<ConfigMap>(),
    info::<Secret>(),
    info::<Namespace>(),
    info::<Node>(),
];

impl KindInfo {
    /// `Deployment`, `deployment` or `deployments`.
    pub fn find(name: &str) -> Result<&'static KindInfo, BadCommand> {
        KINDS
            .iter()
            .find(|k| k.kind.eq_ignore_ascii_case(name) || k.plural.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let known: Vec<&str> = KINDS.iter().map(|k| k.kind).collect();
                BadCommand(format!(
                    "unknown kind {name:?}; the MQTT API serves {}",
                    known.join(", ")
                ))
            })
    }

    /// kubectl's way of naming an object in its output: `deployment.apps/web`.
    pub fn reference(&self, name: &str) -> String {
        let kind = self.kind.to_ascii_lowercase();
        match self.api_version.split_once('/') {
            Some((group, _)) => format!("{kind}.{group}/{name}"),
            None => format!("{kind}/{name}"),
        }
    }
}

impl ObjectRef {
    /// The REST path of the object.
    pub fn path(&self) -> String {
        let base = if self.kind.api_version.contains('/') {
            format!("/apis/{}", self.kind.api_version)
        } else {
            format!("/api/{}", self.kind.api_version)
        };
        match &self.namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{}/{}", self.kind.plural, self.name),
            None => format!("{base}/{}/{}", self.kind.plural, self.name),
        }
    }

    /// `Deployment default/web`, as the REST API's messages name objects.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind.kind, self.name),
            None => format!("{} {}", self.kind.kind, self.name),
        }
    }

    fn new(kind: &'static KindInfo, namespace: Option<&str>, name: &str) -> ObjectRef {
        let namespace = kind
            .namespaced
            .then(|| {
                namespace
                    .filter(|n| !n.is_empty())
                    .unwrap_or(DEFAULT_NAMESPACE)
            })
            .map(str::to_string);
        ObjectRef {
            kind,
            namespace,
            name: name.to_string(),
        }
    }
}

/// Parses the payload of `<prefix>/cmd/<verb>`. `user_token` is the MQTT 5 user
/// property `token`, which wins over a `token` field.
pub fn parse(
    verb: &str,
    payload: &[u8],
    user_token: Option<String>,
) -> (Envelope, Result<Command, BadCommand>) {
    let text = match std::str::from_utf8(payload) {
        Ok(t) => t,
        Err(e) => {
            let env = Envelope {
                id: None,
                token: user_token,
            };
            return (
                env,
                Err(BadCommand(format!("the payload is not UTF-8: {e}"))),
            );
        }
    };
    let json: Option<Value> = serde_json::from_str(text).ok();
    let mut env = Envelope {
        id: json.as_ref().and_then(|v| id_of(v.get("id"))),
        token: json
            .as_ref()
            .and_then(|v| v.get("token"))
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    if user_token.is_some() {
        env.token = user_token;
    }
    let command = match verb {
        "apply" => parse_apply(text, json),
        _ => match json {
            Some(v @ Value::Object(_)) => parse_object_command(verb, &v),
            _ => Err(BadCommand(format!(
                "cmd/{verb} takes a JSON object such as {}",
                example(verb)
            ))),
        },
    };
    (env, command)
}

fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn example(verb: &str) -> &'static str {
    match verb {
        "scale" => r#"{"kind":"Deployment","namespace":"default","name":"web","replicas":3}"#,
        "cordon" | "uncordon" => r#"{"name":"pi-kitchen"}"#,
        _ => r#"{"kind":"Deployment","namespace":"default","name":"web"}"#,
    }
}

/// A manifest as it is (JSON, or YAML with one or several documents), or wrapped as
/// `{"id":…,"token":…,"manifest":<object, list of objects, or YAML text>}`.
fn parse_apply(text: &str, json: Option<Value>) -> Result<Command, BadCommand> {
    let docs = match json {
        Some(Value::Object(mut map)) if map.contains_key("manifest") => {
            match map.remove("manifest").unwrap_or_default() {
                Value::String(yaml) => yaml_documents(&yaml)?,
                other => json_documents(other),
            }
        }
        Some(other) => json_documents(other),
        None => yaml_documents(text)?,
    };
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        return Err(BadCommand(
            "the manifest holds no object: send one or more Kubernetes objects".into(),
        ));
    }
    Ok(Command::Apply(docs))
}

/// A JSON object, a JSON list of objects, or a `kind: List` with `items`.
fn json_documents(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => m
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        other => vec![other],
    }
}

fn yaml_documents(text: &str) -> Result<Vec<Value>, BadCommand> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| {
            BadCommand(format!(
                "document {} of the manifest is neither JSON nor valid YAML: {e}",
                i + 1
            ))
        })?;
        out.extend(json_documents(v));
    }
    Ok(out)
}

fn parse_object_command(verb: &str, v: &Value) -> Result<Command, BadCommand> {
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = field("name").ok_or_else(|| {
        BadCommand(format!(
            "cmd/{verb}: \"name\" is required, as in {}",
            example(verb)
        ))
    })?;
    if let "cordon" | "uncordon" = verb {
        if let Some(kind) = field("kind").filter(|k| !k.eq_ignore_ascii_case("node")) {
            return Err(BadCommand(format!(
                "cmd/{verb} acts on Nodes, not on {kind}"
            )));
        }
        return Ok(if verb == "cordon" {
            Command::Cordon(name.to_string())
        } else {
            Command::Uncordon(name.to_string())
        });
    }
    let kind_name = field("kind").ok_or_else(|| {
        BadCommand(format!(
            "cmd/{verb}: \"kind\" is required, as in {}",
            example(verb)
        ))
    })?;
    let kind = KindInfo::find(kind_name)?;
    let target = ObjectRef::new(kind, field("namespace"), name);
    match verb {
        "delete" => Ok(Command::Delete(target)),
        "scale" => {
            if kind.kind != Deployment::KIND && kind.kind != ReplicaSet::KIND {
                return Err(BadCommand(format!(
                    "cmd/scale: {} cannot be scaled; scale a Deployment or a ReplicaSet",
                    target.describe()
                )));
            }
            let replicas = v.get("replicas").and_then(Value::as_i64).ok_or_else(|| {
                BadCommand(format!(
                    "cmd/scale: \"replicas\" must be a whole number, as in {}",
                    example(verb)
                ))
            })?;
            Ok(Command::Scale(target, replicas))
        }
        "restart" => {
            if kind.kind != Deployment::KIND && kind.kind != Pod::KIND {
                return Err(BadCommand(format!(
                    "cmd/restart: {} cannot be restarted; restart a Deployment or a Pod",
                    target.describe()
                )));
            }
            Ok(Command::Restart(target))
        }
        other => Err(BadCommand(format!(
            "unknown command {other:?}; the verbs are {}",
            VERBS.join(", ")
        ))),
    }
}

/// One request to the REST API.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const JSON: &str = "application/json";

impl Request {
    pub fn get(target: &ObjectRef) -> Request {
        Request {
            method: "GET",
            path: target.path(),
            content_type: JSON,
            body: Vec::new(),
        }
    }

    pub fn delete(target: &ObjectRef) -> Request {
        Request {
            method: "DELETE",
            path: target.path(),
            content_type: JSON,
            body: Vec::new(),
        }
    }

    pub fn merge(target: &ObjectRef, patch: Value) -> Request {
        Request {
            method: "PATCH",
            path: target.path(),
            content_type: MERGE_PATCH,
            body: patch.to_string().into_bytes(),
        }
    }

    /// What `punnet scale` sends.
    pub fn scale(target: &ObjectRef, replicas: i64) -> Request {
        Request::merge(target, json!({"spec": {"replicas": replicas}}))
    }

    /// What `punnet rollout restart` sends: a new `restartedAt` in the Pod template.
    pub fn restart_deployment(target: &ObjectRef, now: &str) -> Request {
        Request::merge(
            target,
            json!({"spec": {"template": {"metadata": {"annotations": {
                ANNOTATION_RESTARTED_AT: now
            }}}}}),
        )
    }

    /// What `punnet cordon`/`uncordon` sends (`null` removes the field, as kubectl does).
    pub fn cordon(node: &str, on: bool) -> Request {
        let target = ObjectRef::new(KindInfo::find("Node").expect("Node is served"), None, node);
        let value = if on { json!(true) } else { Value::Null };
        Request::merge(&target, json!({"spec": {"unschedulable": value}}))
    }

    /// Server-side apply of one document (what `punnet apply` sends). The document
    /// names its object; the REST API checks everything else.
    pub fn apply(doc: &Value, index: usize) -> Result<(ObjectRef, Request), BadCommand> {
        let n = index + 1;
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| BadCommand(format!("document {n} of the manifest has no \"kind\"")))?;
        let kind =
            KindInfo::find(kind).map_err(|e| BadCommand(format!("document {n}: {}", e.0)))?;
        let meta = doc.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                BadCommand(format!(
                    "document {n} ({}): metadata.name is required",
                    kind.kind
                ))
            })?;
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str);
        let target = ObjectRef::new(kind, namespace, name);
        let request = Request {
            method: "PATCH",
            path: target.path(),
            content_type: APPLY_PATCH,
            body: doc.to_string().into_bytes(),
        };
        Ok((target, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(verb: &str, payload: &str) -> Result<Command, BadCommand> {
        parse(verb, payload.as_bytes(), None).1
    }

    #[test]
    fn scale_reads_like_kubectl() {
        let (env, c) = parse(
            "scale",
            br#"{"kind":"Deployment","namespace":"prod","name":"web","replicas":3,"id":7,"token":"t"}"#,
            None,
        );
        assert_eq!(env.id.as_deref(), Some("7"));
        assert_eq!(env.token.as_deref(), Some("t"));
        let Command::Scale(target, 3) = c.unwrap() else {
            panic!("not a scale to 3")
        };
        assert_eq!(
            target.path(),
            "/apis/apps/v1/namespaces/prod/deployments/web"
        );
        let r = Request::scale(&target, 3);
        assert_eq!((r.method, r.content_type), ("PATCH", MERGE_PATCH));
        assert_eq!(r.body, br#"{"spec":{"replicas":3}}"#);
    }

    #[test]
    fn the_user_property_token_wins_and_namespace_defaults() {
        let (env, c) = parse(
            "delete",
            br#"{"kind":"pods","name":"web-1","token":"field"}"#,
            Some("property".into()),
        );
        assert_eq!(env.token.as_deref(), Some("property"));
        let Command::Delete(t) = c.unwrap() else {
            panic!()
        };
        assert_eq!(t.path(), "/api/v1/namespaces/default/pods/web-1");
        assert_eq!(t.describe(), "Pod default/web-1");
    }

    #[test]
    fn bad_commands_say_what_to_send() {
        let e = cmd("scale", r#"{"kind":"Deployment","name":"web"}"#).unwrap_err();
        assert!(
            e.0.contains("\"replicas\" must be a whole number"),
            "{}",
            e.0
        );
        let e = cmd("scale", r#"{"kind":"Pod","name":"web","replicas":2}"#).unwrap_err();
        assert_eq!(
            e.0,
            "cmd/scale: Pod default/web cannot be scaled; scale a Deployment or a ReplicaSet"
        );
        let e = cmd("delete", r#"{"kind":"Gadget","name":"x"}"#).unwrap_err();
        assert!(e.0.starts_with("unknown kind \"Gadget\""), "{}", e.0);
        let e = cmd("restart", "not json").unwrap_err();
        assert!(e.0.contains("takes a JSON object"), "{}", e.0);
        let e = cmd("delete", r#"{"kind":"Pod"}"#).unwrap_err();
        assert!(e.0.contains("\"name\" is required"), "{}", e.0);
        let e = cmd("cordon", r#"{"kind":"Pod","name":"x"}"#).unwrap_err();
        assert_eq!(e.0, "cmd/cordon acts on Nodes, not on Pod");
        let (env, e) = parse("apply", &[0xff, 0xfe], Some("t".into()));
        assert!(e.unwrap_err().0.contains("not UTF-8"));
        assert_eq!(env.token.as_deref(), Some("t"));
    }

    #[test]
    fn apply_takes_yaml_documents_json_and_wrappers() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b, namespace: x}\n";
        let Command::Apply(docs) = cmd("apply", yaml).unwrap() else {
            panic!()
        };
        assert_eq!(docs.len(), 2);
        let (t, r) = Request::apply(&docs[1], 1).unwrap();
        assert_eq!(t.path(), "/apis/apps/v1/namespaces/x/deployments/b");
        assert_eq!(r.content_type, APPLY_PATCH);

        let wrapped =
            r#"{"id":"a1","token":"t","manifest":[{"kind":"Namespace","metadata":{"name":"n"}}]}"#;
        let (env, c) = parse("apply", wrapped.as_bytes(), None);
        assert_eq!(
            (env.id.as_deref(), env.token.as_deref()),
            (Some("a1"), Some("t"))
        );
        let Command::Apply(docs) = c.unwrap() else {
            panic!()
        };
        let (t, _) = Request::apply(&docs[0], 0).unwrap();
        assert_eq!(t.path(), "/api/v1/namespaces/n");

        let yaml_in_json = r#"{"manifest":"kind: Pod\nmetadata:\n  name: p\n"}"#;
        assert!(matches!(cmd("apply", yaml_in_json), Ok(Command::Apply(d)) if d.len() == 1));

        let e = Request::apply(&serde_json::json!({"kind": "Pod"}), 2).unwrap_err();
        assert_eq!(e.0, "document 3 (Pod): metadata.name is required");
        let e = cmd("apply", "---\n").unwrap_err();
        assert!(e.0.contains("holds no object"), "{}", e.0);
        let e = cmd("apply", "a: [1\n").unwrap_err();
        assert!(e.0.contains("document 1"), "{}", e.0);
    }

    #[test]
    fn references_and_node_requests() {
        assert_eq!(
            KindInfo::find("Deployment").unwrap().reference("web"),
            "deployment.apps/web"
        );
        assert_eq!(KindInfo::find("pod").unwrap().reference("p"), "pod/p");
        let r = Request::cordon("pi-1", false);
        assert_eq!(r.path, "/api/v1/nodes/pi-1");
        assert_eq!(r.body, br#"{"spec":{"unschedulable":null}}"#);
        assert!(
            matches!(cmd("uncordon", r#"{"name":"pi-1"}"#), Ok(Command::Uncordon(n)) if n == "pi-1")
        );
    }
}
