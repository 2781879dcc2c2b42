//! `run`: starts every part of the controller — store, embedded broker, node sync,
//! Deployment controller, scheduler, REST API and optionally a local agent — and stops
//! them when `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ControllerConfig;
use crate::http::{self, ApiState};
use crate::logproxy::LogProxy;
use crate::mqtt::{MqttError, MqttSettings};
use crate::store::{Store, StoreError};
use crate::{auth_token, broker, deployment, nodesync, scheduling};

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
}

pub async fn run(
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ControllerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ControllerError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = Arc::new(Store::open(&config.data_dir.join("db"))?);
    info!(
        revision = store.revision(),
        dir = %config.data_dir.display(),
        "store opened"
    );
    let token = auth_token::load_or_create(&config.data_dir)?;

    let mqtt = match &config.broker {
        Some(url) => {
            info!(%url, "using external MQTT broker");
            MqttSettings::from_url(url)?
        }
        None => {
            broker::start(config.mqtt)?;
            info!(addr = %config.mqtt, "embedded MQTT broker listening");
            MqttSettings::from_url(&config.broker_url())?
        }
    };
    let mqtt = MqttSettings {
        prefix: config.prefix.clone(),
        ..mqtt
    };

    let listener =
        TcpListener::bind(config.http)
            .await
            .map_err(|source| ControllerError::Listen {
                addr: config.http.to_string(),
                source,
            })?;
    let http_addr = listener.local_addr().map_err(ControllerError::Serve)?;
    let client_config = auth_token::write_client_config(&config.data_dir, http_addr, &token)?;
    info!(addr = %http_addr, client_config = %client_config.display(), "API listening");

    let cancel = CancellationToken::new();
    let logs = Arc::new(LogProxy::default());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(nodesync::run(
        store.clone(),
        mqtt,
        config.node_grace,
        logs.clone(),
        cancel.clone(),
    ));
    tasks.spawn(deployment::run(store.clone(), cancel.clone()));
    tasks.spawn(scheduling::run(store.clone(), cancel.clone()));
    let state = ApiState::new(
        store.clone(),
        Arc::new(http::auth::Tokens::new(&token)),
        logs,
    );
    let api_cancel = cancel.clone();
    tasks.spawn(async move {
        if let Err(e) = http::serve(listener, state, api_cancel.cancelled_owned()).await {
            error!(error = %e, "API server failed");
        }
    });
    if let Some(agent) = config.agent.clone() {
        info!(node = %agent.node_name, "starting local agent");
        let agent_cancel = cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = punnet_agent::run(agent, agent_cancel.cancelled_owned()).await {
                error!(error = %e, "local agent failed");
            }
        });
    }

    tokio::select! {
        _ = shutdown => info!("shutting down"),
        Some(_) = tasks.join_next() => warn!("a part of the controller stopped; shutting down"),
    }
    cancel.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("parts still running after {SHUTDOWN_GRACE:?}; terminating now");
    }
    store.sync().await?;
    Ok(())
}
