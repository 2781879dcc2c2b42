//! Who may command. The embedded broker has no per-client ACLs, so the controller
//! cannot know who published a command: every command carries an operator's token
//! (the MQTT 5 user property `token`, or a `token` field) and the controller checks it
//! here, on either broker. With Mosquitto an ACL can in addition keep everybody but
//! operators from writing `cmd/#`.

use std::sync::Arc;

/// Checks a command's token. The controller's admin token is accepted by
/// [`AdminToken`]; a token store with roles implements this to accept operators.
pub trait CommandAuth: Send + Sync {
    /// `Err` with a reason a person can act on when the token may not command.
    fn authorize(&self, token: &str) -> Result<(), String>;
}

/// Accepts the controller's admin token (`<data-dir>/admin.token`).
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken(token.trim().to_string())
    }
}

impl CommandAuth for AdminToken {
    fn authorize(&self, token: &str) -> Result<(), String> {
        if !self.0.is_empty() && constant_time_eq(token.trim().as_bytes(), self.0.as_bytes()) {
            Ok(())
        } else {
            Err("the token is not an operator's token".into())
        }
    }
}

/// The token store: operators and admins may command.
impl CommandAuth for crate::tokens::Tokens {
    fn authorize(&self, token: &str) -> Result<(), String> {
        use crate::tokens::Role;
        match crate::tokens::Tokens::authorize(self, token) {
            Some(Role::Operator | Role::Admin) => Ok(()),
            Some(role) => Err(format!(
                "a {} token may not command; create an operator's with `punnet token create --role operator`",
                role.as_str()
            )),
            None => Err(
                "the token is unknown, expired or deleted; create an operator's with `punnet token create --role operator`"
                    .into(),
            ),
        }
    }
}

/// What the Home Assistant restart buttons carry: it may restart Deployments and do
/// nothing else, because the discovery configs holding it are readable on the broker.
pub struct RestartOnly(pub String);

/// Decides one command: `Ok` or the reply's (code, reason, message).
pub fn check(
    auth: &Arc<dyn CommandAuth>,
    restart_only: Option<&RestartOnly>,
    verb: &str,
    token: Option<&str>,
) -> Result<(), (u16, &'static str, String)> {
    let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
        return Err((
            401,
            "Unauthorized",
            format!(
                "cmd/{verb} refused: no token; send an operator's token (`punnet token create --role operator`) as the MQTT 5 user property \"token\" or as a \"token\" field"
            ),
        ));
    };
    if let Some(scoped) = restart_only {
        if constant_time_eq(token.trim().as_bytes(), scoped.0.as_bytes()) {
            return if verb == "restart" {
                Ok(())
            } else {
                Err((
                    403,
                    "Forbidden",
                    format!("cmd/{verb} refused: the Home Assistant button token may only restart"),
                ))
            };
        }
    }
    auth.authorize(token)
        .map_err(|why| (403, "Forbidden", format!("cmd/{verb} refused: {why}")))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_tokens_command() {
        let auth: Arc<dyn CommandAuth> = Arc::new(AdminToken::new("admin-secret\n"));
        assert!(check(&auth, None, "scale", Some("admin-secret")).is_ok());
        let (code, reason, msg) = check(&auth, None, "scale", None).unwrap_err();
        assert_eq!((code, reason), (401, "Unauthorized"));
        assert!(msg.contains("no token"), "{msg}");
        let (code, _, msg) = check(&auth, None, "apply", Some("guess")).unwrap_err();
        assert_eq!(code, 403);
        assert_eq!(
            msg,
            "cmd/apply refused: the token is not an operator's token"
        );

        let ha = RestartOnly("button".into());
        assert!(check(&auth, Some(&ha), "restart", Some("button")).is_ok());
        let (code, _, msg) = check(&auth, Some(&ha), "delete", Some("button")).unwrap_err();
        assert_eq!(code, 403);
        assert!(msg.contains("may only restart"), "{msg}");
        assert!(check(&auth, Some(&ha), "delete", Some("admin-secret")).is_ok());
    }
}
