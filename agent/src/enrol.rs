//! The agent's identity: its MQTT login kept in `<data-dir>/credentials.json` (mode
//! 0600) and the controller's public key in `<data-dir>/controller.pub` (64 hex
//! characters). With no identity yet and a bootstrap token, the agent enrols: it makes
//! its ed25519 key and an MQTT password, logs in to the broker as the token
//! (`punnet-token-<id>`), sends the password's `$7$` hash and its public key on
//! `<prefix>/enrol/<client-id>/request` with a proof that it holds the token, and waits
//! for `…/reply` (see `punnet_api::enrol`). Until the answer comes, the password and
//! its hash wait in `<data-dir>/enrolment-pending.json`, so a restarted board asks again
//! with the same request (answered without spending another use of the token).
//!
//! Retry policy: a refusal by the controller (unknown, expired or used-up token, a taken
//! node name) or by the broker (Mosquitto's "bad username or password") ends the agent
//! with that reason: retrying cannot help, a new token can. A broker that cannot be
//! reached, closes the connection (rumqttd refuses a bad login that way) or a controller
//! that does not answer within 30 s is retried with back-off up to a minute, forever, so
//! a board that boots before its network or its controller enrols once they are there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use punnet_api::enrol::{self, EnrolReply, EnrolRequest, TokenString};
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::AgentConfig;

pub const CREDENTIALS_FILE: &str = "credentials.json";
pub const CONTROLLER_KEY_FILE: &str = "controller.pub";
/// The password (and its hash) an enrolment in progress asks with, kept until it is
/// answered: a board restarted before the answer (power, a watchdog) asks again with
/// the same request, which the controller answers without spending another use of the
/// token, so even a single-use token's board gets in.
pub const PENDING_FILE: &str = "enrolment-pending.json";
/// How long one enrolment attempt waits for the controller's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// A broker login. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for MqttLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MqttLogin {{ username: {:?}, .. }}", self.username)
    }
}

/// What enrolment leaves in the data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub node: String,
    pub mqtt: MqttLogin,
}

#[derive(Debug, Error)]
pub enum EnrolError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is unreadable ({reason}); delete it and enrol again with --token")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the identity in {path} is node {stored:?}, but this agent is configured as {configured:?}; use --name {stored}, or delete the data dir's credentials.json and enrol again")]
    NameMismatch {
        path: PathBuf,
        stored: String,
        configured: String,
    },
    #[error("--token: this is not a Punnet token (expected <12 hex>.<secret> as printed by `punnet token create`)")]
    BadToken,
    #[error("enrolment of node {node} refused by the controller: {reason}")]
    Refused { node: String, reason: String },
    #[error("enrolment of node {node}: the broker refused the token's login ({code:?}): the token is unknown, expired or used up (on Mosquitto: is the controller's mosquitto-config current?); make a new one with `punnet token create`")]
    BrokerRefused {
        node: String,
        code: ConnectReturnCode,
    },
    #[error("node key: {0}")]
    Key(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnrolError + '_ {
    move |source| EnrolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Credentials {
    pub fn load(dir: &Path) -> Result<Option<Credentials>, EnrolError> {
        let path = dir.join(CREDENTIALS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| EnrolError::Corrupt {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Writes the credentials (mode 0600, atomically) and, when given, the controller's
    /// public key.
    pub fn save(&self, dir: &Path, controller_key: Option<&[u8; 32]>) -> Result<(), EnrolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let json = serde_json::to_vec_pretty(self).expect("credentials serialise");
        write_private(&dir.join(CREDENTIALS_FILE), &json)?;
        if let Some(key) = controller_key {
            write_private(
                &dir.join(CONTROLLER_KEY_FILE),
                format!("{}\n", hex::encode(key)).as_bytes(),
            )?;
        }
        Ok(())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EnrolError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// An enrolled board needs its bootstrap token no more: out of the config file with it.
fn forget_token(config: &AgentConfig) {
    let Some(path) = &config.token_file else {
        return;
    };
    match crate::token_file::forget(path) {
        Ok(true) => tracing::info!("enrolled: the bootstrap token is removed from {}", path.display()),
        Ok(false) => {}
        Err(e) => tracing::warn!("enrolled, but the bootstrap token could not be removed from {}: {e}; delete its `token:` line by hand (it can enrol other boards while it has uses left)", path.display()),
    }
}

/// Loads this node's identity into `config.mqtt_login`, enrolling first when there is
/// none and a token is configured. Without either the agent connects anonymously
/// (brokers that allow it; the controller's embedded broker does not).
pub async fn ensure_identity(config: &mut AgentConfig) -> Result<(), EnrolError> {
    if let Some(creds) = Credentials::load(&config.data_dir)? {
        if creds.node != config.node_name {
            return Err(EnrolError::NameMismatch {
                path: config.data_dir.join(CREDENTIALS_FILE),
                stored: creds.node,
                configured: config.node_name.clone(),
            });
        }
        config.mqtt_login = Some(creds.mqtt);
        forget_token(config);
        return Ok(());
    }
    let Some(token) = config.token.as_deref() else {
        tracing::warn!("no identity in {} and no --token: connecting without a login, which only a broker that allows anonymous clients accepts", config.data_dir.display());
        return Ok(());
    };
    let token = TokenString::parse(token).ok_or(EnrolError::BadToken)?;
    let key = crate::identity::NodeKey::load_or_create(&config.data_dir)
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    let (password, hash) = pending_login(&config.data_dir, &token)?;
    let request = EnrolRequest::new(&token, &config.node_name, &key.public_key(), hash);
    let mut wait = Duration::from_secs(1);
    loop {
        match exchange(config, &token, &request).await {
            Ok(reply) => {
                let controller_key = accept(&config.node_name, reply)?;
                let creds = Credentials {
                    node: config.node_name.clone(),
                    mqtt: MqttLogin {
                        username: config.node_name.clone(),
                        password,
                    },
                };
                creds.save(&config.data_dir, Some(&controller_key))?;
                let _ = std::fs::remove_file(config.data_dir.join(PENDING_FILE));
                tracing::info!(node = %config.node_name, token = %token.id, "enrolled; credentials kept in {}", config.data_dir.display());
                config.mqtt_login = Some(creds.mqtt);
                forget_token(config);
                return Ok(());
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(why)) => {
                tracing::warn!(node = %config.node_name, "enrolment not done yet: {why}; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

/// What an enrolment in progress asks with (see [`PENDING_FILE`]).
#[derive(Serialize, Deserialize)]
struct Pending {
    token_id: String,
    password: String,
    hash: String,
}

/// The password and its hash to enrol with `token`: those of an enrolment with the same
/// token that was not answered, or new ones, kept (mode 0600) until it is.
fn pending_login(dir: &Path, token: &TokenString) -> Result<(String, String), EnrolError> {
    let path = dir.join(PENDING_FILE);
    let kept = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Pending>(&bytes).ok())
        .filter(|p| p.token_id == token.id && enrol::mosquitto_verify(&p.hash, &p.password));
    if let Some(p) = kept {
        return Ok((p.password, p.hash));
    }
    let password = hex::encode(rand::random::<[u8; 24]>());
    let hash = enrol::mosquitto_hash(&password, rand::random());
    let pending = Pending {
        token_id: token.id.clone(),
        password,
        hash,
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_private(
        &path,
        &serde_json::to_vec(&pending).expect("a pending enrolment serialises"),
    )?;
    Ok((pending.password, pending.hash))
}

/// The controller's public key from an accepting reply, or the refusal as an error.
pub fn accept(node: &str, reply: EnrolReply) -> Result<[u8; 32], EnrolError> {
    if let Some(reason) = reply.refused {
        return Err(EnrolError::Refused {
            node: node.to_string(),
            reason,
        });
    }
    let refused = |reason: &str| EnrolError::Refused {
        node: node.to_string(),
        reason: reason.to_string(),
    };
    if reply.node.as_deref() != Some(node) {
        return Err(refused("the controller answered for another node name"));
    }
    let key = reply
        .controller_public_key
        .and_then(|k| hex::decode(k).ok())
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| refused("the answer carries no usable controller key"))?;
    Ok(key)
}

enum Attempt {
    Fatal(EnrolError),
    Retry(String),
}

/// One enrolment attempt on its own short-lived connection.
async fn exchange(
    config: &AgentConfig,
    token: &TokenString,
    request: &EnrolRequest,
) -> Result<EnrolReply, Attempt> {
    let (host, port) = config
        .broker_address()
        .map_err(|e| Attempt::Retry(e.to_string()))?;
    let client_id = format!("punnet-enrol-{}", hex::encode(rand::random::<[u8; 8]>()));
    let mut options = MqttOptions::new(client_id.clone(), host, port);
    options
        .set_clean_session(true)
        .set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(64 * 1024, 64 * 1024)
        .set_credentials(token.mqtt_username(), token.secret.clone());
    // The same TLS as the link: the token crosses this connection.
    crate::tls::apply(&mut options, config).map_err(|e| Attempt::Retry(e.to_string()))?;
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let reply_topic = enrol::reply_topic(&config.prefix, &client_id);
    let request_topic = enrol::request_topic(&config.prefix, &client_id);
    let body = serde_json::to_vec(request).expect("a request serialises");
    let node = config.node_name.clone();
    let attempt = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .try_subscribe(reply_topic.clone(), QoS::AtLeastOnce)
                        .map_err(|e| Attempt::Retry(e.to_string()))?;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    client
                        .try_publish(request_topic.clone(), QoS::AtLeastOnce, false, body.clone())
                        .map_err(|e| Attempt::Retry(e.to_string()))?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == reply_topic => {
                    return serde_json::from_slice::<EnrolReply>(&p.payload).map_err(|e| {
                        Attempt::Retry(format!("unreadable answer from the controller: {e}"))
                    });
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => {
                    return Err(Attempt::Fatal(EnrolError::BrokerRefused {
                        node: node.clone(),
                        code,
                    }))
                }
                Err(e) => {
                    return Err(Attempt::Retry(format!(
                        "broker {}: {e} (if the broker is up, it may have refused the token's login: unknown, expired or used up; see `punnet get tokens`)",
                        config.broker
                    )))
                }
            }
        }
    };
    let result = match tokio::time::timeout(ANSWER_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Attempt::Retry(format!(
            "no answer from the controller within {ANSWER_TIMEOUT:?} (is it running and connected to {}?)",
            config.broker
        ))),
    };
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Credentials::load(dir.path()).unwrap(), None);
        let c = Credentials {
            node: "pi-1".into(),
            mqtt: MqttLogin {
                username: "pi-1".into(),
                password: "pw".into(),
            },
        };
        c.save(dir.path(), Some(&[0xab; 32])).unwrap();
        assert_eq!(Credentials::load(dir.path()).unwrap(), Some(c.clone()));
        let mode = std::fs::metadata(dir.path().join(CREDENTIALS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = std::fs::read_to_string(dir.path().join(CONTROLLER_KEY_FILE)).unwrap();
        assert_eq!(key.trim(), "ab".repeat(32));
        assert!(!format!("{:?}", c.mqtt).contains("pw"));
    }

    #[test]
    fn an_unanswered_enrolment_asks_again_with_the_same_password() {
        let dir = tempfile::tempdir().unwrap();
        let token = TokenString::parse(&format!("0123456789ab.{}", "s".repeat(48))).unwrap();
        let first = pending_login(dir.path(), &token).unwrap();
        assert!(enrol::mosquitto_verify(&first.1, &first.0));
        assert_eq!(pending_login(dir.path(), &token).unwrap(), first);
        // Another token: a new password.
        let other = TokenString::parse(&format!("ba9876543210.{}", "s".repeat(48))).unwrap();
        assert_ne!(pending_login(dir.path(), &other).unwrap(), first);
    }

    #[test]
    fn refusals_and_odd_answers_are_errors() {
        let err = accept("pi-1", EnrolReply::refused("token 1 is used up")).unwrap_err();
        assert!(err.to_string().contains("used up"), "{err}");
        assert_eq!(
            accept("pi-1", EnrolReply::accepted("pi-1", &[1; 32])).unwrap(),
            [1; 32]
        );
        assert!(accept("pi-1", EnrolReply::accepted("pi-2", &[1; 32])).is_err());
    }

    #[tokio::test]
    async fn a_name_mismatch_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let c = Credentials {
            node: "pi-1".into(),
            mqtt: MqttLogin {
                username: "pi-1".into(),
                password: "pw".into(),
            },
        };
        c.save(dir.path(), None).unwrap();
        let mut config = AgentConfig::new("pi-2");
        config.data_dir = dir.path().to_path_buf();
        let err = ensure_identity(&mut config).await.unwrap_err();
        assert!(matches!(err, EnrolError::NameMismatch { .. }), "{err}");
        config.node_name = "pi-1".into();
        ensure_identity(&mut config).await.unwrap();
        assert_eq!(config.mqtt_login.unwrap().username, "pi-1");
    }
}
