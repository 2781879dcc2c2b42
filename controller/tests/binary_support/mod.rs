//! The real `punnet-controller` binary as a child process on free loopback ports, for
//! tests that kill it (`kill -9`) or run its subcommands, plus a blocking API client.
//! The API is HTTPS, trusted through the CA the controller made in its data directory,
//! unless the test passes `--allow-plaintext`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_punnet-controller");

/// A loopback port below the ephemeral range (see `loops_support::free_port`: a port
/// bound again after a restart must not be some client's local port meanwhile).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(6151);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(7_919)) % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running controller; killed (SIGKILL) on drop.
pub struct Controller {
    pub child: Child,
    pub api: Api,
}

impl Controller {
    /// Starts the binary on `data_dir` and waits until its API answers.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Controller {
        let http = format!("127.0.0.1:{}", free_port());
        let mqtt = format!("127.0.0.1:{}", free_port());
        let child = Command::new(BIN)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http", &http, "--mqtt", &mqtt])
            .args(extra)
            .env("RUST_LOG", "warn,rumqttd=off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("punnet-controller starts");
        let plaintext = extra.contains(&"--allow-plaintext");
        let mut c = Controller {
            child,
            api: Api::new(format!("http://{http}"), String::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.child.try_wait().unwrap() {
                panic!("punnet-controller exited at start: {status}");
            }
            let ca = data_dir.join("ca.pem");
            if !plaintext {
                // The CA appears before the API listens; until then there is nothing to trust.
                if !ca.exists() {
                    assert!(Instant::now() < deadline, "controller never made its CA");
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                c.api = Api::with_ca(format!("https://{http}"), String::new(), Some(&ca));
            }
            let healthy = c
                .api
                .http
                .get(format!("{}/healthz", c.api.base))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                break;
            }
            assert!(Instant::now() < deadline, "controller never became healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        c.api.token = std::fs::read_to_string(data_dir.join("admin.token"))
            .expect("the controller wrote its admin token")
            .trim()
            .to_string();
        c
    }

    /// SIGKILL, as a power cut would end it (without the power cut).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::blocking::Client,
}

impl Api {
    pub fn new(base: String, token: String) -> Api {
        Api::with_ca(base, token, None)
    }

    /// A client trusting `ca` (the controller's `ca.pem`) for an https:// base.
    pub fn with_ca(base: String, token: String, ca: Option<&Path>) -> Api {
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).unwrap();
            let tls = punnet_api::tls::client_config(&pem, "ca.pem").unwrap();
            builder = builder.use_preconfigured_tls(tls);
        }
        Api {
            base,
            token,
            http: builder.build().unwrap(),
        }
    }

    /// `(status, body)`; `Err` when there was no answer (connection refused or cut).
    pub fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send()?;
        let code = resp.status().as_u16();
        let text = resp.text()?;
        Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None, None).unwrap()
    }

    /// Server-side apply of a JSON object to its URL.
    pub fn apply(&self, path: &str, object: &Value) -> Result<(u16, Value), reqwest::Error> {
        self.send(
            reqwest::Method::PATCH,
            &format!("{path}?fieldManager=test"),
            Some("application/apply-patch+yaml"),
            Some(object.to_string()),
        )
    }
}

/// Runs the binary with `args` (a subcommand) to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn,rumqttd=off")
        .output()
        .expect("punnet-controller runs")
}

pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
