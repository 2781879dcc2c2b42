//! `/nodekeys`: the registry of node public keys over REST, for operators and tools
//! that bring nodes up without enrolment (the fleet simulator, tests, a board set up by
//! hand with its `node.pub`). Admin-only, like `/backup`: a registered key is what lets
//! a node's status into the store.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use punnet_api::signing::{parse_public_key_hex, public_key_hex};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeKeyItem {
    pub node: String,
    /// 64 hex digits: the content of the agent's `node.pub`.
    pub public_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NodeKeyList {
    pub items: Vec<NodeKeyItem>,
}

/// The same rule as the agent's node name: it is an MQTT topic level.
fn check_node(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.contains(['/', '+', '#', ' ']) || name.len() > 253 {
        return Err(ApiError::bad_request(format!(
            "node name {name:?}: must be non-empty, at most 253 characters, without '/', '+', '#' or spaces"
        )));
    }
    Ok(())
}

/// `GET /nodekeys`: every registered key, sorted by node.
pub async fn list(State(state): State<ApiState>) -> Json<NodeKeyList> {
    let mut items: Vec<NodeKeyItem> = state
        .store
        .node_keys()
        .all()
        .into_iter()
        .map(|(node, key)| NodeKeyItem {
            node,
            public_key: public_key_hex(&key),
        })
        .collect();
    items.sort_by(|a, b| a.node.cmp(&b.node));
    Json(NodeKeyList { items })
}

/// `POST /nodekeys` with `{"items": [{"node": …, "publicKey": …}]}`: registers (or
/// replaces) each; all or nothing when one is invalid.
pub async fn register(
    State(state): State<ApiState>,
    Json(body): Json<NodeKeyList>,
) -> Result<Json<NodeKeyList>, ApiError> {
    let mut keys = Vec::with_capacity(body.items.len());
    for item in &body.items {
        check_node(&item.node)?;
        let key = parse_public_key_hex(&item.public_key)
            .map_err(|e| ApiError::bad_request(format!("node {}: {e}", item.node)))?;
        keys.push((item.node.clone(), key));
    }
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.node_keys().register_many(&keys))
        .await
        .map_err(|e| ApiError::internal(format!("node keys: {e}")))?
        .map_err(|e| ApiError::internal(format!("node keys: {e}")))?;
    tracing::info!(
        "registered {} node key(s) through the API",
        body.items.len()
    );
    Ok(Json(body))
}

/// `DELETE /nodekeys/{node}`: the node's status is refused from now on.
pub async fn revoke(
    State(state): State<ApiState>,
    Path(node): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.store.clone();
    let n = node.clone();
    let had = tokio::task::spawn_blocking(move || store.node_keys().revoke(&n))
        .await
        .map_err(|e| ApiError::internal(format!("node keys: {e}")))?
        .map_err(|e| ApiError::internal(format!("node keys: {e}")))?;
    if !had {
        return Err(ApiError::not_found(format!(
            "node {node} has no registered key"
        )));
    }
    tracing::info!("revoked the key of node {node} through the API");
    Ok(StatusCode::NO_CONTENT)
}
