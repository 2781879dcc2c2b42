//! One-time enrolment of a node over MQTT, and the credential formats both sides share:
//! the token string, the broker usernames, the enrolment topics and messages, and the
//! Mosquitto password hash (`$7$`, PBKDF2-SHA512) that the controller stores for every
//! broker login and writes into a Mosquitto password file.
//!
//! The protocol keeps secrets off the broker: the agent picks its own MQTT password and
//! sends only its `$7$` hash; it proves it holds the bootstrap token with an HMAC keyed
//! by the token's SHA-256 (which the controller stores) over everything it asks for, so
//! a request read off the broker can neither be replayed for another key nor reveal the
//! token. The reply carries nothing secret (the node name and the controller's public
//! signing key).

use ring::{hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::num::NonZeroU32;

/// The MQTT username the controller itself connects with.
pub const CONTROLLER_USERNAME: &str = "punnet-controller";
/// Broker usernames of token logins (bootstrap and operator) are this plus the token id.
pub const TOKEN_USERNAME_PREFIX: &str = "punnet-token-";
/// Node names may not start with this: such usernames belong to the controller and tokens.
pub const RESERVED_PREFIX: &str = "punnet-";
/// Protocol version of the enrolment messages.
pub const ENROL_VERSION: u32 = 1;
/// Mosquitto's default PBKDF2 iteration count (`mosquitto_passwd` writes 101).
pub const MOSQUITTO_ITERATIONS: u32 = 101;
const SALT_LEN: usize = 12;
const HASH_LEN: usize = 64;

/// A token as handed to a person: `<id>.<secret>`, where the id is public (it names the
/// token in `punnet get tokens` and in broker usernames) and the secret is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenString {
    pub id: String,
    pub secret: String,
}

impl TokenString {
    /// Parses `<id>.<secret>`; `None` when it has another shape (e.g. the admin token).
    pub fn parse(text: &str) -> Option<TokenString> {
        let (id, secret) = text.trim().split_once('.')?;
        let ok_id = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let ok_secret = secret.len() >= 16 && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        (ok_id && ok_secret).then(|| TokenString {
            id: id.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    /// A fresh random token.
    pub fn generate(random: impl FnOnce() -> ([u8; 6], [u8; 24])) -> TokenString {
        let (id, secret) = random();
        TokenString {
            id: hex::encode(id),
            secret: hex::encode(secret),
        }
    }

    /// The MQTT login of this token: username `punnet-token-<id>`, password the secret.
    pub fn mqtt_username(&self) -> String {
        token_username(&self.id)
    }

    /// What the controller stores to recognise the secret (never the secret itself).
    pub fn verifier(&self) -> [u8; 32] {
        Sha256::digest(self.secret.as_bytes()).into()
    }
}

impl std::fmt::Display for TokenString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

pub fn token_username(id: &str) -> String {
    format!("{TOKEN_USERNAME_PREFIX}{id}")
}

/// The token id of a token login's username.
pub fn token_id_of_username(username: &str) -> Option<&str> {
    username.strip_prefix(TOKEN_USERNAME_PREFIX)
}

/// Agent → controller: the request topic of one enrolment (`<client-id>` is the
/// enrolling connection's random client id, so a Mosquitto ACL can confine it with `%c`).
pub fn request_topic(prefix: &str, client_id: &str) -> String {
    format!("{}/enrol/{client_id}/request", prefix.trim_end_matches('/'))
}

/// Controller → agent: the answer to the request on `request_topic`.
pub fn reply_topic(prefix: &str, client_id: &str) -> String {
    format!("{}/enrol/{client_id}/reply", prefix.trim_end_matches('/'))
}

/// What the controller subscribes to.
pub fn all_requests(prefix: &str) -> String {
    format!("{}/enrol/+/request", prefix.trim_end_matches('/'))
}

/// The client id of a request topic.
pub fn client_of_request<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    let rest = topic
        .strip_prefix(prefix.trim_end_matches('/'))?
        .strip_prefix("/enrol/")?;
    let client = rest.strip_suffix("/request")?;
    (!client.is_empty() && !client.contains('/')).then_some(client)
}

/// Agent → controller (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub version: u32,
    /// Which token this enrolment spends.
    pub token_id: String,
    /// The node name asked for.
    pub node: String,
    /// The node's ed25519 public key, hex.
    pub public_key: String,
    /// The `$7$` hash of the MQTT password the agent chose for itself.
    pub mqtt_password_hash: String,
    /// HMAC-SHA256, keyed by the token's verifier, over the fields above; hex.
    pub proof: String,
}

impl EnrolRequest {
    pub fn new(
        token: &TokenString,
        node: &str,
        public_key: &[u8; 32],
        mqtt_password_hash: String,
    ) -> EnrolRequest {
        let mut r = EnrolRequest {
            version: ENROL_VERSION,
            token_id: token.id.clone(),
            node: node.to_string(),
            public_key: hex::encode(public_key),
            mqtt_password_hash,
            proof: String::new(),
        };
        r.proof = hex::encode(r.mac(&token.verifier()));
        r
    }

    fn mac(&self, verifier: &[u8; 32]) -> hmac::Tag {
        let key = hmac::Key::new(hmac::HMAC_SHA256, verifier);
        let mut ctx = hmac::Context::with_key(&key);
        for field in [
            self.token_id.as_bytes(),
            self.node.as_bytes(),
            self.public_key.as_bytes(),
            self.mqtt_password_hash.as_bytes(),
        ] {
            // Length-prefixed, so that moving bytes between fields changes the MAC.
            ctx.update(&(field.len() as u32).to_be_bytes());
            ctx.update(field);
        }
        ctx.sign()
    }

    /// Whether the proof was made with the token whose verifier is `verifier`
    /// (constant time).
    pub fn proof_matches(&self, verifier: &[u8; 32]) -> bool {
        let Ok(proof) = hex::decode(&self.proof) else {
            return false;
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, verifier);
        let mut msg = Vec::new();
        for field in [
            self.token_id.as_bytes(),
            self.node.as_bytes(),
            self.public_key.as_bytes(),
            self.mqtt_password_hash.as_bytes(),
        ] {
            msg.extend_from_slice(&(field.len() as u32).to_be_bytes());
            msg.extend_from_slice(field);
        }
        hmac::verify(&key, &msg, &proof).is_ok()
    }

    /// The public key as bytes, or why it is not one.
    pub fn public_key_bytes(&self) -> Result<[u8; 32], String> {
        let bytes = hex::decode(&self.public_key).map_err(|e| format!("public_key: {e}"))?;
        bytes
            .try_into()
            .map_err(|_| "public_key: expected 32 bytes (an ed25519 key)".to_string())
    }
}

/// Controller → agent (JSON). Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolReply {
    pub version: u32,
    /// The node name the agent is now known by (on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The controller's ed25519 public key, hex (on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_public_key: Option<String>,
    /// Why the request was refused (on failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl EnrolReply {
    pub fn accepted(node: &str, controller_public_key: &[u8; 32]) -> EnrolReply {
        EnrolReply {
            version: ENROL_VERSION,
            node: Some(node.to_string()),
            controller_public_key: Some(hex::encode(controller_public_key)),
            refused: None,
        }
    }

    pub fn refused(reason: impl Into<String>) -> EnrolReply {
        EnrolReply {
            version: ENROL_VERSION,
            node: None,
            controller_public_key: None,
            refused: Some(reason.into()),
        }
    }
}

/// A Mosquitto `$7$` password hash: `$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>`.
pub fn mosquitto_hash(password: &str, salt: [u8; SALT_LEN]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = [0u8; HASH_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        NonZeroU32::new(MOSQUITTO_ITERATIONS).expect("non-zero"),
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "$7${MOSQUITTO_ITERATIONS}${}${}",
        b64.encode(salt),
        b64.encode(out)
    )
}

/// Whether `password` matches a `$7$` hash (constant time); false for a malformed hash.
pub fn mosquitto_verify(hash: &str, password: &str) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut parts = hash.split('$');
    let (Some(""), Some("7"), Some(iter), Some(salt), Some(sum), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(iter), Ok(salt), Ok(sum)) = (iter.parse::<u32>(), b64.decode(salt), b64.decode(sum))
    else {
        return false;
    };
    // A stored hash is ours, but an absurd count must not stall the broker's auth.
    let Some(iter) = NonZeroU32::new(iter).filter(|n| n.get() <= 100_000) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iter,
        &salt,
        password.as_bytes(),
        &sum,
    )
    .is_ok()
}

/// Whether `hash` has the `$7$` shape (so a request cannot plant garbage in the
/// password file: no `:` or newline can pass).
pub fn is_mosquitto_hash(hash: &str) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let parts: Vec<&str> = hash.split('$').collect();
    matches!(parts.as_slice(), ["", "7", iter, salt, sum]
        if iter.parse::<u32>().is_ok_and(|n| (1..=100_000).contains(&n))
            && b64.decode(salt).is_ok_and(|s| !s.is_empty())
            && b64.decode(sum).is_ok_and(|s| s.len() == HASH_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -b pw alice secret` (Mosquitto 2.0.11).
    const FROM_MOSQUITTO_PASSWD: &str = "$7$101$f+KLNP0o36QS8dsf$EDj2KUGuJhoHFaWFqIGYwJG5Fl0RJkrEA0qnljBi6bKS9iEGkVeBYkA/uUSvabdkKOvVPPSjF4OpPJ6FsFJ+BA==";

    #[test]
    fn hashes_like_mosquitto_passwd() {
        assert!(mosquitto_verify(FROM_MOSQUITTO_PASSWD, "secret"));
        assert!(!mosquitto_verify(FROM_MOSQUITTO_PASSWD, "secreT"));
        assert!(is_mosquitto_hash(FROM_MOSQUITTO_PASSWD));
        let ours = mosquitto_hash("pw", [7; 12]);
        assert!(ours.starts_with("$7$101$"), "{ours}");
        assert!(is_mosquitto_hash(&ours));
        assert!(mosquitto_verify(&ours, "pw"));
        assert!(!mosquitto_verify(&ours, "px"));
        for bad in ["", "$7$", "$6$101$AAAA$AAAA", "$7$0$AAAA$AAAA", "x:y\n"] {
            assert!(!is_mosquitto_hash(bad), "{bad}");
            assert!(!mosquitto_verify(bad, "pw"), "{bad}");
        }
    }

    #[test]
    fn token_strings_round_trip() {
        let t = TokenString::generate(|| ([0xab; 6], [1; 24]));
        assert_eq!(t.id, "abababababab");
        let parsed = TokenString::parse(&t.to_string()).unwrap();
        assert_eq!(parsed, t);
        assert_eq!(t.mqtt_username(), "punnet-token-abababababab");
        assert_eq!(
            token_id_of_username(&t.mqtt_username()),
            Some("abababababab")
        );
        assert!(TokenString::parse(&"a".repeat(64)).is_none(), "admin token");
        assert!(TokenString::parse("abababababab.short").is_none());
        assert!(TokenString::parse("xyz.0123456789abcdef0123").is_none());
    }

    #[test]
    fn proof_binds_every_field_to_the_token() {
        let t = TokenString::generate(|| ([1; 6], [2; 24]));
        let other = TokenString::generate(|| ([1; 6], [3; 24]));
        let r = EnrolRequest::new(&t, "pi-1", &[9; 32], mosquitto_hash("p", [0; 12]));
        assert!(r.proof_matches(&t.verifier()));
        assert!(!r.proof_matches(&other.verifier()));
        let mut renamed = r.clone();
        renamed.node = "pi-2".into();
        assert!(!renamed.proof_matches(&t.verifier()));
        let mut rekeyed = r.clone();
        rekeyed.public_key = hex::encode([8u8; 32]);
        assert!(!rekeyed.proof_matches(&t.verifier()));
        assert_eq!(r.public_key_bytes().unwrap(), [9; 32]);
    }

    #[test]
    fn topics() {
        assert_eq!(request_topic("p/v1/", "c1"), "p/v1/enrol/c1/request");
        assert_eq!(reply_topic("p/v1", "c1"), "p/v1/enrol/c1/reply");
        assert_eq!(all_requests("p/v1"), "p/v1/enrol/+/request");
        assert_eq!(
            client_of_request("p/v1", "p/v1/enrol/c1/request"),
            Some("c1")
        );
        assert_eq!(client_of_request("p/v1", "p/v1/enrol/c1/reply"), None);
        assert_eq!(client_of_request("p/v1", "p/v1/enrol//request"), None);
    }
}
