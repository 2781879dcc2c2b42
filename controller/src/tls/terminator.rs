//! MQTT over TLS for the embedded broker: a TLS terminator on the public MQTT address
//! that forwards each connection's plaintext to rumqttd listening on loopback only.
//!
//! Why not rumqttd's own TLS: rumqttd 0.20 runs each TLS handshake inside its accept
//! loop with no time limit (one client that connects and stays silent stops every
//! later connection) and re-reads the certificate files on every accept; it also brings
//! a second rustls (0.22). Here each handshake runs on its own task with a deadline, on
//! the workspace's rustls 0.23 with the ring provider. The cost is one loopback hop per
//! client. rumqttd's loopback listener is reachable from this host only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::listener::HANDSHAKE_TIMEOUT;

/// A free loopback port for rumqttd's plaintext listener (rumqttd cannot report the
/// port of a listener bound to port 0).
pub fn free_loopback_port() -> std::io::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    probe.local_addr()
}

/// Accepts TLS on `public` and forwards to `inner` until `cancel`. Binding happens
/// before this returns, so an address in use is reported to the caller.
pub async fn start(
    public: SocketAddr,
    inner: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(public).await?;
    let local = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "MQTT TLS listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Err(reason) = forward(acceptor, stream, inner).await {
                    tracing::debug!(%peer, "MQTT TLS connection ended: {reason}");
                }
            });
        }
    });
    tracing::info!(addr = %local, "embedded MQTT broker serving TLS");
    Ok(local)
}

async fn forward(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    inner: SocketAddr,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Err(_) => return Err("TLS handshake timed out".into()),
    };
    let mut broker = TcpStream::connect(inner)
        .await
        .map_err(|e| format!("cannot reach the broker on {inner}: {e}"))?;
    let _ = broker.set_nodelay(true);
    // Either side closing closes the other: a board that drops its connection must look
    // dropped to rumqttd at once, so that its last will goes out.
    tokio::io::copy_bidirectional(&mut tls, &mut broker)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
