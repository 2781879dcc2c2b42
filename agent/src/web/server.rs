//! The board page's HTTP server (axum): the page, its assets, the JSON it polls and a
//! container's log as text. Read-only: the only POST sets the login cookie. With
//! `--web-token`, everything but the assets and the login form wants the token, as
//! `Authorization: Bearer <token>` (scripts) or the cookie the login form sets
//! (browsers; it holds the token's SHA-256, not the token).

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::BoardState;

const COOKIE: &str = "punnet_board";
const PAGE: &str = include_str!("assets/board.html");
const BOARD_JS: &str = include_str!("assets/board.js");
const BOARD_CSS: &str = include_str!("assets/board.css");
/// The most log lines `/api/pods/.../log` returns.
const MAX_TAIL: u64 = 5000;

pub fn router(board: Arc<BoardState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/logout", get(logout))
        .route("/api/board", get(board_json))
        .route("/api/pods/{namespace}/{name}/log", get(pod_log))
        .route(
            "/assets/punnet.css",
            get(|| asset(punnet_api::web::STYLE_CSS, "text/css")),
        )
        .route(
            "/assets/punnet.js",
            get(|| asset(punnet_api::web::PUNNET_JS, "text/javascript")),
        )
        .route("/assets/board.css", get(|| asset(BOARD_CSS, "text/css")))
        .route(
            "/assets/board.js",
            get(|| asset(BOARD_JS, "text/javascript")),
        )
        .layer(axum::middleware::map_response(security_headers))
        .with_state(board)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    board: Arc<BoardState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(board))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    for (name, value) in punnet_api::web::SECURITY_HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn digest_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether the request carries the token (or no token is asked for). Digests are
/// compared, so the time taken says nothing about the token.
fn authorized(board: &BoardState, headers: &HeaderMap) -> bool {
    let Some(token) = &board.token else {
        return true;
    };
    let want = digest_hex(token);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| digest_hex(t.trim()));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string());
    bearer.as_deref() == Some(want.as_str()) || cookie.as_deref() == Some(want.as_str())
}

fn unauthorized_json() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"punnet board\"")],
        Json(serde_json::json!({
            "message": "this board page asks for a token (--web-token): send `Authorization: Bearer <token>`, or sign in on the page"
        })),
    )
        .into_response()
}

async fn page(State(board): State<Arc<BoardState>>, headers: HeaderMap) -> Response {
    if !authorized(&board, &headers) {
        return login_page(&board, None);
    }
    Html(PAGE).into_response()
}

/// The sign-in form (a plain form: no script needed, none inline).
fn login_page(board: &BoardState, error: Option<&str>) -> Response {
    let node = html_escape(&board.node_name);
    let error = error
        .map(|e| format!("<p class=\"banner bad\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{node} · sign in · Punnet board</title>
<link rel="stylesheet" href="/assets/punnet.css"><link rel="stylesheet" href="/assets/board.css">
</head><body>
<header class="top"><h1>{node}</h1><span class="muted">Punnet board</span></header>
<main class="login"><div class="card">
<h3>Token needed</h3>
<p class="sub">This board page was started with <code>--web-token</code>. Enter that token to view it (read-only).</p>
{error}
<form method="post" action="/login">
<input type="password" name="token" autocomplete="current-password" aria-label="token" required autofocus>
<button type="submit">View the board</button>
</form></div></main></body></html>"#
    );
    (StatusCode::UNAUTHORIZED, Html(body)).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(board): State<Arc<BoardState>>, Form(form): Form<LoginForm>) -> Response {
    let Some(token) = &board.token else {
        return Redirect::to("/").into_response();
    };
    if digest_hex(form.token.trim()) != digest_hex(token) {
        return login_page(&board, Some("That is not this board's token."));
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000",
        digest_hex(token)
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn board_json(State(board): State<Arc<BoardState>>, headers: HeaderMap) -> Response {
    if !authorized(&board, &headers) {
        return unauthorized_json();
    }
    match tokio::task::spawn_blocking(move || board.view()).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "message": format!("building the board failed: {e}") })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    container: Option<String>,
    tail: Option<u64>,
}

/// A container's newest log lines as text, Secret values masked:
/// `/api/pods/<namespace>/<name>/log?container=<c>&tail=<n>`.
async fn pod_log(
    State(board): State<Arc<BoardState>>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    if !authorized(&board, &headers) {
        return unauthorized_json();
    }
    let tail = q.tail.unwrap_or(100).min(MAX_TAIL);
    let result = tokio::task::spawn_blocking(move || {
        board.log(&namespace, &name, q.container.as_deref(), tail)
    })
    .await;
    match result {
        Ok(Ok(lines)) => {
            let mut text = lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        Ok(Err(message)) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "message": message })),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
