//! Manifests as people write them for Kubernetes: one or more YAML documents (`---`), a
//! JSON object, a JSON array, or a `List`. Each becomes a typed `Object`; fields Punnet
//! does not know are reported by path instead of being silently dropped.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::namespace::Namespace;
use crate::object::{Object, Resource};
use crate::{ConfigMap, DaemonSet, Deployment, Job, Node, Pod, ReplicaSet, Secret};

#[derive(Debug, Error, PartialEq)]
pub enum ManifestError {
    #[error("document {document}: {message}")]
    Syntax { document: usize, message: String },
    #[error("document {document}: missing `{field}` (every object needs apiVersion and kind)")]
    MissingTypeField {
        document: usize,
        field: &'static str,
    },
    #[error("document {document}: Punnet does not support kind {kind:?} with apiVersion {api_version:?} (supported: v1 Pod, apps/v1 Deployment, apps/v1 ReplicaSet, apps/v1 DaemonSet, batch/v1 Job, v1 Node, v1 Namespace, v1 ConfigMap, v1 Secret)")]
    UnsupportedKind {
        document: usize,
        api_version: String,
        kind: String,
    },
    #[error("document {document}: {object}: {message}")]
    Decode {
        document: usize,
        object: String,
        message: String,
    },
    #[error("document {document}: {object}: unknown field{} {} (Punnet does not support {}; remove {} from the manifest)",
        if fields.len() == 1 { "" } else { "s" },
        fields.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", "),
        if fields.len() == 1 { "it" } else { "them" },
        if fields.len() == 1 { "it" } else { "them" })]
    UnknownFields {
        document: usize,
        object: String,
        fields: Vec<String>,
    },
}

/// Parses every object in `text` (YAML documents or JSON). Empty documents are skipped.
pub fn parse(text: &str) -> Result<Vec<Object>, ManifestError> {
    let mut objects = Vec::new();
    for (i, value) in documents(text)?.into_iter().enumerate() {
        collect(i + 1, value, &mut objects)?;
    }
    Ok(objects)
}

/// Parses one JSON value (an API request body) into an object of a known kind.
pub fn parse_value(value: Value) -> Result<Object, ManifestError> {
    let mut out = Vec::new();
    collect(1, value, &mut out)?;
    match out.len() {
        1 => Ok(out.remove(0)),
        n => Err(ManifestError::Syntax {
            document: 1,
            message: format!("expected one object, found {n}"),
        }),
    }
}

/// Decodes a value as one kind, reporting unknown fields. Used by the API for request
/// bodies whose kind the URL already fixes.
pub fn decode<T: Resource>(document: usize, value: Value) -> Result<T, ManifestError> {
    let object = describe_value(T::KIND, &value);
    let mut unknown = Vec::new();
    let decoded: Result<T, _> =
        serde_ignored::deserialize(value, |path| unknown.push(format_path(&path)));
    let mut obj = decoded.map_err(|e| ManifestError::Decode {
        document,
        object: object.clone(),
        message: e.to_string(),
    })?;
    if !unknown.is_empty() {
        return Err(ManifestError::UnknownFields {
            document,
            object,
            fields: unknown,
        });
    }
    obj.set_type_meta();
    Ok(obj)
}

fn documents(text: &str) -> Result<Vec<Value>, ManifestError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut docs = Vec::new();
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            let v = v.map_err(|e| ManifestError::Syntax {
                document: i + 1,
                message: format!("invalid JSON: {e}"),
            })?;
            match v {
                Value::Array(items) => docs.extend(items),
                v => docs.push(v),
            }
        }
        return Ok(docs);
    }
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| ManifestError::Syntax {
            document: i + 1,
            message: format!("invalid YAML: {e}"),
        })?;
        docs.push(v);
    }
    Ok(docs)
}

fn collect(document: usize, value: Value, out: &mut Vec<Object>) -> Result<(), ManifestError> {
    if value.is_null() {
        return Ok(());
    }
    if !value.is_object() {
        return Err(ManifestError::Syntax {
            document,
            message: "expected an object with apiVersion, kind and metadata".into(),
        });
    }
    let field = |name: &'static str| -> Result<String, ManifestError> {
        match value.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(ManifestError::MissingTypeField {
                document,
                field: name,
            }),
        }
    };
    let kind = field("kind")?;
    let api_version = field("apiVersion")?;
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") => {
            let Value::Object(mut map) = value else {
                unreachable!("checked above")
            };
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    collect(document, item, out)?;
                }
            }
            return Ok(());
        }
        ("v1", "Pod") => Object::Pod(decode::<Pod>(document, value)?),
        ("apps/v1", "Deployment") => Object::Deployment(decode::<Deployment>(document, value)?),
        ("v1", "ConfigMap") => Object::ConfigMap(decode::<ConfigMap>(document, value)?),
        ("v1", "Secret") => Object::Secret(decode::<Secret>(document, value)?),
        ("v1", "Node") => Object::Node(decode::<Node>(document, value)?),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(decode::<DaemonSet>(document, value)?),
        ("batch/v1", "Job") => Object::Job(decode::<Job>(document, value)?),
        ("v1", "Namespace") => Object::Namespace(decode::<Namespace>(document, value)?),
        ("apps/v1", "ReplicaSet") => Object::ReplicaSet(decode::<ReplicaSet>(document, value)?),
        _ => {
            return Err(ManifestError::UnsupportedKind {
                document,
                api_version,
                kind,
            })
        }
    };
    out.push(object);
    Ok(())
}

/// `Kind namespace/name` from a raw value, for messages about objects that did not decode.
fn describe_value(kind: &str, value: &Value) -> String {
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// `spec.template.spec.containers[0].foo`, the way Kubernetes names fields.
fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        Path::Map { parent, key } => {
            let p = format_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
    }
}

/// Decodes a stored value of a known kind (no unknown-field check: stored objects were
/// checked when written, and older versions may have stored fields since removed).
pub fn from_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_DOCS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:latest
        command: ["sh", "-c", "echo hi; sleep 1000"]
        resources:
          limits: {memory: 64Mi, cpu: 500m}
---
---
apiVersion: v1
kind: Pod
metadata: {name: one, namespace: tools}
spec:
  restartPolicy: Never
  containers: [{name: c, image: busybox}]
"#;

    #[test]
    fn parses_multi_document_yaml() {
        let objs = parse(TWO_DOCS).unwrap();
        assert_eq!(objs.len(), 2);
        let Object::Deployment(d) = &objs[0] else {
            panic!("expected a Deployment")
        };
        assert_eq!(d.kind, "Deployment");
        assert_eq!(d.spec.replicas(), 2);
        assert_eq!(
            d.spec.template.spec.containers[0].resources.limits["memory"],
            "64Mi"
        );
        let Object::Pod(p) = &objs[1] else {
            panic!("expected a Pod")
        };
        assert_eq!(p.metadata.namespace.as_deref(), Some("tools"));
    }

    #[test]
    fn parses_json_object_array_and_list() {
        let one = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        assert_eq!(parse(one).unwrap().len(), 1);
        assert_eq!(parse(&format!("[{one},{one}]")).unwrap().len(), 2);
        let list = format!(r#"{{"apiVersion":"v1","kind":"List","items":[{one}]}}"#);
        assert_eq!(parse(&list).unwrap().len(), 1);
    }

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: c
    image: busybox
    livenessProbee: {}
  dnsPolicyy: x
"#;
        let err = parse(text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 1: Pod web: unknown fields \"spec.containers[0].livenessProbee\", \
             \"spec.dnsPolicyy\" (Punnet does not support them; remove them from the manifest)"
        );
    }

    #[test]
    fn unsupported_kind_and_missing_kind() {
        let err = parse("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n").unwrap_err();
        assert!(
            matches!(err, ManifestError::UnsupportedKind { .. }),
            "{err}"
        );
        let err = parse("apiVersion: v1\nmetadata: {name: x}\n").unwrap_err();
        assert!(err.to_string().contains("missing `kind`"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_object() {
        let err = parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: many}\n")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("document 1: Deployment web: "), "{msg}");
    }

    #[test]
    fn yaml_syntax_errors_name_the_document() {
        let err = parse("apiVersion: v1\nkind: Pod\n---\nkey: [unclosed\n").unwrap_err();
        assert!(
            matches!(err, ManifestError::Syntax { document: 2, .. }),
            "{err}"
        );
    }
}
