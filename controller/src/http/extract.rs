//! Request extractors that answer their failures with a Kubernetes `Status` instead of
//! axum's plain-text rejections: the object a URL names, query parameters, the body
//! (bounded in size) and its parsing from JSON or YAML.

use axum::body::Bytes;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use super::MAX_BODY_BYTES;

/// The namespace and name a URL names (either may be absent: cluster-scoped kinds,
/// collections, lists across all namespaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Target {
    /// The name of a URL that always has one (routes `…/{name}`).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Target, ApiError> {
        let params = match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params,
            Err(RawPathParamsRejection::MissingPathParams(_)) => return Ok(Target::default()),
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "invalid path: {}",
                    e.body_text()
                )))
            }
        };
        let mut target = Target::default();
        for (key, value) in &params {
            match key {
                "namespace" => target.namespace = Some(value.to_string()),
                "name" => target.name = Some(value.to_string()),
                _ => {}
            }
        }
        Ok(target)
    }
}

/// Query parameters; a malformed query is a 400 `Status`.
#[derive(Debug, Clone, Default)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params<T>, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))
    }
}

/// The request body, at most `MAX_BODY_BYTES` (413 beyond).
#[derive(Debug, Clone)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::too_large(format!(
                "the request body is larger than {} MiB; split the manifest into several requests",
                MAX_BODY_BYTES / (1024 * 1024)
            )))
            }
            Err(e) => Err(ApiError::bad_request(format!(
                "cannot read the request body: {}",
                e.body_text()
            ))),
        }
    }
}

/// The media type of the request, lower-case and without parameters (`; charset=…`).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Parses a body as YAML when the media type says so, as JSON otherwise. A JSON
/// document sent as YAML is read as JSON, so clients may send either to apply.
pub fn parse_body(media_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty: send the object as JSON",
        ));
    }
    let is_yaml = media_type.contains("yaml");
    if is_yaml && !trimmed.starts_with('{') {
        let value: Value = serde_norway::from_str(text).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
        })?;
        return match value {
            Value::Object(_) => Ok(value),
            _ => Err(ApiError::bad_request(
                "the request body must be one object, not a list or a scalar",
            )),
        };
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    match value {
        Value::Object(_) => Ok(value),
        _ => Err(ApiError::bad_request(
            "the request body must be one JSON object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_ignores_parameters_and_case() {
        let mut h = HeaderMap::new();
        assert_eq!(content_type(&h), "");
        h.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(content_type(&h), "application/json");
    }

    #[test]
    fn parses_json_and_yaml_bodies() {
        let v = parse_body("application/json", br#"{"a":1}"#).unwrap();
        assert_eq!(v["a"], 1);
        let v = parse_body("application/apply-patch+yaml", b"a: 1\nb: [x]\n").unwrap();
        assert_eq!(v["b"][0], "x");
        let v = parse_body("application/apply-patch+yaml", br#"{"a":2}"#).unwrap();
        assert_eq!(v["a"], 2);
        for (mt, body) in [
            ("application/json", &b""[..]),
            ("application/json", b"[1]"),
            ("application/json", b"{"),
            ("application/apply-patch+yaml", b"a: [\n"),
            ("application/apply-patch+yaml", b"- 1\n"),
            ("application/json", b"\xff"),
        ] {
            let err = parse_body(mt, body).unwrap_err();
            assert_eq!(err.status.code, 400, "{mt} {body:?}");
        }
    }
}
