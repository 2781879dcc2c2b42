//! Bearer-token authentication: every request except `/healthz` carries
//! `Authorization: Bearer <token>` (or, for reads from the fleet page, the session
//! cookie holding one), checked in constant time so that response timing
//! does not reveal how much of a guessed token was right.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::ApiState;

/// The tokens the API accepts: the admin token and the tokens in the database.
pub use crate::tokens::Tokens;

/// Middleware: answers 401 with a `Status` unless the request carries a valid token.
pub async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let header_token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    // A browser on the fleet page sends its token in the session cookie instead, which
    // only ever reads (see `web::session`).
    let from_cookie = header_token.is_none();
    let presented = header_token.or_else(|| crate::web::session::cookie_token(request.headers()));
    match presented.map(|token| state.tokens.authorize(token)) {
        Some(Some(role)) => {
            let reads = matches!(*request.method(), Method::GET | Method::HEAD);
            let path = request.uri().path();
            let token_admin = path.starts_with(super::tokens::TOKENS_PATH);
            let sensitive = path == "/backup" || path.contains("/secrets");
            let allowed = if from_cookie {
                crate::web::session::cookie_may(role, reads, token_admin, sensitive)
            } else {
                role.may_on(reads, token_admin, sensitive)
            };
            match allowed {
                Ok(()) => next.run(request).await,
                Err(why) => ApiError::forbidden(format!(
                    "Forbidden: {} {}: {why}",
                    request.method(),
                    request.uri().path()
                ))
                .into_response(),
            }
        }
        Some(None) => ApiError::unauthorized(
            "Unauthorized: the bearer token is not valid (unknown, deleted or expired); make a new one with `punnet token create --role ...`, or use <data-dir>/admin.token",
        )
        .into_response(),
        None => ApiError::unauthorized(
            "Unauthorized: send `Authorization: Bearer <token>`; the admin token is in <data-dir>/admin.token",
        )
        .into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_the_admin_token() {
        let tokens = Tokens::new("s3cret");
        assert!(tokens.verify("s3cret"));
        assert!(!tokens.verify("s3cre"));
        assert!(!tokens.verify("s3cretx"));
        assert!(!tokens.verify(""));
        assert_eq!(format!("{tokens:?}"), "Tokens { .. }");
    }

    #[test]
    fn parses_bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
