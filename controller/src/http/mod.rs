//! The controller's REST API (step 1–2 of the Pod flow): the Kubernetes paths, verbs,
//! status codes and bodies for Pods, Deployments, Nodes, ConfigMaps and Secrets, behind a bearer token, so
//! that `punnet` and a stock kubectl can talk to it.
//!
//! `router` builds the routes over an `ApiState`; `serve` runs them on a listener until
//! `shutdown` resolves, then drains requests for a bounded time.

mod apply;
pub mod auth;
mod discovery;
pub mod error;
mod events;
mod eviction;
mod extract;
mod kinds;
mod kinds_workloads;
pub mod logs;
mod metrics;
mod nodekeys;
mod objects;
mod query;
pub mod tokens;
mod watch;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, MethodRouter};
use axum::{Extension, Router};
use punnet_api::{ConfigMap, DaemonSet, Deployment, Job, Namespace, Node, Pod, ReplicaSet, Secret};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use self::apply::merge_patch;
pub use self::auth::Tokens;
pub use self::error::ApiError;
pub use self::kinds::ApiResource;
pub use self::logs::{LogError, LogItem, LogSource, LogStream};

use crate::metrics::Metrics;
use crate::store::Store;
use crate::watchcache::WatchCache;

/// Request bodies beyond this are refused with 413: the largest sane manifest is far
/// smaller, and a Pi should not buffer a runaway upload.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How long `serve` waits for running requests after shutdown before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// All objects; every acknowledged write has been `sync`ed.
    pub store: Arc<Store>,
    /// The bearer tokens requests must carry.
    pub tokens: Arc<Tokens>,
    /// Container logs, fetched from the node's agent.
    pub logs: Arc<dyn LogSource>,
    /// The latest usage figures node sync received.
    pub metrics: Arc<Metrics>,
    /// Recent committed changes, for watches that start from a resourceVersion.
    pub watch: Arc<WatchCache>,
    /// Whether the API and the broker run without TLS, for `/status` and status pages.
    pub transport: Transport,
    /// Every Pod's phase and node, for the fleet page (started by its first request).
    pub pod_summary: Arc<crate::web::summary::PodSummary>,
}

/// How the controller's listeners are secured (`--allow-plaintext` turns TLS off).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transport {
    /// True when the REST API and the MQTT connection run without TLS.
    pub plaintext: bool,
}

impl ApiState {
    pub fn new(store: Arc<Store>, tokens: Arc<Tokens>, logs: Arc<dyn LogSource>) -> ApiState {
        ApiState {
            watch: WatchCache::start(&store, crate::watchcache::DEFAULT_CAPACITY),
            store,
            tokens,
            logs,
            metrics: Arc::default(),
            pod_summary: Arc::default(),
            transport: Transport::default(),
        }
    }

    /// Reports this transport on `/status`.
    pub fn with_transport(self, transport: Transport) -> ApiState {
        ApiState { transport, ..self }
    }

    /// Serves these figures (node sync's) instead of an empty set.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> ApiState {
        ApiState { metrics, ..self }
    }
}

/// Cancelled when `serve` is told to shut down, so that endless responses (following
/// logs) end instead of holding the shutdown up.
#[derive(Clone, Debug)]
pub struct ShutdownSignal(pub CancellationToken);

/// The whole API. `/healthz` is open; everything else needs a token.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_v1))
        .route("/apis", get(discovery::groups))
        .route("/apis/apps", get(discovery::apps_group))
        .route("/apis/apps/v1", get(discovery::apps_v1))
        .route("/apis/metrics.k8s.io", get(discovery::metrics_group))
        .route(
            "/apis/metrics.k8s.io/v1beta1",
            get(discovery::metrics_v1beta1),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/nodes",
            get(metrics::list_nodes),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/nodes/{name}",
            get(metrics::get_node),
        )
        .route("/apis/metrics.k8s.io/v1beta1/pods", get(metrics::list_pods))
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods",
            get(metrics::list_pods),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}",
            get(metrics::get_pod),
        )
        .route("/metrics", get(metrics::prometheus))
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/namespaces/{namespace}/events", get(events::list))
        .route("/api/v1/pods", get(objects::list::<Pod>))
        .route("/api/v1/namespaces/{namespace}/pods", collection::<Pod>())
        .route("/api/v1/namespaces/{namespace}/pods/{name}", item::<Pod>())
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            get(logs::logs),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/eviction",
            axum::routing::post(eviction::evict),
        )
        .route(
            "/apis/apps/v1/deployments",
            get(objects::list::<Deployment>),
        )
        .route(
            "/apis/apps/v1/namespaces/{namespace}/deployments",
            collection::<Deployment>(),
        )
        .route(
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            item::<Deployment>(),
        )
        .route(
            "/apis/apps/v1/replicasets",
            get(objects::list::<ReplicaSet>),
        )
        .route(
            "/apis/apps/v1/namespaces/{namespace}/replicasets",
            collection::<ReplicaSet>(),
        )
        .route(
            "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}",
            item::<ReplicaSet>(),
        )
        .route("/api/v1/configmaps", get(objects::list::<ConfigMap>))
        .route(
            "/api/v1/namespaces/{namespace}/configmaps",
            collection::<ConfigMap>(),
        )
        .route(
            "/api/v1/namespaces/{namespace}/configmaps/{name}",
            item::<ConfigMap>(),
        )
        .route("/api/v1/secrets", get(objects::list::<Secret>))
        .route(
            "/api/v1/namespaces/{namespace}/secrets",
            collection::<Secret>(),
        )
        .route(
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            item::<Secret>(),
        )
        .route("/apis/apps/v1/daemonsets", get(objects::list::<DaemonSet>))
        .route(
            "/apis/apps/v1/namespaces/{namespace}/daemonsets",
            collection::<DaemonSet>(),
        )
        .route(
            "/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}",
            item::<DaemonSet>(),
        )
        .route("/apis/batch", get(discovery::batch_group))
        .route("/apis/batch/v1", get(discovery::batch_v1))
        .route("/apis/batch/v1/jobs", get(objects::list::<Job>))
        .route(
            "/apis/batch/v1/namespaces/{namespace}/jobs",
            collection::<Job>(),
        )
        .route(
            "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
            item::<Job>(),
        )
        .route("/api/v1/namespaces", collection::<Namespace>())
        .route("/api/v1/namespaces/{name}", item::<Namespace>())
        .route("/backup", get(super::backup::serve))
        .route("/nodekeys", get(nodekeys::list).post(nodekeys::register))
        .route("/nodekeys/{node}", axum::routing::delete(nodekeys::revoke))
        .route("/api/v1/nodes", collection::<Node>())
        .route("/api/v1/nodes/{name}", item::<Node>())
        .route(tokens::GROUP_PATH, get(tokens::group))
        .route("/apis/punnet.io/v1", get(tokens::resources))
        .route(
            "/apis/punnet.io/v1/tokens",
            get(tokens::list).post(tokens::create),
        )
        .route(
            "/apis/punnet.io/v1/tokens/{id}",
            get(tokens::get).delete(tokens::delete),
        )
        .merge(crate::web::data_routes())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let open = Router::new()
        .route("/healthz", get(discovery::healthz))
        .route("/status", get(discovery::status))
        .merge(crate::web::page_routes())
        .method_not_allowed_fallback(method_not_allowed);
    api.merge(open)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn collection<T: ApiResource>() -> MethodRouter<ApiState> {
    get(objects::list::<T>).post(objects::create::<T>)
}

fn item<T: ApiResource>() -> MethodRouter<ApiState> {
    get(objects::get::<T>)
        .put(objects::replace::<T>)
        .patch(objects::patch::<T>)
        .delete(objects::delete::<T>)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "the server could not find the requested resource ({})",
        uri.path()
    ))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not supported on {}", uri.path()))
}

/// Serves the API over TLS on `listener` (see `tls::listener`), like `serve`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = crate::tls::listener::TlsListener::new(listener, tls)?;
    serve_on(listener, "https", state, shutdown).await
}

/// Serves the API on `listener` until `shutdown` resolves, then lets running requests
/// finish for up to `SHUTDOWN_GRACE`.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(listener, "http", state, shutdown).await
}

async fn serve_on<L>(
    listener: L,
    scheme: &str,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let stop = CancellationToken::new();
    let app = router(state).layer(Extension(ShutdownSignal(stop.clone())));
    if let Ok(addr) = axum::serve::Listener::local_addr(&listener) {
        tracing::info!("REST API listening on {scheme}://{addr}");
    }
    let signal = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    };
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .into_future();
    tokio::select! {
        result = server => result,
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                "REST API requests still running {}s after shutdown; terminating now",
                SHUTDOWN_GRACE.as_secs()
            );
            Ok(())
        }
    }
}
