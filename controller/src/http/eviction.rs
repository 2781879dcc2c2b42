//! The Eviction subresource (`POST …/pods/NAME/eviction`, policy/v1), which `kubectl
//! drain` and `punnet drain` use: a graceful delete of the Pod with the grace period of
//! the body's `deleteOptions`, answered with a `Success` Status (201) as Kubernetes does.
//! Punnet has no PodDisruptionBudgets, so an eviction is never refused for one.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use punnet_api::{ObjectReference, Pod, Status};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{content_type, parse_body, Body, Target};
use super::objects::respond;
use super::ApiState;
use crate::podgc;

/// The grace period an Eviction body asks for; an error names what is wrong with it.
pub fn requested_grace(body: &Value, pod: &str) -> Result<Option<i64>, ApiError> {
    if let Some(kind) = body.get("kind").and_then(Value::as_str) {
        if kind != "Eviction" {
            return Err(ApiError::bad_request(format!(
                "the body is a {kind}, but this URL takes a policy/v1 Eviction"
            )));
        }
    }
    if let Some(name) = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        if name != pod {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object ({pod} vs {name})"
            )));
        }
    }
    match body.pointer("/deleteOptions/gracePeriodSeconds") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(g) if g >= 0 => Ok(Some(g)),
            _ => Err(ApiError::bad_request(format!(
                "deleteOptions.gracePeriodSeconds: {v} is not a number of seconds (0 or more)"
            ))),
        },
    }
}

pub async fn evict(
    State(state): State<ApiState>,
    target: Target,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let ns = target.namespace.as_deref();
    let name = target.name();
    let value = if body.is_empty() {
        Value::Null
    } else {
        parse_body(&content_type(&headers), &body)?
    };
    let grace = requested_grace(&value, name)?;
    let pod = match podgc::delete_pod(&state.store, ns, name, None, grace)? {
        podgc::Deleted::Removed(p) | podgc::Deleted::Terminating(p) => p,
        podgc::Deleted::NotFound => return Err(ApiError::object_not_found::<Pod>(ns, name)),
    };
    state.store.sync().await?;
    let key = pod.metadata.key();
    tracing::info!("evicted Pod {key}");
    state.store.recorder().normal(
        ObjectReference::to(&pod),
        "Evicted",
        format!("Evicted Pod {key} by request (drain)"),
    );
    let mut status = Status::success();
    status.code = StatusCode::CREATED.as_u16();
    Ok(respond(StatusCode::CREATED, &status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_give_the_grace_period_or_a_clear_error() {
        assert_eq!(requested_grace(&Value::Null, "web").unwrap(), None);
        let ok = json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "web", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 5}});
        assert_eq!(requested_grace(&ok, "web").unwrap(), Some(5));
        let other = json!({"kind": "Eviction", "metadata": {"name": "db"}});
        assert!(requested_grace(&other, "web")
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        let negative = json!({"kind": "Eviction", "deleteOptions": {"gracePeriodSeconds": -1}});
        assert!(requested_grace(&negative, "web").is_err());
        assert!(requested_grace(&json!({"kind": "Pod"}), "web").is_err());
    }
}
