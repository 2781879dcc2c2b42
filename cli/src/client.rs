//! The HTTP side: one `reqwest` client that knows the controller's base URL and token,
//! sends requests, and turns every failure into an error a person can act on. A non-2xx
//! answer carries a Kubernetes `Status`; its message is what we show, never the raw body.

use std::time::Duration;

use punnet_api::Status;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;
use thiserror::Error;

use crate::config::Config;

pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
/// The field manager apply identifies itself with.
pub const FIELD_MANAGER: &str = "punnet";

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid server URL {server:?}: {message}")]
    BadServer { server: String, message: String },
    #[error("cannot reach the controller at {server}: is punnet-controller running? (set --server or PUNNET_SERVER)")]
    Unreachable { server: String },
    #[error("TLS connection to {server} refused: {hint} ({message})")]
    Tls {
        server: String,
        message: String,
        hint: &'static str,
    },
    #[error("CA file: {0}")]
    Ca(#[from] crate::tls::TlsError),
    /// The server answered with an error, usually a `Status`.
    #[error("Error from server ({reason}): {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{method} {url} failed: {message}")]
    Transport {
        method: Method,
        url: String,
        message: String,
    },
    #[error("{method} {url}: the server sent a body that is not JSON ({message})")]
    NotJson {
        method: Method,
        url: String,
        message: String,
    },
}

impl ClientError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { code: 404, .. })
    }
}

/// Path segments below the server's base URL, e.g. `["api", "v1", "nodes", "pi-1"]`;
/// each segment is escaped when the URL is built.
pub type Segments = Vec<String>;

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    /// Added to `Unauthorized` errors (see `Config::token_hint`).
    token_hint: Option<String>,
}

impl Client {
    pub fn new(config: &Config) -> Result<Client, ClientError> {
        let mut server = config.server.trim().to_string();
        if !server.contains("://") {
            server = format!("https://{server}");
        }
        let bad = |message: String| ClientError::BadServer {
            server: config.server.clone(),
            message,
        };
        let base = Url::parse(&server).map_err(|e| bad(e.to_string()))?;
        match base.scheme() {
            "https" => {}
            "http" if config.allow_plaintext => {}
            "http" => {
                return Err(bad(format!(
                    "plain HTTP sends the token unencrypted; use https://{} (with --ca FILE naming the controller's ca.pem), or pass --allow-plaintext",
                    base.host_str().unwrap_or("HOST")
                )))
            }
            other => return Err(bad(format!("unknown scheme {other:?}; use https://"))),
        }
        if base.cannot_be_a_base() {
            return Err(bad("not a base URL".into()));
        }
        let mut builder = reqwest::Client::builder();
        if base.scheme() == "https" {
            builder =
                builder.use_preconfigured_tls(crate::tls::client_config(config.ca.as_deref())?);
        }
        // No overall timeout: `logs -f` streams for as long as the user wants.
        let http = builder
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("punnet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Client {
            http,
            base,
            token: config.token.clone(),
            token_hint: config.token_hint.clone(),
        })
    }

    /// The server as shown in messages: the URL without a trailing slash.
    pub fn server(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    pub fn url(&self, segments: &[String]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("checked in Client::new that the URL can be a base");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    pub async fn get(
        &self,
        segments: &[String],
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let req = self.request(Method::GET, segments).query(query);
        self.json(Method::GET, segments, req).await
    }

    /// GET that answers `None` for 404.
    pub async fn get_opt(&self, segments: &[String]) -> Result<Option<Value>, ClientError> {
        match self.get(segments, &[]).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn patch(
        &self,
        segments: &[String],
        content_type: &str,
        body: String,
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let req = self
            .request(Method::PATCH, segments)
            .query(query)
            .header(CONTENT_TYPE, content_type)
            .body(body);
        self.json(Method::PATCH, segments, req).await
    }

    /// Creates an object (`POST` of JSON to its collection).
    pub async fn post(&self, segments: &[String], body: &Value) -> Result<Value, ClientError> {
        let req = self
            .request(Method::POST, segments)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.json(Method::POST, segments, req).await
    }

    /// Deletes an object; answers the object the server sent back (as deleted, or
    /// terminating), which names the incarnation to wait for.
    pub async fn delete(
        &self,
        segments: &[String],
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let req = self.request(Method::DELETE, segments).query(query);
        self.json(Method::DELETE, segments, req).await
    }

    /// A successful response whose body the caller reads as it arrives (logs).
    pub async fn stream(
        &self,
        segments: &[String],
        query: &[(&str, String)],
    ) -> Result<Response, ClientError> {
        let req = self.request(Method::GET, segments).query(query);
        self.send(Method::GET, segments, req).await
    }

    fn request(&self, method: Method, segments: &[String]) -> RequestBuilder {
        let req = self.http.request(method, self.url(segments));
        match &self.token {
            Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    async fn json(
        &self,
        method: Method,
        segments: &[String],
        req: RequestBuilder,
    ) -> Result<Value, ClientError> {
        let resp = self.send(method.clone(), segments, req).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.transport(method.clone(), segments, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::NotJson {
            method,
            url: self.url(segments).to_string(),
            message: e.to_string(),
        })
    }

    async fn send(
        &self,
        method: Method,
        segments: &[String],
        req: RequestBuilder,
    ) -> Result<Response, ClientError> {
        let resp = req.send().await.map_err(|e| {
            let chain = error_chain(&e);
            if let Some(hint) = punnet_api::tls::explain(&chain) {
                ClientError::Tls {
                    server: self.server(),
                    message: chain,
                    hint,
                }
            } else if e.is_connect() {
                ClientError::Unreachable {
                    server: self.server(),
                }
            } else {
                self.transport(method.clone(), segments, &e)
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let mut err = api_error(status, &body, &method, self.url(segments).path());
        if let ClientError::Api {
            code: 401, message, ..
        } = &mut err
        {
            let hint = match (&self.token, &self.token_hint) {
                (_, Some(hint)) => hint.as_str(),
                (None, None) => {
                    "no token is configured: pass --token, set PUNNET_TOKEN, or put `token:` in \
                     ~/.config/punnet/config.yaml"
                }
                (Some(_), None) => "",
            };
            if !hint.is_empty() {
                message.push_str(&format!(" ({hint})"));
            }
        }
        Err(err)
    }

    fn transport(&self, method: Method, segments: &[String], e: &reqwest::Error) -> ClientError {
        ClientError::Transport {
            method,
            url: self.url(segments).to_string(),
            message: error_chain(e),
        }
    }
}

/// The error for a non-2xx answer: the `Status` the contract promises, or for anything
/// else (a proxy's page, a crash) a message built from the HTTP status that never dumps
/// a JSON or HTML body on the user.
pub fn api_error(status: StatusCode, body: &[u8], method: &Method, path: &str) -> ClientError {
    let code = status.as_u16();
    if let Ok(s) = serde_json::from_slice::<Status>(body) {
        if s.kind == "Status" && !s.message.is_empty() {
            let reason = if s.reason.is_empty() {
                default_reason(code).to_string()
            } else {
                s.reason
            };
            return ClientError::Api {
                code,
                reason,
                message: s.message,
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let looks_plain = !text.is_empty()
        && text.len() <= 300
        && !text.starts_with(['{', '[', '<'])
        && !text.contains('\n');
    let message = if looks_plain {
        text.to_string()
    } else {
        format!(
            "the server responded {} {} to {method} {path}",
            code,
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_string()
    };
    ClientError::Api {
        code,
        reason: default_reason(code).to_string(),
        message,
    }
}

/// Kubernetes' reason for a status code, for answers that carry no `Status`.
fn default_reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// reqwest's own message is terse ("error sending request"); the cause is further down.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_become_the_servers_message() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"x\" not found","reason":"NotFound","code":404}"#;
        let e = api_error(
            StatusCode::NOT_FOUND,
            body,
            &Method::GET,
            "/api/v1/namespaces/default/pods/x",
        );
        assert_eq!(
            e.to_string(),
            r#"Error from server (NotFound): pods "x" not found"#
        );
        assert!(e.is_not_found());
    }

    #[test]
    fn other_bodies_are_never_dumped() {
        let e = api_error(
            StatusCode::BAD_GATEWAY,
            b"{\"weird\":true}",
            &Method::GET,
            "/api/v1/pods",
        );
        assert_eq!(
            e.to_string(),
            "Error from server (InternalError): the server responded 502 Bad Gateway to GET /api/v1/pods"
        );
        let e = api_error(
            StatusCode::UNAUTHORIZED,
            b"missing bearer token\n",
            &Method::GET,
            "/",
        );
        assert_eq!(
            e.to_string(),
            "Error from server (Unauthorized): missing bearer token"
        );
    }

    #[test]
    fn urls_escape_segments_and_keep_a_base_path() {
        let mut config = Config {
            server: "127.0.0.1:6443".into(),
            token: None,
            token_hint: None,
            ca: None,
            allow_plaintext: true,
        };
        let c = Client::new(&config).unwrap();
        let segs: Vec<String> = ["api", "v1", "nodes", "a b"].map(String::from).into();
        assert_eq!(
            c.url(&segs).as_str(),
            "https://127.0.0.1:6443/api/v1/nodes/a%20b"
        );
        config.server = "http://gw/punnet/".into();
        let c = Client::new(&config).unwrap();
        assert_eq!(c.url(&segs[..2]).as_str(), "http://gw/punnet/api/v1");
        config.allow_plaintext = false;
        let err = Client::new(&config).unwrap_err().to_string();
        assert!(err.contains("--allow-plaintext"), "{err}");
        config.server = "ftp://gw".into();
        assert!(Client::new(&config).is_err());
        config.server = "https://gw".into();
        config.ca = Some("/nonexistent/ca.pem".into());
        let err = Client::new(&config).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
