//! `GET …?watch=true` on every list URL: a stream of JSON lines
//! `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{…}}`, as the Kubernetes
//! API streams them. From `resourceVersion=N` it replays the watch cache's changes
//! after N, then follows live ones; without one (or with "0") it first sends every
//! current object as ADDED. A version older than the cache's history is `410 Gone`
//! (reason `Expired`): the client lists again and watches from the list's version.
//!
//! With a label or field selector, an object that stops matching is sent as DELETED and
//! one that starts matching as ADDED (MODIFIED when resuming: the client may have it).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, StreamExt};
use punnet_api::object::to_json;
use punnet_api::{Event, Status};
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::error::ApiError;
use super::kinds::ApiResource;
use super::query::{ListFilter, WatchParams};
use super::{ApiState, ShutdownSignal};
use crate::events::version_of;
use crate::prometheus::{self, WatchGuard};
use crate::store::{Change, WatchEvent};
use crate::watchcache::{Feed, Since};

/// A BOOKMARK this often (when asked for), so that a client resuming after a quiet,
/// filtered stream does not start from a version the cache has dropped.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// `{"type":…,"object":…}` and a newline.
fn line(type_: &str, object: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({ "type": type_, "object": object }))
        .expect("JSON values always serialise");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The ERROR line that ends a stream whose history broke off: re-list.
fn expired_line(message: String) -> Bytes {
    line("ERROR", to_json(&Status::failure(410, "Expired", message)))
}

/// The answer to a watch that starts before the cache's history.
pub fn expired(requested: u64, oldest: u64) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "Expired",
        format!(
            "too old resource version: {requested} ({oldest}); list again and watch from the list's resourceVersion"
        ),
    )
}

fn bookmark(api_version: &str, kind: &str, revision: u64) -> Bytes {
    line(
        "BOOKMARK",
        json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": { "resourceVersion": revision.to_string() },
        }),
    )
}

/// The streaming response; ends on shutdown too.
fn respond(body: BoxStream<'static, Bytes>, shutdown: Option<ShutdownSignal>) -> Response {
    let mut body: BoxStream<'static, Result<Bytes, Infallible>> = body.map(Ok).boxed();
    if let Some(ShutdownSignal(stop)) = shutdown {
        body = body.take_until(stop.cancelled_owned()).boxed();
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// What every watch stream keeps track of besides its source.
struct Clock {
    deadline: Instant,
    bookmarks: Option<tokio::time::Interval>,
    _open: WatchGuard,
}

impl Clock {
    fn new(params: &WatchParams) -> Clock {
        Clock {
            deadline: Instant::now() + params.timeout,
            bookmarks: params.bookmarks.then(|| {
                let start = Instant::now() + BOOKMARK_EVERY;
                tokio::time::interval_at(start, BOOKMARK_EVERY)
            }),
            _open: prometheus::watch_opened(),
        }
    }
}

/// What woke a watcher.
enum Wake<T> {
    Item(T),
    Bookmark,
    Lagged,
    Done,
}

async fn wait<T: Clone>(clock: &mut Clock, live: &mut broadcast::Receiver<T>) -> Wake<T> {
    let bookmark = async {
        match clock.bookmarks.as_mut() {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep_until(clock.deadline) => Wake::Done,
        _ = bookmark => Wake::Bookmark,
        got = live.recv() => match got {
            Ok(item) => Wake::Item(item),
            Err(RecvError::Lagged(_)) => Wake::Lagged,
            Err(RecvError::Closed) => Wake::Done,
        },
    }
}

// ---- objects in the store ------------------------------------------------------------

struct Watcher<T: ApiResource> {
    /// Lines ready to send (the initial objects).
    ready: VecDeque<Bytes>,
    backlog: VecDeque<Arc<WatchEvent>>,
    live: broadcast::Receiver<Feed>,
    /// The newest revision handled: later ones only.
    last: u64,
    namespace: Option<String>,
    filter: ListFilter,
    /// With a filter: the keys the client holds as matching.
    matched: HashSet<String>,
    /// Whether `matched` is complete (the stream began with every object).
    knows_all: bool,
    /// The versions the initial objects were sent at: a change the list already showed
    /// is not sent again.
    sent: HashMap<String, u64>,
    clock: Clock,
    ended: bool,
    _kind: std::marker::PhantomData<T>,
}

pub async fn watch<T: ApiResource>(
    state: ApiState,
    namespace: Option<String>,
    filter: ListFilter,
    params: WatchParams,
    shutdown: Option<ShutdownSignal>,
) -> Result<Response, ApiError> {
    let namespace = namespace.filter(|_| T::NAMESPACED);
    let mut w = Watcher::<T> {
        ready: VecDeque::new(),
        backlog: VecDeque::new(),
        live: broadcast::channel(1).1,
        last: 0,
        namespace,
        matched: HashSet::new(),
        knows_all: false,
        sent: HashMap::new(),
        clock: Clock::new(&params),
        ended: false,
        filter,
        _kind: std::marker::PhantomData,
    };
    let from = match params.resource_version {
        Some(n) => n,
        // Subscribed before the list: nothing committed after it is missed.
        None => state.watch.latest(),
    };
    match state.watch.since(from) {
        Since::Expired { oldest } => return Err(expired(from, oldest)),
        Since::Events { backlog, live } => {
            w.backlog = backlog.into();
            w.live = live;
            w.last = from;
        }
    }
    if params.resource_version.is_none() {
        let (items, revision) = state.store.list::<T>(w.namespace.as_deref())?;
        w.knows_all = true;
        w.last = w.last.max(revision);
        for obj in items {
            let json = to_json(&obj);
            if !w.filter.matches(&obj.meta().labels, || json.clone()) {
                continue;
            }
            let key = obj.meta().key();
            let rv = obj
                .meta()
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if rv > revision {
                w.sent.insert(key.clone(), rv);
            }
            w.matched.insert(key);
            w.ready.push_back(line("ADDED", json));
        }
    }
    let body = stream::unfold(w, |mut w| async move {
        let next = w.next().await?;
        Some((next, w))
    })
    .boxed();
    Ok(respond(body, shutdown))
}

impl<T: ApiResource> Watcher<T> {
    async fn next(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(l) = self.ready.pop_front() {
                return Some(l);
            }
            if let Some(ev) = self.backlog.pop_front() {
                if let Some(l) = self.convert(&ev) {
                    return Some(l);
                }
                continue;
            }
            match wait(&mut self.clock, &mut self.live).await {
                Wake::Item(Feed::Event(ev)) => {
                    if let Some(l) = self.convert(&ev) {
                        return Some(l);
                    }
                }
                Wake::Item(Feed::Reset) | Wake::Lagged => {
                    self.ended = true;
                    return Some(expired_line(format!(
                        "the watch fell behind the store after resourceVersion {}; list again",
                        self.last
                    )));
                }
                Wake::Bookmark => return Some(bookmark(T::API_VERSION, T::KIND, self.last)),
                Wake::Done => {
                    self.ended = true;
                    // A last bookmark lets a filtered client resume from here.
                    return self
                        .clock
                        .bookmarks
                        .is_some()
                        .then(|| bookmark(T::API_VERSION, T::KIND, self.last));
                }
            }
        }
    }

    /// The line for one change, if this watch shows it.
    fn convert(&mut self, ev: &WatchEvent) -> Option<Bytes> {
        if ev.revision <= self.last {
            return None;
        }
        self.last = ev.revision;
        if ev.object.kind() != T::KIND {
            return None;
        }
        let meta = ev.object.meta();
        if let Some(ns) = &self.namespace {
            if meta.namespace.as_deref() != Some(ns.as_str()) {
                return None;
            }
        }
        let key = meta.key();
        if !self.sent.is_empty() {
            if self.sent.get(&key).is_some_and(|rv| *rv >= ev.revision) {
                return None;
            }
            self.sent.retain(|_, rv| *rv > ev.revision);
        }
        let mut obj = T::from_object((*ev.object).clone())?;
        if ev.change == Change::Deleted {
            // As Kubernetes reports it: the deleted object at the deletion's version.
            obj.meta_mut().resource_version = Some(ev.revision.to_string());
        }
        let json = to_json(&obj);
        let matches = self.filter.matches(&obj.meta().labels, || json.clone());
        let type_ = if !self.filter.is_filtered() {
            match ev.change {
                Change::Added => "ADDED",
                Change::Modified => "MODIFIED",
                Change::Deleted => "DELETED",
            }
        } else {
            let known = self.matched.contains(&key);
            match (ev.change, matches) {
                (Change::Deleted, _) if known || matches => {
                    self.matched.remove(&key);
                    "DELETED"
                }
                (Change::Deleted, _) => return None,
                (_, true) => {
                    self.matched.insert(key);
                    match ev.change {
                        Change::Added => "ADDED",
                        _ if known || !self.knows_all => "MODIFIED",
                        _ => "ADDED",
                    }
                }
                (_, false) if known => {
                    self.matched.remove(&key);
                    "DELETED"
                }
                (_, false) => return None,
            }
        };
        Some(line(type_, json))
    }
}

// ---- Events (in memory, not in the store) ---------------------------------------------

struct EventWatcher {
    backlog: VecDeque<Event>,
    live: broadcast::Receiver<Event>,
    last: u64,
    namespace: Option<String>,
    filter: ListFilter,
    clock: Clock,
    ended: bool,
}

/// A watch of Events: each is ADDED when first recorded and MODIFIED when a repeat
/// bumps its count. Versions count Events, not store revisions.
pub async fn watch_events(
    state: ApiState,
    namespace: Option<String>,
    filter: ListFilter,
    params: WatchParams,
    shutdown: Option<ShutdownSignal>,
) -> Result<Response, ApiError> {
    let recorder = state.store.recorder();
    // Without a version: every Event there is, as ADDED.
    let from = params.resource_version.unwrap_or(0);
    let (backlog, live) = recorder.since(from, namespace.as_deref());
    let w = EventWatcher {
        backlog: backlog.into(),
        live,
        last: from,
        namespace,
        filter,
        clock: Clock::new(&params),
        ended: false,
    };
    let body = stream::unfold(w, |mut w| async move {
        let next = w.next().await?;
        Some((next, w))
    })
    .boxed();
    Ok(respond(body, shutdown))
}

impl EventWatcher {
    async fn next(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(e) = self.backlog.pop_front() {
                if let Some(l) = self.convert(e) {
                    return Some(l);
                }
                continue;
            }
            match wait(&mut self.clock, &mut self.live).await {
                Wake::Item(e) => {
                    if let Some(l) = self.convert(e) {
                        return Some(l);
                    }
                }
                Wake::Lagged => {
                    self.ended = true;
                    return Some(expired_line(format!(
                        "the watch of events fell behind after resourceVersion {}; list again",
                        self.last
                    )));
                }
                Wake::Bookmark => return Some(bookmark("v1", "Event", self.last)),
                Wake::Done => {
                    self.ended = true;
                    return self
                        .clock
                        .bookmarks
                        .is_some()
                        .then(|| bookmark("v1", "Event", self.last));
                }
            }
        }
    }

    fn convert(&mut self, e: Event) -> Option<Bytes> {
        let version = version_of(&e);
        if version <= self.last {
            return None;
        }
        self.last = version;
        if let Some(ns) = &self.namespace {
            if e.metadata.namespace.as_deref() != Some(ns.as_str()) {
                return None;
            }
        }
        let json = to_json(&e);
        if !self.filter.matches(&e.metadata.labels, || json.clone()) {
            return None;
        }
        Some(line(if e.count <= 1 { "ADDED" } else { "MODIFIED" }, json))
    }
}
