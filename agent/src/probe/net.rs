//! The network probes: `httpGet` (one HTTP/1.1 GET on a fresh connection, like the
//! kubelet with keep-alive off; 200–399 passes; HTTPS without certificate checks, as the
//! kubelet does) and `tcpSocket` (a connect). Failures are worded as the kubelet words
//! them, so `punnet describe` reads like `kubectl describe`.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::action::{host_port, HttpRequest, Scheme};
use super::state::ProbeOutcome;

/// The User-Agent the kubelet sends is `kube-probe/<version>`; apps match the prefix.
const USER_AGENT_VALUE: &str = concat!("kube-probe/punnet-", env!("CARGO_PKG_VERSION"));

/// `tcpSocket`: passes when a connection is accepted within `timeout`.
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    match connect(host, port, timeout).await {
        Ok(_) => ProbeOutcome::Success,
        Err(e) => ProbeOutcome::Failure(e),
    }
}

/// `httpGet`: passes on a status from 200 to 399 within `timeout` (connect included).
/// Redirects are not followed (a 3xx passes).
pub async fn http_probe(req: &HttpRequest, timeout: Duration) -> ProbeOutcome {
    match http_status(req, timeout).await {
        Ok(status) if (200..400).contains(&status) => ProbeOutcome::Success,
        Ok(status) => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
        Err(e) => ProbeOutcome::Failure(e),
    }
}

/// The response status of the GET, or the kubelet-style reason there is none.
pub async fn http_status(req: &HttpRequest, timeout: Duration) -> Result<u16, String> {
    let url = req.url();
    let fail = |what: String| format!("Get \"{url}\": {what}");
    match tokio::time::timeout(timeout, get(req)).await {
        Ok(result) => result.map_err(fail),
        Err(_) => Err(fail(format!("timed out after {timeout:?}"))),
    }
}

async fn get(req: &HttpRequest) -> Result<u16, String> {
    // The timeout around the whole request bounds the connect too.
    let stream = connect(&req.host, req.port, Duration::MAX).await?;
    match req.scheme {
        Scheme::Http => send(stream, req).await,
        Scheme::Https => {
            let name = ServerName::try_from(req.host.clone())
                .map_err(|e| format!("invalid host name {:?}: {e}", req.host))?;
            let tls = tokio_rustls::TlsConnector::from(insecure_tls_config()?)
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake: {}", describe(&e)))?;
            send(tls, req).await
        }
    }
}

async fn send<S>(stream: S, req: &HttpRequest) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let mut builder = Request::get(req.path.as_str())
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close");
    let mut has_host = false;
    for (name, value) in &req.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        has_host |= name == HOST;
        // A header the Pod sets replaces the default of the same name.
        if let Some(headers) = builder.headers_mut() {
            if name == USER_AGENT || name == ACCEPT {
                headers.remove(&name);
            }
        }
        builder = builder.header(name, value);
    }
    if !has_host {
        builder = builder.header(HOST, host_port(&req.host, req.port));
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let mut conn = std::pin::pin!(conn);
    let mut response = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        response = &mut response => response,
        // With `Connection: close` the connection may finish in the same poll that
        // delivers the response: the response future then resolves at once.
        result = &mut conn => match result {
            Ok(()) => response.await,
            Err(e) => return Err(e.to_string()),
        },
    };
    response
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Connects to `host:port` (a name is resolved first), worded like Go's dialer.
async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let target = host_port(host, port);
    let dial = |what: String| format!("dial tcp {target}: {what}");
    let attempt = TcpStream::connect((host, port));
    let result = if timeout == Duration::MAX {
        attempt.await
    } else {
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => return Err(dial("i/o timeout".into())),
        }
    };
    result.map_err(|e| dial(format!("connect: {}", describe(&e))))
}

/// An OS error as the C library words it, lower-case (`connection refused`).
fn describe(e: &io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// TLS that accepts any certificate (the kubelet's `InsecureSkipVerify`), still
/// checking that the server holds the key of the certificate it shows.
fn insecure_tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyCertificate(provider.clone()));
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    Arc::new(
                        b.dangerous()
                            .with_custom_certificate_verifier(verifier)
                            .with_no_client_auth(),
                    )
                })
                .map_err(|e| format!("setting up TLS: {e}"))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot server answering every connection with `status`; returns its port and
    /// the requests it saw.
    async fn server(status: u16) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        (port, rx)
    }

    fn request(port: u16, path: &str) -> HttpRequest {
        HttpRequest {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
            headers: vec![("X-Probe".into(), "yes".into())],
        }
    }

    #[tokio::test]
    async fn statuses_from_200_to_399_pass() {
        for (status, passes) in [
            (200, true),
            (302, true),
            (399, true),
            (404, false),
            (500, false),
        ] {
            let (port, mut seen) = server(status).await;
            let outcome = http_probe(&request(port, "/healthz?x=1"), Duration::from_secs(5)).await;
            if passes {
                assert_eq!(outcome, ProbeOutcome::Success, "{status}");
            } else {
                assert_eq!(
                    outcome,
                    ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {status}"))
                );
            }
            let head = seen.recv().await.unwrap();
            assert!(head.starts_with("GET /healthz?x=1 HTTP/1.1\r\n"), "{head}");
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains(&format!("host: 127.0.0.1:{port}")), "{head}");
            assert!(lower.contains("x-probe: yes"), "{head}");
            assert!(lower.contains("user-agent: kube-probe/"), "{head}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_fails_with_connection_refused() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let outcome = http_probe(&request(port, "/"), Duration::from_secs(5)).await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
        assert_eq!(
            tcp_probe("127.0.0.1", port, Duration::from_secs(5)).await,
            ProbeOutcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts (the kernel does) but never replies.
        let outcome = http_probe(&request(port, "/"), Duration::from_millis(200)).await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/\": timed out after 200ms"
            ))
        );
        drop(listener);
    }

    /// A real TLS server with a self-signed certificate (openssl s_server): the probe
    /// passes, as the kubelet's does, without trusting the certificate.
    #[tokio::test]
    async fn https_probes_skip_certificate_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=not-this-host.invalid"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (apt-get install openssl)");
        assert!(status.success());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut server = std::process::Command::new("openssl")
            .args(["s_server", "-www", "-quiet", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut req = request(port, "/");
        req.scheme = Scheme::Https;
        let outcome = http_probe(&req, Duration::from_secs(10)).await;
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(outcome, ProbeOutcome::Success);
    }
}
