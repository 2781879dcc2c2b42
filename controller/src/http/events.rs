//! `GET /api/v1/events` and `/api/v1/namespaces/{ns}/events`: the recorder's Events
//! (in memory, see `crate::events`) as a core/v1 `EventList`, oldest last seen first,
//! with `fieldSelector` (`involvedObject.name=web-1,involvedObject.kind=Pod`, `type`,
//! `reason`) and `labelSelector`, and `watch=true` (see `watch::watch_events`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use punnet_api::object::to_json;
use serde_json::json;

use super::error::ApiError;
use super::extract::{Params, Target};
use super::query::{ListFilter, ListParams};
use super::{watch, ApiState, ShutdownSignal};

pub async fn list(
    State(state): State<ApiState>,
    target: Target,
    Params(params): Params<ListParams>,
    shutdown: Option<Extension<ShutdownSignal>>,
) -> Result<Response, ApiError> {
    let filter = ListFilter::from_params(&params)?;
    if params.is_watch() {
        let shutdown = shutdown.map(|Extension(s)| s);
        return watch::watch_events(
            state,
            target.namespace,
            filter,
            params.watch_params()?,
            shutdown,
        )
        .await;
    }
    let recorder = state.store.recorder();
    // Read first: the list is at least as new as the version it reports.
    let version = recorder.sequence();
    let items: Vec<serde_json::Value> = recorder
        .list(target.namespace.as_deref())
        .iter()
        .map(to_json)
        .filter(|e| {
            let labels =
                serde_json::from_value(e["metadata"]["labels"].clone()).unwrap_or_default();
            filter.matches(&labels, || e.clone())
        })
        .collect();
    let list = json!({
        "apiVersion": "v1",
        "kind": "EventList",
        "metadata": { "resourceVersion": version.to_string() },
        "items": items,
    });
    Ok((StatusCode::OK, Json(list)).into_response())
}
