//! `/apis/punnet.io/v1/tokens`: make, list, read and delete tokens (admin only; the
//! auth middleware refuses other roles on this path). A token is shown as a
//! Kubernetes-style object; its secret appears once, in the answer to the POST that
//! made it (`token`, and for operator tokens their MQTT login too).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::error::ApiError;
use super::ApiState;
use crate::tokens::{Role, TokenRecord, TokenSpec, TokensError};

/// The API group of Punnet's own resources.
pub const GROUP_PATH: &str = "/apis/punnet.io";
pub const API_VERSION: &str = "punnet.io/v1";
/// Paths under this prefix manage tokens: admin only.
pub const TOKENS_PATH: &str = "/apis/punnet.io/v1/tokens";

/// The object a token is shown as (never with its secret or hashes).
pub fn to_json(record: &TokenRecord) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "Token",
        "metadata": {
            "name": record.id,
            "creationTimestamp": record.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "labels": record.labels,
        },
        "spec": {
            "role": record.role,
            "usesLeft": record.uses_left,
            "expires": record.expires.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    })
}

fn store_error(e: TokensError) -> ApiError {
    match e {
        TokensError::Invalid(m) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("token: {m}"),
        ),
        other => ApiError::internal(other.to_string()),
    }
}

pub async fn group() -> Json<Value> {
    Json(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": "punnet.io",
        "versions": [{"groupVersion": API_VERSION, "version": "v1"}],
        "preferredVersion": {"groupVersion": API_VERSION, "version": "v1"},
    }))
}

pub async fn resources() -> Json<Value> {
    Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [{
            "name": "tokens", "singularName": "token", "namespaced": false, "kind": "Token",
            "verbs": ["create", "delete", "get", "list"],
        }],
    }))
}

pub async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = state
        .tokens
        .list()
        .map_err(store_error)?
        .iter()
        .map(to_json)
        .collect();
    Ok(Json(json!({
        "apiVersion": API_VERSION,
        "kind": "TokenList",
        "metadata": {},
        "items": items,
    })))
}

pub async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.tokens.get(&id).map_err(store_error)? {
        Some(record) => Ok(Json(to_json(&record))),
        None => Err(not_found(&id)),
    }
}

pub async fn create(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let spec: TokenSpec = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "token request: {e}; send {{\"role\": \"bootstrap|admin|read-only|operator\", \"ttlSeconds\": N, \"uses\": N, \"labels\": {{}}}}"
        ))
    })?;
    let (record, token) = state
        .tokens
        .create(&spec, Utc::now())
        .map_err(store_error)?;
    tracing::info!(id = %record.id, role = %record.role, "token created");
    let mut body = to_json(&record);
    body["token"] = json!(token.to_string());
    if record.role != Role::Bootstrap {
        body["mqtt"] = json!({"username": token.mqtt_username(), "password": token.secret});
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state
        .tokens
        .get(&id)
        .map_err(store_error)?
        .ok_or_else(|| not_found(&id))?;
    state.tokens.delete(&id).map_err(store_error)?;
    tracing::info!(%id, "token deleted");
    Ok(Json(to_json(&record)))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "token {id:?} not found; `punnet get tokens` lists the tokens"
    ))
}
