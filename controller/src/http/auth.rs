//! Bearer-token authentication: every request except `/healthz` carries
//! `Authorization: Bearer <token>`, checked in constant time so that response timing
//! does not reveal how much of a guessed token was right.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::ApiState;

/// The tokens the API accepts. Only the admin token for now; per-user tokens would be
/// more entries here.
pub struct Tokens {
    /// SHA-256 of the admin token: comparing fixed-size digests keeps the comparison's
    /// time independent of the presented token's length and content.
    admin: [u8; 32],
}

impl Tokens {
    pub fn new(admin: &str) -> Tokens {
        Tokens {
            admin: Sha256::digest(admin.as_bytes()).into(),
        }
    }

    /// Whether `presented` is a valid token.
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        constant_time_eq(&digest, &self.admin)
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print token material, not even its digest.
        f.write_str("Tokens { .. }")
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

/// Middleware: answers 401 with a `Status` unless the request carries a valid token.
pub async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented {
        Some(token) if state.tokens.verify(token) => next.run(request).await,
        Some(_) => ApiError::unauthorized("Unauthorized: the bearer token is not valid").into_response(),
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
    fn verifies_only_the_admin_token() {
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
