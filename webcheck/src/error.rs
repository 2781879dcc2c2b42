//! What can go wrong when driving the browser; each message says what to do or shows
//! what the page showed instead.

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WebcheckError {
    #[error("cannot find a free loopback port for chromedriver: {0}")]
    Port(#[source] std::io::Error),
    #[error("cannot create the browser's profile directory: {0}")]
    Profile(#[source] std::io::Error),
    #[error("cannot start {program}: {source} (install the Debian packages chromium and chromium-driver)")]
    SpawnDriver {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chromedriver exited ({status}) before listening; its log:\n{log}")]
    DriverExited { status: String, log: String },
    #[error("chromedriver did not listen within {after:?}; its log:\n{log}")]
    DriverTimeout { after: Duration, log: String },
    #[error("cannot start a Chromium session: {message}; chromedriver's log:\n{log}")]
    Session { message: String, log: String },
    #[error("cannot trust the CA {ca} in the browser profile: {message}")]
    TrustCa { ca: String, message: String },
    #[error("browser command failed: {what}: {message}")]
    Command { what: String, message: String },
    #[error("waited {after:?} for {what} on {url}; the page shows:\n{text}")]
    Timeout {
        what: String,
        after: Duration,
        url: String,
        text: String,
    },
    #[error("no element matches {selector:?} on {url}; the page shows:\n{text}")]
    NoElement {
        selector: String,
        url: String,
        text: String,
    },
    #[error("cannot save screenshot {path}: {message}")]
    Screenshot { path: String, message: String },
}
