//! How a browser carries its API token: the login form (or `/ui/login?token=…` once)
//! puts the token in an HttpOnly, SameSite=Strict cookie, and the API accepts that
//! cookie for reads only. Whatever the token's role, a cookie never writes, never
//! reads Secrets or the backup and never manages tokens: a page opened from another
//! site cannot make the browser change the fleet.

use axum::http::{header, HeaderMap};

use crate::tokens::Role;

/// The cookie's name.
pub const COOKIE: &str = "punnet_web";
/// How long a browser keeps the cookie (a deleted or expired token stops working
/// sooner: every request checks it).
pub const MAX_AGE_SECS: u64 = 7 * 24 * 3600;

/// The token in the request's session cookie, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// A token can go into a cookie as it is (no quoting): tokens are ASCII letters,
/// digits and a few marks.
pub fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 512
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=:".contains(&b))
}

/// `Set-Cookie` for a logged-in browser; `Secure` unless the API is plaintext.
pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; Max-Age={MAX_AGE_SECS}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that logs the browser out.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether a token of `role` may log in to the page: every role that may read the API.
pub fn may_view(role: Role) -> Result<(), String> {
    role.may_on(true, false, false)
        .map_err(|why| format!("this token cannot view the fleet page: {why}"))
}

/// What a request authenticated by the cookie may do: reads of everything but
/// Secrets, the backup and tokens.
pub fn cookie_may(
    role: Role,
    reads: bool,
    token_admin: bool,
    sensitive: bool,
) -> Result<(), String> {
    may_view(role)?;
    if !reads {
        return Err("the web page's session cookie only reads; send `Authorization: Bearer <token>` to change anything".into());
    }
    if token_admin || sensitive {
        return Err("the web page's session cookie cannot read Secrets, the backup or tokens; send `Authorization: Bearer <token>`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn finds_the_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; punnet_web=pt_abc.def ; b=2"),
        );
        assert_eq!(cookie_token(&h), Some("pt_abc.def"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("punnet_web_x=1"));
        h.append(header::COOKIE, HeaderValue::from_static("punnet_web="));
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn cookies_are_strict_and_secure_over_tls() {
        let c = set_cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(clear_cookie(true).contains("Max-Age=0"));
        assert!(cookie_safe("pt_0123.abcDEF-_"));
        assert!(!cookie_safe("a;b"));
        assert!(!cookie_safe("a b"));
        assert!(!cookie_safe(""));
    }

    #[test]
    fn a_cookie_only_reads_whatever_the_role() {
        assert!(cookie_may(Role::Admin, true, false, false).is_ok());
        assert!(cookie_may(Role::ReadOnly, true, false, false).is_ok());
        assert!(cookie_may(Role::Admin, false, false, false).is_err());
        assert!(
            cookie_may(Role::Admin, true, false, true).is_err(),
            "no Secrets"
        );
        assert!(
            cookie_may(Role::Admin, true, true, false).is_err(),
            "no tokens"
        );
        assert!(cookie_may(Role::Bootstrap, true, false, false).is_err());
    }
}
