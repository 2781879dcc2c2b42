//! The two PATCH flavours: server-side apply (`application/apply-patch+yaml`, what
//! `punnet apply` and `kubectl apply --server-side` send) and JSON merge patch
//! (`application/merge-patch+json`, RFC 7386, what `punnet scale` sends).
//!
//! Apply takes the whole object from the body: the user's fields (labels, annotations,
//! spec) come from it, while status, identity and system-owned fields (labels under
//! `kubernetes.io/`, a Pod's node, owner references the body does not mention) stay as
//! stored. Applying an unchanged manifest writes nothing and keeps the resourceVersion.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{parse_body, Target};
use super::kinds::{keep_unmentioned_meta, requested_version, ApiResource};
use super::objects::{check_version, decode, modify_checked, place, respond};
use super::ApiState;
use crate::store::StoreError;

pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// Server-side apply: creates the object (201) or updates it from the body (200).
pub async fn apply<T: ApiResource>(
    state: &ApiState,
    target: &Target,
    body: &[u8],
) -> Result<Response, ApiError> {
    let value = parse_body(APPLY_PATCH, body)?;
    let precondition = requested_version(&value).map(str::to_string);
    let mut applied: T = decode(value)?;
    place(&mut applied, target)?;

    // Update or create; a create that loses a race with another create becomes an
    // update on the next round. Three rounds: losing twice in a row means something
    // is deleting and re-creating the object as fast as we try.
    for _ in 0..3 {
        let next = applied.clone();
        let updated = modify_checked::<T>(&state.store, target, |current| {
            check_version::<T>(current, precondition.as_deref())?;
            let mut next = next;
            keep_unmentioned_meta(next.meta_mut(), current.meta());
            next.keep_system_fields(current);
            next.normalize();
            next.check_update(current)?;
            next.validate()?;
            Ok(next)
        })?;
        if let Some(updated) = updated {
            state.store.sync().await?;
            tracing::info!("applied {}", updated.describe());
            return Ok(respond(StatusCode::OK, &updated));
        }

        if precondition.is_some() {
            // A resourceVersion names an existing incarnation; there is none.
            return Err(ApiError::object_not_found::<T>(
                target.namespace.as_deref(),
                target.name(),
            ));
        }
        let mut new = applied.clone();
        new.clear_status();
        new.normalize();
        new.validate()?;
        match state.store.create(new) {
            Ok(created) => {
                state.store.sync().await?;
                tracing::info!("created {} (apply)", created.describe());
                return Ok(respond(StatusCode::CREATED, &created));
            }
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "{}: the object kept appearing and disappearing while it was applied; apply again",
            applied.describe()
        ),
    ))
}

/// JSON merge patch of the stored object; the result is decoded, checked and
/// validated like a replace. Status cannot be patched here (the agent owns it).
pub async fn merge<T: ApiResource>(
    state: &ApiState,
    target: &Target,
    body: &[u8],
) -> Result<Response, ApiError> {
    let patch = parse_body(MERGE_PATCH, body)?;
    let precondition = requested_version(&patch).map(str::to_string);
    let updated = modify_checked::<T>(&state.store, target, |current| {
        check_version::<T>(current, precondition.as_deref())?;
        let mut doc = punnet_api::object::to_json(current);
        merge_patch(&mut doc, &patch);
        let mut next: T = decode(doc)?;
        let (meta, cur) = (next.meta(), current.meta());
        if meta.name != cur.name || meta.namespace != cur.namespace {
            return Err(ApiError::bad_request(format!(
                "a patch cannot rename or move {}: create a new object instead",
                current.describe()
            )));
        }
        next.keep_system_fields(current);
        next.normalize();
        next.check_update(current)?;
        next.validate()?;
        Ok(next)
    })?
    .ok_or_else(|| ApiError::object_not_found::<T>(target.namespace.as_deref(), target.name()))?;
    state.store.sync().await?;
    tracing::info!("patched {}", updated.describe());
    Ok(respond(StatusCode::OK, &updated))
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else (arrays
/// included) replaces the target value.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(target: Value, patch: Value) -> Value {
        let mut t = target;
        merge_patch(&mut t, &patch);
        t
    }

    /// The examples of RFC 7386, appendix A.
    #[test]
    fn rfc7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(
                merged(target.clone(), patch.clone()),
                expected,
                "{target} + {patch}"
            );
        }
    }

    #[test]
    fn scales_a_deployment_document() {
        let doc = json!({"spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}}});
        let out = merged(doc, json!({"spec": {"replicas": 3}}));
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["spec"]["selector"]["matchLabels"]["app"], "web");
    }
}
