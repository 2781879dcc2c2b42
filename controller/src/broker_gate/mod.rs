//! The embedded broker's gate: every client connection to the embedded broker passes
//! through here (TLS terminated first, when on) on its way to rumqttd on a loopback
//! port. rumqttd checks logins but has no per-topic authorization; the gate learns who
//! a connection is from its CONNECT and closes it at the first PUBLISH, SUBSCRIBE or
//! last will outside that login's topics (`acl`), so one board cannot read another's
//! desired state (its Secrets) or speak for it, exactly as the Mosquitto ACL file
//! confines it.
//!
//! Why not rumqttd's own TLS: rumqttd 0.20 runs each TLS handshake inside its accept
//! loop with no time limit (one client that connects and stays silent stops every
//! later connection) and re-reads the certificate files on every accept; it also brings
//! a second rustls (0.22). Here each handshake runs on its own task with a deadline, on
//! the workspace's rustls 0.23 with the ring provider. The cost is one loopback hop per
//! client; rumqttd's loopback listener is reachable from this host only.

pub mod inspect;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use punnet_api::topics::MAX_PACKET_SIZE;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::acl::{self, Grants};
use crate::identity::BrokerAuth;
use crate::tls::listener::HANDSHAKE_TIMEOUT;
pub use inspect::Version;
use inspect::{Inspector, Step};

/// A client must send its CONNECT this soon (rumqttd's own limit behind the gate), and
/// rumqttd must answer it this soon; clients (rumqttc) give up after 5 s as well.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections at most between their CONNECT and rumqttd's answer. rumqttd accepts on
/// one thread; when a whole site's boards come back at once, unbounded handshakes piled
/// up as half-open loopback connections (10,000 in SYN-SENT at 5,000 boards) until the
/// process ran out of files. Waiting here costs one socket, the client's.
static HANDSHAKES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(64);

/// Why connections were closed by the gate, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Unknown login, wrong password, or a token that may not use the broker.
    Login,
    /// A client id reserved for another node or the controller.
    ClientId,
    /// A PUBLISH or last will outside the login's topics.
    Publish,
    /// A SUBSCRIBE outside the login's topics.
    Subscribe,
    /// Not MQTT, or not in order.
    Malformed,
}

impl Denial {
    const ALL: [Denial; 5] = [
        Denial::Login,
        Denial::ClientId,
        Denial::Publish,
        Denial::Subscribe,
        Denial::Malformed,
    ];

    fn label(self) -> &'static str {
        match self {
            Denial::Login => "login",
            Denial::ClientId => "client_id",
            Denial::Publish => "publish",
            Denial::Subscribe => "subscribe",
            Denial::Malformed => "malformed",
        }
    }
}

static DENIED: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// Connections closed for `why` since start.
pub fn denied(why: Denial) -> u64 {
    DENIED[why as usize].load(Ordering::Relaxed)
}

/// Appends the gate's counters to a `/metrics` exposition.
pub fn render_metrics(out: &mut String) {
    let name = "punnet_mqtt_denied_total";
    let _ = writeln!(
        out,
        "# HELP {name} Embedded broker connections closed by the gate: refused login or client id, or a publish/subscribe outside the login's topics."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for why in Denial::ALL {
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", why.label(), denied(why));
    }
}

/// A free loopback port for one of rumqttd's listeners behind the gate (rumqttd cannot
/// report the port of a listener bound to port 0).
pub fn free_loopback_port() -> std::io::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    probe.local_addr()
}

/// One public listener's gate.
pub struct Gate {
    /// Weak for the same reason as rumqttd's auth handler (see `broker`): nothing here
    /// may keep the database open after the controller's `run` returned. `None`: a
    /// broker without logins (tests only), every client may do anything.
    pub auth: Option<Weak<BrokerAuth>>,
    pub scope: acl::Scope,
    pub version: Version,
    /// rumqttd's loopback listener for this version.
    pub inner: SocketAddr,
}

/// Accepts on `public` (TLS when `tls` is given) and serves each connection through
/// `gate` until `cancel`. Binding happens before this returns, so an address in use is
/// reported to the caller.
pub async fn listen(
    public: SocketAddr,
    gate: Arc<Gate>,
    tls: Option<Arc<rustls::ServerConfig>>,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(public)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let tls_on = tls.is_some();
    let acceptor = tls.map(TlsAcceptor::from);
    // On the I/O runtime, so that a busy controller cannot stall the fleet's keepalives.
    crate::io_runtime::handle()?.spawn(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %local, error = %e, "MQTT listener: cannot register the socket; the embedded broker takes no connections");
                return;
            }
        };
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "MQTT listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (gate, acceptor) = (gate.clone(), acceptor.clone());
            tokio::spawn(async move {
                let served = match acceptor {
                    None => gate.serve(stream).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => gate.serve(tls).await,
                            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                            Err(_) => Err("TLS handshake timed out".into()),
                        }
                    }
                };
                if let Err(reason) = served {
                    tracing::debug!(%peer, "MQTT connection ended: {reason}");
                }
            });
        }
    });
    tracing::info!(addr = %local, tls = tls_on, "embedded MQTT broker listening");
    Ok(local)
}

impl Gate {
    /// Serves one client connection to its end.
    pub async fn serve<S>(&self, client: S) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut from_client, mut to_client) = tokio::io::split(client);
        let mut buf = BytesMut::with_capacity(1024);
        let mut inspector = Inspector::new(self.version, MAX_PACKET_SIZE);
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut from_client, &mut buf))
            .await
            .map_err(|_| "no CONNECT in time".to_string())??;
        let login = match inspector.inspect(&connect) {
            Step::Connect(login) => login,
            Step::Forward => return Err("no CONNECT".into()),
            Step::Refuse(why) => return Err(deny(Denial::Malformed, "?", &why)),
        };
        match self.admit(&login) {
            Ok(grants) => inspector.admit(grants),
            Err((why, reason)) => {
                // Counted before the client hears it, so whoever sees the refusal sees
                // it counted.
                let denied = deny(why, &login.username, &reason);
                let _ = to_client
                    .write_all(inspect::refusal_connack(self.version))
                    .await;
                let _ = to_client.shutdown().await;
                return Err(denied);
            }
        }
        let handshake = async {
            let _turn = HANDSHAKES
                .acquire()
                .await
                .map_err(|e| format!("gate closed: {e}"))?;
            let broker = TcpStream::connect(self.inner)
                .await
                .map_err(|e| format!("cannot reach the broker on {}: {e}", self.inner))?;
            let _ = broker.set_nodelay(true);
            let (from_broker, mut to_broker) = broker.into_split();
            to_broker
                .write_all(&connect)
                .await
                .map_err(|e| e.to_string())?;
            // Its CONNACK is on the way: the next connection may go.
            from_broker.readable().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((from_broker, to_broker))
        };
        let (from_broker, mut to_broker) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| "the broker did not answer the CONNECT in time (busy)".to_string())??;
        let who = login.username;
        // Either side ending ends both: a board that drops its connection must look
        // dropped to rumqttd at once, so that its last will goes out.
        let downstream = async {
            // Small: one per connection, and a board's traffic is a few KiB at a time.
            let mut from_broker = BufReader::with_capacity(4096, from_broker);
            tokio::io::copy_buf(&mut from_broker, &mut to_client)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let upstream = async {
            loop {
                let frame = read_frame(&mut from_client, &mut buf).await?;
                match inspector.inspect(&frame) {
                    Step::Forward => to_broker
                        .write_all(&frame)
                        .await
                        .map_err(|e| e.to_string())?,
                    Step::Refuse(why) => {
                        let kind = if why.contains("subscribe") {
                            Denial::Subscribe
                        } else if why.contains("publish") {
                            Denial::Publish
                        } else {
                            Denial::Malformed
                        };
                        return Err(deny(kind, &who, &why));
                    }
                    Step::Connect(_) => {
                        return Err(deny(Denial::Malformed, &who, "a second CONNECT"))
                    }
                }
            }
        };
        tokio::select! {
            r = downstream => r,
            r = upstream => r,
        }
    }

    /// Who the login is and what it may do, or why it is refused.
    fn admit(&self, login: &inspect::Login) -> Result<Grants, (Denial, String)> {
        let principal = match &self.auth {
            None => crate::identity::Principal::Controller,
            Some(auth) => auth
                .upgrade()
                .ok_or((Denial::Login, "the controller has stopped".to_string()))?
                .check(&login.username, &login.password)
                .map_err(|why| (Denial::Login, why))?,
        };
        if let Some(why) = acl::client_id_refusal(&principal, &login.client_id) {
            return Err((Denial::ClientId, why));
        }
        let grants = Grants::for_login(&principal, &self.scope, &login.client_id);
        if let Some(topic) = &login.will_topic {
            if !grants.may_publish(topic) {
                return Err((
                    Denial::Publish,
                    format!("may not leave a last will on {topic}"),
                ));
            }
        }
        Ok(grants)
    }
}

fn deny(why: Denial, who: &str, detail: &str) -> String {
    DENIED[why as usize].fetch_add(1, Ordering::Relaxed);
    tracing::warn!(login = %who, "MQTT connection closed: {detail}");
    detail.to_string()
}

/// The next whole packet from `from`, reading more as needed.
async fn read_frame<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut BytesMut,
) -> Result<Bytes, String> {
    loop {
        if let Some(frame) = inspect::next_frame(buf, MAX_PACKET_SIZE)? {
            return Ok(frame);
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        if from.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
    }
}
