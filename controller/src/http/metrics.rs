//! `metrics.k8s.io/v1beta1`, read-only, from the in-memory `Metrics`: what
//! `punnet top` and `kubectl top` read. Shaped as metrics-server answers.
//! Also `/metrics`, the controller's own figures for Prometheus (see `prometheus`).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use punnet_api::metrics::MetricsList;
use punnet_api::Time;

use super::error::ApiError;
use super::extract::Target;
use super::objects::respond;
use super::ApiState;

pub async fn list_nodes(State(state): State<ApiState>) -> Response {
    let items = state.metrics.nodes(Time::now());
    respond(StatusCode::OK, &MetricsList::new("NodeMetrics", items))
}

pub async fn get_node(State(state): State<ApiState>, target: Target) -> Result<Response, ApiError> {
    state
        .metrics
        .nodes(Time::now())
        .into_iter()
        .find(|n| n.metadata.name == target.name())
        .map(|n| respond(StatusCode::OK, &n))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "nodemetrics.metrics.k8s.io {:?} not found: the node has sent no figures lately",
                target.name()
            ))
        })
}

pub async fn list_pods(State(state): State<ApiState>, target: Target) -> Response {
    let items = state.metrics.pods(target.namespace.as_deref(), Time::now());
    respond(StatusCode::OK, &MetricsList::new("PodMetrics", items))
}

pub async fn get_pod(State(state): State<ApiState>, target: Target) -> Result<Response, ApiError> {
    let ns = target.namespace.as_deref();
    state
        .metrics
        .pods(ns, Time::now())
        .into_iter()
        .find(|p| p.metadata.name == target.name())
        .map(|p| respond(StatusCode::OK, &p))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "podmetrics.metrics.k8s.io \"{}/{}\" not found: the Pod is not running or its node has sent no figures lately",
                ns.unwrap_or_default(),
                target.name()
            ))
        })
}

/// `GET /metrics` in Prometheus' text format.
pub async fn prometheus(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let text = crate::prometheus::render(&state.store)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)],
        text,
    )
        .into_response())
}
