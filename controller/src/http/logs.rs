//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: a container's log, streamed as
//! `text/plain`. The controller has no logs itself; it asks the agent of the Pod's node
//! through a `LogSource` (over MQTT in production, see `crate::logproxy`; a fake in
//! tests) and forwards the chunks as they arrive.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use punnet_api::wire::LogRequest;
use punnet_api::Pod;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::extract::{Params, Target};
use super::{ApiState, ShutdownSignal};

/// How long a node's agent gets to accept a log request before the client is told
/// the node is not answering. A `LogSource` should give up sooner on its own.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Where container logs come from: the agent of the node a Pod runs on.
///
/// `open` resolves once the agent has accepted the request (or failed it). Errors it
/// returns become HTTP errors; an `Err` item inside the stream afterwards aborts the
/// response body, which the client sees as a broken transfer (the status line has been
/// sent by then). The returned future must not borrow `node` (copy it).
pub trait LogSource: Send + Sync + 'static {
    fn open(&self, node: &str, request: LogRequest) -> BoxFuture<'_, Result<LogStream, LogError>>;
}

/// Why a log could not be opened.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LogError {
    /// The node did not answer, is offline or unreachable (HTTP 503).
    #[error("node {node} did not answer the log request: {reason}")]
    NodeUnavailable { node: String, reason: String },
    /// The agent does not know the Pod or container, e.g. it has not started it yet
    /// (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The agent refused for another reason (HTTP 500 with this message).
    #[error("{0}")]
    Failed(String),
}

/// One item of a log stream: bytes of log text, or why the log stopped.
pub type LogItem = Result<Vec<u8>, String>;

/// The chunks of one container log, in order; the stream ends when the log does (at
/// once without `follow`, when the container is gone or the request is cancelled with
/// it).
///
/// Dropping the stream is the cancellation: the HTTP client went away or the server is
/// shutting down. The producer sees it as `Sender::is_closed()` / `closed().await` (or a
/// failed `send`) and should then tell the agent to stop (`LogRequest { cancel: true }`).
pub struct LogStream {
    rx: mpsc::Receiver<LogItem>,
}

impl LogStream {
    pub fn new(rx: mpsc::Receiver<LogItem>) -> LogStream {
        LogStream { rx }
    }

    /// A stream and the sender that feeds it (`buffer` chunks of back-pressure).
    pub fn channel(buffer: usize) -> (mpsc::Sender<LogItem>, LogStream) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        (tx, LogStream::new(rx))
    }
}

impl Stream for LogStream {
    type Item = LogItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LogItem>> {
        self.rx.poll_recv(cx)
    }
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStream")
    }
}

/// The query of a log request. Strings, so that bad values get our own messages.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogParams {
    pub container: Option<String>,
    pub follow: Option<String>,
    pub tail_lines: Option<String>,
    pub previous: Option<String>,
    pub since_seconds: Option<String>,
    pub since_time: Option<String>,
    pub limit_bytes: Option<String>,
}

impl LogParams {
    fn follow(&self) -> Result<bool, ApiError> {
        flag("follow", self.follow.as_deref())
    }

    /// `None` for the whole log (no or a negative `tailLines`, as kubectl's `--tail=-1`).
    fn tail_lines(&self) -> Result<Option<u64>, ApiError> {
        match self.tail_lines.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => s
                .parse::<i64>()
                .map(|n| u64::try_from(n).ok())
                .map_err(|_| {
                    ApiError::bad_request(format!("tailLines={s:?} is not a number of lines"))
                }),
        }
    }

    /// Options that would change what is returned and that the agent cannot honour yet.
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        if flag("previous", self.previous.as_deref())? {
            return Err(ApiError::bad_request(
                "previous=true is not supported by Punnet: the log of a restarted container continues in the same file",
            ));
        }
        for (name, value) in [
            ("sinceSeconds", &self.since_seconds),
            ("sinceTime", &self.since_time),
            ("limitBytes", &self.limit_bytes),
        ] {
            if value.is_some() {
                return Err(ApiError::bad_request(format!(
                    "{name} is not supported by Punnet yet: use tailLines"
                )));
            }
        }
        Ok(())
    }
}

fn flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value.map(str::trim) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}={other:?} is not true or false"
        ))),
    }
}

/// The container whose log is asked for: the named one, or the only one.
pub fn pick_container(pod: &Pod, requested: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> = pod
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let key = pod.metadata.key();
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {key}, choose one of: [{}]",
            names.join(" ")
        ))),
        None => match names.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(ApiError::bad_request(format!(
                "pod {key} has no containers"
            ))),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {key}, choose one of: [{}]",
                names.join(" ")
            ))),
        },
    }
}

pub async fn logs(
    State(state): State<ApiState>,
    target: Target,
    Params(params): Params<LogParams>,
    shutdown: Option<Extension<ShutdownSignal>>,
) -> Result<Response, ApiError> {
    params.refuse_unsupported()?;
    let follow = params.follow()?;
    let tail_lines = params.tail_lines()?;
    let namespace = target.namespace.clone().unwrap_or_default();
    let pod: Pod = state
        .store
        .get(Some(&namespace), target.name())?
        .ok_or_else(|| ApiError::object_not_found::<Pod>(Some(&namespace), target.name()))?;
    let container = pick_container(&pod, params.container.as_deref())?;
    let Some(node) = pod.spec.node_name.clone().filter(|n| !n.is_empty()) else {
        return Err(ApiError::service_unavailable(format!(
            "pod {} is not scheduled to a node yet, so it has no logs",
            pod.metadata.key()
        )));
    };

    let request = LogRequest {
        id: crate::store::new_uid(),
        namespace,
        pod: pod.metadata.name.clone(),
        container: Some(container),
        follow,
        tail_lines,
        cancel: false,
    };
    let opened = tokio::time::timeout(OPEN_TIMEOUT, state.logs.open(&node, request)).await;
    let stream = match opened {
        Ok(Ok(stream)) => stream,
        Ok(Err(e @ LogError::NodeUnavailable { .. })) => {
            return Err(ApiError::service_unavailable(e.to_string()))
        }
        Ok(Err(LogError::NotFound(m))) => return Err(ApiError::not_found(m)),
        Ok(Err(LogError::Failed(m))) => return Err(ApiError::internal(m)),
        Err(_) => {
            return Err(ApiError::service_unavailable(format!(
                "node {node} did not answer the log request within {}s",
                OPEN_TIMEOUT.as_secs()
            )))
        }
    };

    let pod_key = pod.metadata.key();
    let mut body: BoxStream<'static, Result<Bytes, std::io::Error>> = stream
        .map(move |item| {
            item.map(Bytes::from).map_err(|message| {
                tracing::warn!("log of pod {pod_key} broke off: {message}");
                std::io::Error::other(message)
            })
        })
        .boxed();
    // A following log never ends by itself; shutting down must not wait for it.
    if let Some(Extension(ShutdownSignal(stop))) = shutdown {
        body = body.take_until(stop.cancelled_owned()).boxed();
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::Container;

    fn pod(containers: &[&str]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = "web".into();
        p.metadata.namespace = Some("default".into());
        p.spec.containers = containers
            .iter()
            .map(|n| Container {
                name: n.to_string(),
                image: "busybox".into(),
                ..Default::default()
            })
            .collect();
        p
    }

    #[test]
    fn picks_the_only_or_the_named_container() {
        assert_eq!(pick_container(&pod(&["a"]), None).unwrap(), "a");
        assert_eq!(pick_container(&pod(&["a", "b"]), Some("b")).unwrap(), "b");
        let err = pick_container(&pod(&["a", "b"]), None).unwrap_err();
        assert_eq!(
            err.status.message,
            "a container name must be specified for pod default/web, choose one of: [a b]"
        );
        let err = pick_container(&pod(&["a", "b"]), Some("c")).unwrap_err();
        assert_eq!(
            err.status.message,
            "container c is not valid for pod default/web, choose one of: [a b]"
        );
    }

    #[test]
    fn parses_flags_and_tail_lines() {
        let p = LogParams {
            follow: Some("true".into()),
            tail_lines: Some("-1".into()),
            ..Default::default()
        };
        assert!(p.follow().unwrap());
        assert_eq!(p.tail_lines().unwrap(), None);
        let p = LogParams {
            follow: Some("yes".into()),
            tail_lines: Some("ten".into()),
            ..Default::default()
        };
        assert!(p.follow().is_err());
        assert!(p.tail_lines().is_err());
        let p = LogParams {
            tail_lines: Some("10".into()),
            since_seconds: Some("5".into()),
            ..Default::default()
        };
        assert_eq!(p.tail_lines().unwrap(), Some(10));
        assert!(p.refuse_unsupported().is_err());
    }
}
