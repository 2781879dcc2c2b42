//! Errors as the Kubernetes API reports them: a `Status` object with a machine-readable
//! `reason` and the HTTP code, built from the store's, the manifest decoder's and the
//! validator's errors so that every handler can simply use `?`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use punnet_api::manifest::ManifestError;
use punnet_api::selector::SelectorError;
use punnet_api::validate::ValidationError;
use punnet_api::{Deployment, Node, Pod, Resource, Status, StatusCause, StatusDetails};
use thiserror::Error;

use crate::store::StoreError;

/// A failed request, answered with its `Status`.
#[derive(Debug, Clone, Error)]
#[error("{} {}: {}", status.code, status.reason, status.message)]
pub struct ApiError {
    /// Boxed: handlers return `Result<_, ApiError>` everywhere and the `Ok` side should
    /// not pay for the size of a `Status`.
    pub status: Box<Status>,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: Box::new(Status::failure(code.as_u16(), reason, message)),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        )
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            message,
        )
    }

    pub fn service_unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// `NotFound` for `T namespace/name`, worded as the store words it.
    pub fn object_not_found<T: Resource>(namespace: Option<&str>, name: &str) -> ApiError {
        ApiError::from(StoreError::NotFound {
            kind: T::KIND,
            key: key_of::<T>(namespace, name),
        })
    }

    pub fn code(&self) -> StatusCode {
        StatusCode::from_u16(self.status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn with_details(mut self, kind: &str, key: &str) -> ApiError {
        // Kubernetes names the resource (plural) and the bare name in `details`.
        let name = key.rsplit('/').next().unwrap_or(key);
        self.status.details = Some(StatusDetails {
            name: name.to_string(),
            kind: plural(kind),
            causes: Vec::new(),
        });
        self
    }
}

/// `namespace/name` for namespaced kinds, `name` otherwise, as the store keys objects.
pub fn key_of<T: Resource>(namespace: Option<&str>, name: &str) -> String {
    match (T::NAMESPACED, namespace) {
        (true, Some(ns)) => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

fn plural(kind: &str) -> String {
    match kind {
        Pod::KIND => Pod::PLURAL.to_string(),
        Deployment::KIND => Deployment::PLURAL.to_string(),
        Node::KIND => Node::PLURAL.to_string(),
        other => format!("{}s", other.to_lowercase()),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code.is_server_error() {
            tracing::error!(code = code.as_u16(), "{}", self.status.message);
        }
        let mut response = (code, Json(punnet_api::object::to_json(&self.status))).into_response();
        if code == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let message = e.to_string();
        match &e {
            StoreError::NotFound { kind, key } => {
                ApiError::new(StatusCode::NOT_FOUND, "NotFound", message).with_details(kind, key)
            }
            StoreError::AlreadyExists { kind, key } => {
                ApiError::new(StatusCode::CONFLICT, "AlreadyExists", message)
                    .with_details(kind, key)
            }
            StoreError::Conflict { kind, key, .. } => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", message).with_details(kind, key)
            }
            StoreError::Invalid { kind, key, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
                    .with_details(kind, key)
            }
            StoreError::NamespaceNotFound { namespace } => {
                ApiError::new(StatusCode::NOT_FOUND, "NotFound", message)
                    .with_details("Namespace", namespace)
            }
            StoreError::Forbidden { kind, key, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message).with_details(kind, key)
            }
            StoreError::NamespaceTerminating { kind, key, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message).with_details(kind, key)
            }
            // Corrupt data, an unopenable or failing database: the server's fault, and
            // the message says which object or path so an operator can act on it.
            _ => ApiError::internal(message),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> ApiError {
        let message = e.to_string();
        let (kind, key) = e.object.split_once(' ').unwrap_or((e.object.as_str(), ""));
        let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
            .with_details(kind, key);
        if let Some(details) = err.status.details.as_mut() {
            details.causes = e
                .errors
                .iter()
                .map(|f| StatusCause {
                    reason: cause_reason(&f.message).to_string(),
                    message: f.message.clone(),
                    field: f.field.clone(),
                })
                .collect();
        }
        err
    }
}

/// Kubernetes' field error types, guessed from the validator's wording (it has no
/// types of its own; the reason only helps tools group causes).
fn cause_reason(message: &str) -> &'static str {
    if message.starts_with("Forbidden") {
        "FieldValueForbidden"
    } else if message == "must not be empty" || message.starts_with("must have at least") {
        "FieldValueRequired"
    } else {
        "FieldValueInvalid"
    }
}

impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> ApiError {
        // A request body is a single document, so "document 1: " says nothing.
        let message = e.to_string();
        let message = message
            .strip_prefix("document 1: ")
            .map(str::to_string)
            .unwrap_or(message);
        ApiError::bad_request(message)
    }
}

impl From<SelectorError> for ApiError {
    fn from(e: SelectorError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::validate::FieldError;

    #[test]
    fn store_errors_map_to_kubernetes_codes_and_reasons() {
        let cases = [
            (
                StoreError::NotFound {
                    kind: "Pod",
                    key: "default/web".into(),
                },
                404,
                "NotFound",
            ),
            (
                StoreError::AlreadyExists {
                    kind: "Deployment",
                    key: "default/web".into(),
                },
                409,
                "AlreadyExists",
            ),
            (
                StoreError::Conflict {
                    kind: "Pod",
                    key: "default/web".into(),
                    given: "3".into(),
                    current: "5".into(),
                },
                409,
                "Conflict",
            ),
            (
                StoreError::Invalid {
                    kind: "Pod",
                    key: "web".into(),
                    message: "metadata.namespace must be set".into(),
                },
                422,
                "Invalid",
            ),
        ];
        for (e, code, reason) in cases {
            let message = e.to_string();
            let api = ApiError::from(e);
            assert_eq!(api.status.code, code);
            assert_eq!(api.status.reason, reason);
            assert_eq!(api.status.message, message);
            assert_eq!(api.status.kind, "Status");
            assert_eq!(api.status.status, "Failure");
            assert_eq!(api.code().as_u16(), code);
        }
        let nf = ApiError::object_not_found::<Deployment>(Some("default"), "web");
        assert_eq!(nf.status.message, "Deployment default/web not found");
        let details = nf.status.details.unwrap();
        assert_eq!(
            (details.kind.as_str(), details.name.as_str()),
            ("deployments", "web")
        );
    }

    #[test]
    fn corrupt_data_is_an_internal_error() {
        let source = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let api = ApiError::from(StoreError::Corrupt {
            kind: "Pod",
            key: "default/web".into(),
            source,
        });
        assert_eq!(
            (api.status.code, api.status.reason.as_str()),
            (500, "InternalError")
        );
        assert!(
            api.status.message.contains("Pod default/web"),
            "{}",
            api.status.message
        );
    }

    #[test]
    fn validation_errors_become_invalid_with_causes() {
        let api = ApiError::from(ValidationError {
            object: "Deployment default/web".into(),
            errors: vec![
                FieldError {
                    field: "spec.template.spec.containers[0].image".into(),
                    message: "must not be empty".into(),
                },
                FieldError {
                    field: "spec.replicas".into(),
                    message: "must be 0 or more".into(),
                },
            ],
        });
        assert_eq!(
            (api.status.code, api.status.reason.as_str()),
            (422, "Invalid")
        );
        assert_eq!(
            api.status.message,
            "Deployment default/web: spec.template.spec.containers[0].image: must not be empty; \
             spec.replicas: must be 0 or more"
        );
        let details = api.status.details.unwrap();
        assert_eq!(details.name, "web");
        assert_eq!(details.kind, "deployments");
        assert_eq!(details.causes.len(), 2);
        assert_eq!(
            details.causes[0].field,
            "spec.template.spec.containers[0].image"
        );
        assert_eq!(details.causes[0].reason, "FieldValueRequired");
        assert_eq!(details.causes[1].reason, "FieldValueInvalid");
    }

    #[test]
    fn manifest_errors_are_bad_requests_without_the_document_number() {
        let api = ApiError::from(ManifestError::UnknownFields {
            document: 1,
            object: "Pod default/web".into(),
            fields: vec!["spec.foo".into()],
        });
        assert_eq!(
            (api.status.code, api.status.reason.as_str()),
            (400, "BadRequest")
        );
        assert!(
            api.status
                .message
                .starts_with("Pod default/web: unknown field \"spec.foo\""),
            "{}",
            api.status.message
        );
    }
}
