//! The fleet page: served by the controller on its `--http` address (HTTPS unless
//! `--allow-plaintext`) under `/ui/`, read-only, live by polling two JSON endpoints
//! that scripts can use too (see docs/web.md):
//!
//! - `GET /ui/api/fleet` — nodes with their figures, last hour and warnings,
//!   workloads, Pods and Events;
//! - `GET /ui/api/pods/{namespace}/{name}` — one Pod's containers and Events.
//!
//! The page's HTML, script and stylesheet are open (they hold no data); the JSON needs
//! a token, as a bearer header or the session cookie set by `/ui/login`. A Pod's log
//! comes from the REST API's own `…/pods/{name}/log?follow=true`.

pub mod session;
pub mod summary;
pub mod view;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use punnet_api::{DaemonSet, Deployment, Job, Node, ObjectReference, Pod, Time};
use serde::{Deserialize, Serialize};

use self::view::{EventRow, NodeInputs, NodeView, PodRow, WorkloadRow};
use crate::http::{ApiError, ApiState};

const FLEET_HTML: &str = include_str!("../../web/fleet.html");
const LOGIN_HTML: &str = include_str!("../../web/login.html");
const FLEET_JS: &str = include_str!("../../web/fleet.js");

/// Most nodes, Pods and Events one answer lists (a 5,000-node fleet's page stays
/// small; `?node=` and `?pod=` narrow it down).
const DEFAULT_NODES: usize = 100;
const DEFAULT_PODS: usize = 300;
const DEFAULT_EVENTS: usize = 100;
const MAX_LIMIT: usize = 5000;
/// Pod names listed on one node's card.
const PODS_PER_NODE: usize = 30;

/// The pages and their assets: open, they carry no data.
pub fn page_routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { redirect("/ui/") }))
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(fleet_page))
        .route("/ui/pods/{namespace}/{name}", get(fleet_page))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route(
            "/ui/assets/punnet.css",
            get(|| async { asset("text/css", punnet_api::web::STYLE_CSS) }),
        )
        .route(
            "/ui/assets/punnet.js",
            get(|| async { asset("text/javascript", punnet_api::web::PUNNET_JS) }),
        )
        .route(
            "/ui/assets/fleet.js",
            get(|| async { asset("text/javascript", FLEET_JS) }),
        )
}

/// The JSON the pages read: behind the API's token check (bearer or session cookie).
pub fn data_routes() -> Router<ApiState> {
    Router::new()
        .route("/ui/api/fleet", get(fleet))
        .route("/ui/api/pods/{namespace}/{name}", get(pod))
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in punnet_api::web::SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    with_security_headers(
        (
            [(
                header::CONTENT_TYPE,
                format!("{content_type}; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
    )
}

async fn fleet_page() -> Response {
    asset("text/html", FLEET_HTML)
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// `GET /ui/login`: the form; `?token=` logs in at once (a link a script can print)
/// and redirects to the page without the token in the address.
async fn login_page(State(state): State<ApiState>, Query(q): Query<LoginQuery>) -> Response {
    match q.token {
        Some(token) => match start_session(&state, &token) {
            Ok(cookie) => with_security_headers(
                (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, "/ui/".to_string()),
                        (header::SET_COOKIE, cookie),
                    ],
                )
                    .into_response(),
            ),
            Err(e) => e.into_response(),
        },
        None => asset("text/html", LOGIN_HTML),
    }
}

#[derive(Deserialize)]
struct LoginBody {
    token: String,
}

/// `POST /ui/login` `{"token": "…"}` (from the form's script): sets the cookie.
async fn login(State(state): State<ApiState>, Json(body): Json<LoginBody>) -> Response {
    match start_session(&state, &body.token) {
        Ok(cookie) => with_security_headers(
            (
                [(header::SET_COOKIE, cookie)],
                Json(serde_json::json!({ "status": "ok" })),
            )
                .into_response(),
        ),
        Err(e) => e.into_response(),
    }
}

fn start_session(state: &ApiState, token: &str) -> Result<String, ApiError> {
    let token = token.trim();
    let role = state.tokens.authorize(token).ok_or_else(|| {
        ApiError::unauthorized(
            "this token is not valid (unknown, deleted or expired): use <data-dir>/admin.token or make one with `punnet token create --role read-only`",
        )
    })?;
    session::may_view(role).map_err(ApiError::forbidden)?;
    if !session::cookie_safe(token) {
        return Err(ApiError::bad_request(
            "this token has characters a cookie cannot hold",
        ));
    }
    Ok(session::set_cookie(token, !state.transport.plaintext))
}

async fn logout(State(state): State<ApiState>) -> Response {
    with_security_headers(
        (
            [(
                header::SET_COOKIE,
                session::clear_cookie(!state.transport.plaintext),
            )],
            Json(serde_json::json!({ "status": "ok" })),
        )
            .into_response(),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FleetQuery {
    /// Nodes whose name contains this.
    node: Option<String>,
    /// Pods whose `namespace/name` or node contains this.
    pod: Option<String>,
    /// Events whose object (`Pod/default/web-1`) contains this.
    events: Option<String>,
    node_limit: Option<usize>,
    pod_limit: Option<usize>,
    event_limit: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    nodes: usize,
    nodes_ready: usize,
    pods: usize,
    pods_running: usize,
    pods_pending: usize,
    pods_failed: usize,
    /// Nodes and Pods that match the filters (the lists hold at most the limits).
    nodes_matching: usize,
    pods_matching: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Fleet {
    now: Time,
    revision: u64,
    version: &'static str,
    /// The API and MQTT run without TLS (`--allow-plaintext`): the page warns.
    plaintext: bool,
    counts: Counts,
    nodes: Vec<NodeView>,
    workloads: Vec<WorkloadRow>,
    pods: Vec<PodRow>,
    events: Vec<EventRow>,
}

fn contains(haystack: &str, needle: &Option<String>) -> bool {
    match needle.as_deref().map(str::trim) {
        None | Some("") => true,
        Some(n) => haystack.to_lowercase().contains(&n.to_lowercase()),
    }
}

/// `GET /ui/api/fleet`.
async fn fleet(
    State(state): State<ApiState>,
    Query(q): Query<FleetQuery>,
) -> Result<Response, ApiError> {
    state.pod_summary.ready(&state.store).await?;
    let state2 = state.clone();
    // Reading Nodes and some Pods is blocking sled work.
    let fleet = tokio::task::spawn_blocking(move || build_fleet(&state2, &q))
        .await
        .map_err(|e| ApiError::internal(format!("building the fleet view failed: {e}")))??;
    Ok(json_response(&fleet))
}

fn json_response<T: Serialize>(value: &T) -> Response {
    let mut response = Json(value).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn build_fleet(state: &ApiState, q: &FleetQuery) -> Result<Fleet, ApiError> {
    let now = Time::now();
    let store = &state.store;
    let node_limit = q.node_limit.unwrap_or(DEFAULT_NODES).min(MAX_LIMIT);
    let pod_limit = q.pod_limit.unwrap_or(DEFAULT_PODS).min(MAX_LIMIT);
    let event_limit = q.event_limit.unwrap_or(DEFAULT_EVENTS).min(MAX_LIMIT);

    let (nodes, revision) = store.list::<Node>(None)?;
    // Counts and the Pods to show come from the in-memory index; only the Pods shown
    // are read from the store.
    let pods = state
        .pod_summary
        .with(|index| index.select(q.pod.as_deref().unwrap_or_default(), pod_limit));
    let mut rows = Vec::with_capacity(pods.keys.len());
    for key in &pods.keys {
        let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
        // Deleted since the index saw it: left out.
        if let Some(pod) = store.get::<Pod>(Some(ns), name)? {
            rows.push(view::pod_row(&pod));
        }
    }

    // Nodes that need a look come first; only the ones shown get their full view.
    let mut matching: Vec<(bool, bool, &Node)> = nodes
        .iter()
        .filter(|n| contains(&n.metadata.name, &q.node))
        .map(|node| {
            let report = state.metrics.last_report(&node.metadata.name);
            let fine = view::warnings(node, report.as_ref().map(|(_, f)| f)).is_empty();
            (node.is_ready(), fine, node)
        })
        .collect();
    matching.sort_by(|a, b| (a.0, a.1, &a.2.metadata.name).cmp(&(b.0, b.1, &b.2.metadata.name)));
    let nodes_matching = matching.len();
    matching.truncate(node_limit);
    let shown: Vec<NodeView> = matching
        .into_iter()
        .map(|(_, _, node)| {
            let name = &node.metadata.name;
            view::node_view(NodeInputs {
                node,
                report: state.metrics.last_report(name),
                history: state.metrics.history(name, now),
                rejected: crate::signing::rejected_for(name),
                pods: state
                    .pod_summary
                    .with(|index| index.on_node(name, PODS_PER_NODE)),
            })
        })
        .collect();
    let counts = Counts {
        nodes: nodes.len(),
        nodes_ready: nodes.iter().filter(|n| n.is_ready()).count(),
        pods: pods.counts.pods,
        pods_running: pods.counts.running,
        pods_pending: pods.counts.pending,
        pods_failed: pods.counts.failed,
        nodes_matching,
        pods_matching: pods.matching,
    };

    let mut workloads: Vec<WorkloadRow> = Vec::new();
    workloads.extend(
        store
            .list::<Deployment>(None)?
            .0
            .iter()
            .map(view::deployment_row),
    );
    workloads.extend(
        store
            .list::<DaemonSet>(None)?
            .0
            .iter()
            .map(view::daemonset_row),
    );
    workloads.extend(store.list::<Job>(None)?.0.iter().map(view::job_row));

    let events = view::events(
        &store.recorder().list(None),
        q.events.as_deref().unwrap_or_default(),
        event_limit,
    );
    Ok(Fleet {
        now,
        revision,
        version: env!("CARGO_PKG_VERSION"),
        plaintext: state.transport.plaintext,
        counts,
        nodes: shown,
        workloads,
        pods: rows,
        events,
    })
}

/// `GET /ui/api/pods/{namespace}/{name}`.
async fn pod(
    State(state): State<ApiState>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
) -> Result<Response, ApiError> {
    let pod: Pod = state
        .store
        .get(Some(&namespace), &name)?
        .ok_or_else(|| ApiError::object_not_found::<Pod>(Some(&namespace), &name))?;
    let events = state.store.recorder().for_object(&ObjectReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        namespace: Some(namespace),
        name,
        ..Default::default()
    });
    Ok(json_response(&view::pod_detail(&pod, &events)))
}
