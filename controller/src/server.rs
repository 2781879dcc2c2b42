//! `run`: starts every part of the controller — store, embedded broker, node sync,
//! Deployment controller, scheduler, Pod CIDR allocation, REST API and optionally a
//! local agent — and stops them when `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ControllerConfig;
use crate::http::{self, ApiState};
use crate::identity::{BrokerAuth, NodeIdentities};
use crate::logproxy::LogProxy;
use crate::metrics::Metrics;
use crate::mqtt::{MqttError, MqttSettings};
use crate::store::{Store, StoreError};
use crate::tokens::Tokens;
use crate::{
    auth_token, broker, daemonset, deployment, gc, job, namespaces, nodeipam, nodelifecycle,
    nodesync, replicaset, scheduling,
};
use crate::{enrol, identity, mosquitto, tokens};

/// How long the parts get to finish after shutdown before `run` returns anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("admin token: {0}")]
    Token(#[from] auth_token::TokenError),
    #[error("embedded MQTT broker: {0}")]
    Broker(#[from] broker::BrokerError),
    #[error("broker URL: {0}")]
    Mqtt(#[from] MqttError),
    #[error("cannot listen for the API on {addr}: {source} (is another controller running? choose another --http)")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API server: {0}")]
    Serve(std::io::Error),
    #[error("local agent: {0}")]
    Agent(#[from] punnet_agent::AgentError),
    #[error("a controller task panicked: {0}")]
    Panicked(String),
    #[error("MQTT API: {0}")]
    MqttApi(#[from] crate::mqttapi::MqttApiError),
    #[error("identity: {0}")]
    Identity(#[from] identity::IdentityError),
    #[error("the local agent's identity: {0}")]
    LocalIdentity(String),
    #[error("{0}")]
    Signing(#[from] crate::signing::SigningError),
    #[error("local agent's key: {0}")]
    AgentIdentity(#[from] punnet_agent::identity::IdentityError),
    #[error("registering the local agent's key: {0}")]
    NodeKeys(#[from] sled::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

pub async fn run(
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ControllerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ControllerError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = Arc::new(Store::open_with_key_file(
        &crate::backup::db_dir(&config.data_dir),
        &config.key_file(),
    )?);
    info!(
        revision = store.revision(),
        dir = %config.data_dir.display(),
        "store opened"
    );
    let token = auth_token::load_or_create(&config.data_dir)?;
    let signing_key = Arc::new(crate::signing::ControllerKey::load_or_create(
        &config.data_dir,
    )?);
    crate::signing::write_public_key(&config.data_dir, &signing_key)?;
    // Identity: tokens with roles, enrolled nodes, the controller's own broker login.
    let tokens = Arc::new(Tokens::open(&token, store.open_tree(tokens::TREE)?));
    let nodes = NodeIdentities::open(store.open_tree(identity::TREE)?);
    let controller_password = identity::controller_password(&config.data_dir)?;
    if let Some(dir) = config.mosquitto_config.clone() {
        let sync = {
            let (dir, pid, scope) = (
                dir,
                config.mosquitto_pid_file.clone(),
                crate::acl::Scope::new(&config.prefix, config.homeassistant.as_deref()),
            );
            let (t, n, pw) = (
                Arc::downgrade(&tokens),
                nodes.clone(),
                controller_password.clone(),
            );
            move || {
                let Some(t) = t.upgrade() else { return };
                match mosquitto::sync(&dir, pid.as_deref(), &scope, &pw, &t, &n) {
                    Ok(()) => {
                        info!(dir = %dir.display(), "Mosquitto password and ACL files written")
                    }
                    Err(e) => warn!("could not update the Mosquitto files: {e}"),
                }
            }
        };
        sync();
        let hook: tokens::ChangeHook = Arc::new(sync);
        tokens.set_on_change(hook.clone());
        nodes.set_on_change(hook);
    }
    let auth = Arc::new(
        BrokerAuth::new(tokens.clone(), nodes.clone(), controller_password.clone())
            .with_events(store.clone()),
    );
    let server_tls = secure_transport(&config)?;
    // Stops the embedded broker's gate (rumqttd itself cannot be stopped).
    let broker_cancel = CancellationToken::new();

    // Where the MQTT API's own connection reaches the embedded broker's v5 listener.
    let mut api_v5 = None;
    let mqtt = match &config.broker {
        Some(url) => {
            info!(%url, "using external MQTT broker");
            MqttSettings::from_url(url)?
        }
        None => {
            api_v5 = start_broker(
                &config,
                server_tls.as_ref(),
                auth.clone(),
                broker_cancel.clone(),
            )
            .await?;
            info!(addr = %config.mqtt, "embedded MQTT broker listening (only enrolled nodes, the controller and token logins are admitted)");
            MqttSettings::from_url(&config.broker_url())?
        }
    };
    let mqtt_url = config.broker_url();
    let mqtt = crate::tls::client::secure_settings(
        mqtt,
        &mqtt_url,
        config.client_ca().as_deref(),
        config.allow_plaintext,
    )?;
    let mqtt = MqttSettings {
        prefix: config.prefix.clone(),
        credentials: Some((
            punnet_api::enrol::CONTROLLER_USERNAME.to_string(),
            controller_password,
        )),
        ..mqtt
    };
    let mut mqtt_api = crate::mqttapi::config_for(&config, &mqtt)?;
    if let (Some(api), Some(v5)) = (mqtt_api.as_mut(), api_v5) {
        api.host = v5.ip().to_string();
        api.port = v5.port();
    }

    let listener =
        TcpListener::bind(config.http)
            .await
            .map_err(|source| ControllerError::Listen {
                addr: config.http.to_string(),
                source,
            })?;
    let http_addr = listener.local_addr().map_err(ControllerError::Serve)?;
    let client_config = auth_token::write_client_config_with(
        &config.data_dir,
        &auth_token::client_url_with(http_addr, server_tls.is_some()),
        &token,
        server_tls.as_ref().and_then(|t| t.ca_file.as_deref()),
    )?;
    info!(addr = %http_addr, client_config = %client_config.display(), "API listening");

    let cancel = CancellationToken::new();
    let logs = Arc::new(LogProxy::default());
    let metrics = Arc::new(Metrics::default());
    // Every part runs until `cancel`; one that ends early (its listener failed, the
    // local agent could not start) takes the controller down with its error.
    let mut tasks: JoinSet<Result<(), ControllerError>> = JoinSet::new();
    let enroller = enrol::Enroller {
        store: store.clone(),
        tokens: tokens.clone(),
        nodes: nodes.clone(),
        controller_key: signing_key.public_key(),
    };
    let (m, c) = (mqtt.clone(), cancel.clone());
    tasks.spawn(async move {
        enrol::run(enroller, m, c).await;
        Ok(())
    });
    let (s, n, c) = (store.clone(), nodes.clone(), cancel.clone());
    tasks.spawn(async move {
        identity::revoke_deleted_nodes(s, n, c).await;
        Ok(())
    });
    let (s, l, m, c) = (store.clone(), logs.clone(), metrics.clone(), cancel.clone());
    let grace = config.node_grace;
    let k = signing_key.clone();
    tasks.spawn(async move {
        nodesync::run(s, mqtt, grace, l, m, k, c).await;
        Ok(())
    });
    let (s, c) = (store.clone(), cancel.clone());
    tasks.spawn(async move {
        deployment::run(s, c).await;
        Ok(())
    });
    let (s, c) = (store.clone(), cancel.clone());
    tasks.spawn(async move {
        replicaset::run(s, c).await;
        Ok(())
    });
    let (s, c) = (store.clone(), cancel.clone());
    tasks.spawn(async move {
        scheduling::run(s, c).await;
        Ok(())
    });
    let (s, c) = (store.clone(), cancel.clone());
    tasks.spawn(async move {
        daemonset::run(s, c).await;
        Ok(())
    });
    let (s, c) = (store.clone(), cancel.clone());
    tasks.spawn(async move {
        job::run(s, c).await;
        Ok(())
    });
    let (s, c) = (store.clone(), cancel.clone());
    tasks.spawn(async move {
        gc::run(s, c).await;
        Ok(())
    });
    let (s, c) = (store.clone(), cancel.clone());
    tasks.spawn(async move {
        namespaces::run(s, c).await;
        Ok(())
    });
    let (s, c) = (store.clone(), cancel.clone());
    let lifecycle = nodelifecycle::NodeLifecycleConfig {
        default_eviction: config.default_eviction,
        ..Default::default()
    };
    tasks.spawn(async move {
        nodelifecycle::run(s, lifecycle, c).await;
        Ok(())
    });
    let (s, c, cidrs) = (store.clone(), cancel.clone(), config.pod_cidrs);
    info!(cluster_cidr = %cidrs.cluster(), mask = cidrs.mask(), "Pod CIDR allocation");
    tasks.spawn(async move {
        nodeipam::run(s, cidrs, c).await;
        Ok(())
    });
    let state = ApiState::new(store.clone(), tokens.clone(), logs)
        .with_metrics(metrics)
        .with_transport(http::Transport {
            plaintext: config.allow_plaintext,
        });
    if let Some(api) = mqtt_api {
        let parts = crate::mqttapi::MqttApiParts {
            store: store.clone(),
            metrics: state.metrics.clone(),
            executor: crate::mqttapi::exec::Executor::new(http::router(state.clone()), &token),
            auth: tokens.clone(),
        };
        let c = cancel.clone();
        tasks.spawn(async move {
            crate::mqttapi::run(parts, api, c).await;
            Ok(())
        });
    }
    let c = cancel.clone();
    let https = server_tls.as_ref().map(|t| t.https.clone());
    // On a runtime of its own: see `io_runtime`.
    let api = crate::io_runtime::api().map_err(ControllerError::Serve)?;
    // Its sockets are driven by that runtime's reactor, not the busy main one's.
    let listener = listener.into_std().map_err(ControllerError::Serve)?;
    tasks.spawn(async move {
        let serving = api.spawn(async move {
            let listener = TcpListener::from_std(listener)?;
            match https {
                Some(tls) => http::serve_tls(listener, tls, state, c.cancelled_owned()).await,
                None => http::serve(listener, state, c.cancelled_owned()).await,
            }
        });
        match serving.await {
            Ok(served) => served.map_err(ControllerError::Serve),
            Err(e) => Err(ControllerError::Panicked(e.to_string())),
        }
    });
    if let Some(mut agent) = config.agent.clone() {
        // The local agent needs no enrolment: its key is registered and it is given the
        // controller's key directly.
        let node_key = punnet_agent::identity::NodeKey::load_or_create(&agent.data_dir)?;
        store
            .node_keys()
            .register(&agent.node_name, node_key.public_key())?;
        punnet_agent::identity::write_controller_key(&agent.data_dir, &signing_key.public_key())?;
        info!(node = %agent.node_name, "starting local agent");
        // The controller vouches for its own agent: no token, credentials written
        // straight into the agent's data dir.
        let password = identity::preregister(&nodes, &agent.node_name, node_key.public_key())?;
        let creds = punnet_agent::enrol::Credentials {
            node: agent.node_name.clone(),
            mqtt: punnet_agent::enrol::MqttLogin {
                username: agent.node_name.clone(),
                password,
            },
        };
        creds
            .save(&agent.data_dir, None)
            .map_err(|e| ControllerError::LocalIdentity(e.to_string()))?;
        agent.token = None;
        let c = cancel.clone();
        tasks.spawn(async move {
            punnet_agent::run(agent, c.cancelled_owned())
                .await
                .map_err(ControllerError::from)
        });
    }

    let mut result = Ok(());
    tokio::select! {
        _ = shutdown => info!("shutting down"),
        Some(ended) = tasks.join_next() => {
            warn!("a part of the controller stopped; shutting down");
            result = match ended {
                Ok(r) => r,
                Err(e) => Err(ControllerError::Panicked(e.to_string())),
            };
        }
    }
    cancel.cancel();
    broker_cancel.cancel();
    // The embedded broker's login check lives as long as this (see `broker`).
    drop(auth);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("parts still running after {SHUTDOWN_GRACE:?}; terminating now");
    }
    // Heartbeats kept in memory reach the disk now (see `store::volatile`).
    store.persist_volatile().await?;
    result
}

/// The listeners' TLS (see `tls`), or `None` with `--allow-plaintext`, which is logged.
fn secure_transport(
    config: &ControllerConfig,
) -> Result<Option<crate::tls::ServerTls>, ControllerError> {
    if config.allow_plaintext {
        warn!("--allow-plaintext: the REST API and the embedded MQTT broker run WITHOUT TLS; tokens and desired state cross the network unencrypted");
        return Ok(None);
    }
    let tls = crate::tls::prepare(&config.data_dir, &config.tls)?;
    if let Some(ca) = &tls.ca_file {
        info!(ca = %ca.display(), "TLS on; clients trust this CA (punnet-agent --ca, punnet --ca)");
    }
    Ok(Some(tls))
}

/// Starts the embedded broker: rumqttd on loopback ports, behind the gate (which
/// terminates TLS unless plaintext, and confines each login to its topics; see
/// `broker_gate`) on the public addresses. Returns where the controller's own MQTT API
/// connection reaches rumqttd's MQTT 5 listener directly.
async fn start_broker(
    config: &ControllerConfig,
    tls: Option<&crate::tls::ServerTls>,
    auth: Arc<BrokerAuth>,
    cancel: CancellationToken,
) -> Result<Option<std::net::SocketAddr>, ControllerError> {
    use crate::acl;
    use crate::broker_gate::{self, Gate, Version};
    // Fail on a taken public address before rumqttd starts a thread that cannot stop.
    let mut fronts = vec![(config.mqtt, Version::V4)];
    fronts.extend(config.mqtt_v5.map(|a| (a, Version::V5)));
    let mut inner = Vec::new();
    for (public, _) in &fronts {
        let bind = |source| broker::BrokerError::Bind {
            addr: *public,
            source,
        };
        drop(std::net::TcpListener::bind(public).map_err(bind)?);
        inner.push(broker_gate::free_loopback_port().map_err(bind)?);
    }
    let inner_v5 = inner.get(1).copied();
    broker::start_with(broker::BrokerConfig {
        listen: inner[0],
        listen_v5: inner_v5,
        auth: Some(auth.clone()),
        prefix: config.prefix.clone(),
        ..Default::default()
    })?;
    for ((public, version), inner) in fronts.into_iter().zip(inner) {
        let gate = Gate {
            auth: Some(Arc::downgrade(&auth)),
            scope: acl::Scope::new(&config.prefix, config.homeassistant.as_deref()),
            version,
            inner,
        };
        let bind = |source| broker::BrokerError::Bind {
            addr: public,
            source,
        };
        broker_gate::listen(
            public,
            Arc::new(gate),
            tls.map(|t| t.mqtt.clone()),
            cancel.clone(),
        )
        .await
        .map_err(bind)?;
    }
    Ok(inner_v5)
}
