//! API and enrolment tokens with roles, kept in sled. A token is `<id>.<secret>`; only
//! the SHA-256 of the secret (to check REST requests and enrolment proofs) and its
//! Mosquitto `$7$` hash (for the broker's password file) are stored, so the secret is
//! shown once, when the token is made. The `<data-dir>/admin.token` of earlier versions
//! keeps working as an admin token beside these.
//!
//! Roles: `bootstrap` tokens only enrol nodes (they are refused on the REST API);
//! `admin` may do everything; `read-only` may only read (GET, list, watch, logs,
//! metrics); `operator` is what the MQTT command API accepts, and on the REST API it
//! may read and write objects like admin, but not manage tokens.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use punnet_api::enrol::{self, TokenString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The sled tree tokens live in.
pub const TREE: &str = "punnet.io/tokens";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Enrols nodes, nothing else.
    Bootstrap,
    Admin,
    ReadOnly,
    /// MQTT commands; on REST, objects (like admin) but not tokens.
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Bootstrap, Role::Admin, Role::ReadOnly, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bootstrap => "bootstrap",
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
            Role::Operator => "operator",
        }
    }

    /// Whether this role may use the REST API for a request that only reads (GET,
    /// HEAD: lists, watches, logs, metrics) or not, on a path that manages tokens or
    /// not. `Err` is the reason for a 403.
    pub fn may(self, reads: bool, token_admin: bool) -> Result<(), String> {
        self.may_on(reads, token_admin, false)
    }

    /// `may`, where `sensitive` paths (Secrets, the database backup) are kept from
    /// read-only tokens, as Kubernetes' `view` role keeps Secrets from dashboards.
    pub fn may_on(self, reads: bool, token_admin: bool, sensitive: bool) -> Result<(), String> {
        if self == Role::ReadOnly && sensitive {
            return Err("read-only tokens cannot read Secrets or the backup; use an admin or operator token".into());
        }
        match self {
            Role::Admin => Ok(()),
            Role::Bootstrap => Err("bootstrap tokens only enrol nodes over MQTT; use an admin token (<data-dir>/admin.token, or `punnet token create --role admin`)".into()),
            Role::ReadOnly if reads && !token_admin => Ok(()),
            Role::ReadOnly => Err("this token is read-only; use a token with the admin role to change anything".into()),
            Role::Operator if token_admin => Err("operator tokens cannot manage tokens; use an admin token".into()),
            Role::Operator => Ok(()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: use bootstrap, admin, read-only or operator")
            })
    }
}

/// What is stored of one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub verifier: String,
    /// The secret's Mosquitto `$7$` hash (broker logins of operator and bootstrap tokens).
    pub mqtt_hash: String,
    /// Uses left; `None`: unlimited. Only enrolments use a token up.
    pub uses_left: Option<u32>,
    pub expires: Option<DateTime<Utc>>,
    /// Given to the nodes a bootstrap token enrols.
    pub labels: BTreeMap<String, String>,
    pub created: DateTime<Utc>,
    /// When an enrolment last spent a use (see [`LOGIN_GRACE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
}

/// How long a used-up bootstrap token may still log in to the broker after its last
/// use. A board whose enrolment reply was lost (Wi-Fi, a restart) asks again with the
/// same token; the controller answers that repeat for the node and key it enrolled
/// without spending anything, and refuses everything else as used up.
pub const LOGIN_GRACE: chrono::Duration = chrono::Duration::minutes(15);

/// Why a token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error(
        "token {0} is unknown (deleted, or never made here); make one with `punnet token create`"
    )]
    Unknown(String),
    #[error("token {id} expired at {at}; make a new one with `punnet token create --ttl ...`")]
    Expired { id: String, at: DateTime<Utc> },
    #[error("token {0} is used up; make a new one with `punnet token create --uses N`")]
    UsedUp(String),
    #[error("the secret does not match token {0}; check that the whole token was copied")]
    WrongSecret(String),
    #[error(
        "token {id} has role {role}; enrolment needs a bootstrap token (`punnet token create`)"
    )]
    NotBootstrap { id: String, role: Role },
}

impl TokenRecord {
    /// Pure check of expiry and uses at `now`.
    pub fn usable(&self, now: DateTime<Utc>) -> Result<(), Refusal> {
        if let Some(at) = self.expires {
            if now >= at {
                return Err(Refusal::Expired {
                    id: self.id.clone(),
                    at,
                });
            }
        }
        if self.uses_left == Some(0) {
            return Err(Refusal::UsedUp(self.id.clone()));
        }
        Ok(())
    }

    /// Whether the token may log in to the broker at `now`: [`usable`](Self::usable),
    /// or a bootstrap token used up less than [`LOGIN_GRACE`] ago.
    pub fn may_log_in(&self, now: DateTime<Utc>) -> Result<(), Refusal> {
        match self.usable(now) {
            Err(Refusal::UsedUp(_))
                if self.role == Role::Bootstrap
                    && self.last_used.is_some_and(|t| now - t < LOGIN_GRACE) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    pub fn verifier_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Ok(v) = hex::decode(&self.verifier) {
            if v.len() == 32 {
                out.copy_from_slice(&v);
            }
        }
        out
    }

    fn secret_matches(&self, secret: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        constant_time_eq(&digest, &self.verifier_bytes())
    }
}

/// What a person asks for in `punnet token create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    #[serde(default)]
    pub role: Option<Role>,
    /// Seconds from now.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub uses: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Error)]
pub enum TokensError {
    #[error("token store: {0}")]
    Sled(#[from] sled::Error),
    #[error("token store: record {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Called after tokens or identities change (the Mosquitto files are rewritten then).
pub type ChangeHook = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The token registry. Cheap to share behind an `Arc`.
pub struct Tokens {
    /// SHA-256 of `<data-dir>/admin.token`.
    admin: [u8; 32],
    tree: sled::Tree,
    /// See `set_on_change`.
    on_change: std::sync::OnceLock<ChangeHook>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print token material, not even digests.
        f.write_str("Tokens { .. }")
    }
}

impl Tokens {
    /// Tokens kept in `tree` (the controller's database) plus the admin token.
    pub fn open(admin: &str, tree: sled::Tree) -> Tokens {
        Tokens {
            admin: Sha256::digest(admin.as_bytes()).into(),
            tree,
            on_change: std::sync::OnceLock::new(),
        }
    }

    /// Runs `hook` after every token is made, deleted or spent (once set, for good).
    pub fn set_on_change(&self, hook: ChangeHook) {
        let _ = self.on_change.set(hook);
    }

    fn changed(&self) {
        if let Some(hook) = self.on_change.get() {
            hook();
        }
    }

    /// Only the admin token, and tokens made later kept in a temporary database (tests).
    pub fn new(admin: &str) -> Tokens {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("a temporary sled database opens");
        Tokens::open(admin, db.open_tree(TREE).expect("a tree opens"))
    }

    /// Whether `presented` is the admin token or a usable admin token (compatibility
    /// with callers that only know one role).
    pub fn verify(&self, presented: &str) -> bool {
        self.authorize(presented) == Some(Role::Admin)
    }

    /// The role of a presented token (REST bearer or MQTT command credential), or
    /// `None` if it is unknown, expired, used up or wrong. Bootstrap tokens come back as
    /// `Bootstrap`: callers decide what that role may do.
    pub fn authorize(&self, presented: &str) -> Option<Role> {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        if constant_time_eq(&digest, &self.admin) {
            return Some(Role::Admin);
        }
        let token = TokenString::parse(presented)?;
        self.check(&token.id, &token.secret, Utc::now()).ok()
    }

    /// The role of a token by id and secret at `now` (an API request's token).
    pub fn check(&self, id: &str, secret: &str, now: DateTime<Utc>) -> Result<Role, Refusal> {
        let record = self.matching(id, secret)?;
        record.usable(now)?;
        Ok(record.role)
    }

    /// The role of an MQTT login `punnet-token-<id>` / secret at `now`.
    pub fn check_mqtt_at(
        &self,
        username: &str,
        password: &str,
        now: DateTime<Utc>,
    ) -> Result<Role, Refusal> {
        let id = enrol::token_id_of_username(username)
            .ok_or_else(|| Refusal::Unknown(username.to_string()))?;
        let record = self.matching(id, password)?;
        record.may_log_in(now)?;
        Ok(record.role)
    }

    /// [`check_mqtt_at`](Self::check_mqtt_at) now.
    pub fn check_mqtt(&self, username: &str, password: &str) -> Result<Role, Refusal> {
        self.check_mqtt_at(username, password, Utc::now())
    }

    fn matching(&self, id: &str, secret: &str) -> Result<TokenRecord, Refusal> {
        let record = self
            .get(id)
            .ok()
            .flatten()
            .ok_or_else(|| Refusal::Unknown(id.to_string()))?;
        if !record.secret_matches(secret) {
            return Err(Refusal::WrongSecret(id.to_string()));
        }
        Ok(record)
    }

    /// Makes a token; the returned string is the only time its secret exists.
    pub fn create(
        &self,
        spec: &TokenSpec,
        now: DateTime<Utc>,
    ) -> Result<(TokenRecord, TokenString), TokensError> {
        for (k, v) in &spec.labels {
            punnet_api::validate::label_key(k)
                .and_then(|()| punnet_api::validate::label_value(v))
                .map_err(|p| TokensError::Invalid(format!("label {k}={v}: {p}")))?;
        }
        if spec.uses == Some(0) {
            return Err(TokensError::Invalid(
                "--uses 0 would make a token that can never be used; give 1 or more".into(),
            ));
        }
        let ttl = match spec.ttl_seconds {
            Some(s) => Some(
                chrono::Duration::try_seconds(s as i64)
                    .filter(|d| *d > chrono::Duration::zero())
                    .ok_or_else(|| TokensError::Invalid(format!("ttl of {s} s is out of range")))?,
            ),
            None => None,
        };
        let token = TokenString::generate(rand::random);
        let record = TokenRecord {
            id: token.id.clone(),
            role: spec.role.unwrap_or(Role::Bootstrap),
            verifier: hex::encode(token.verifier()),
            mqtt_hash: enrol::mosquitto_hash(&token.secret, rand::random()),
            uses_left: spec.uses,
            expires: ttl.map(|d| now + d),
            labels: spec.labels.clone(),
            created: now,
            last_used: None,
        };
        let value = serde_json::to_vec(&record).expect("a token record serialises");
        self.tree
            .compare_and_swap(record.id.as_bytes(), None::<&[u8]>, Some(value))?
            .map_err(|_| TokensError::Invalid("token id collision; try again".into()))?;
        self.tree.flush()?;
        self.changed();
        Ok((record, token))
    }

    pub fn get(&self, id: &str) -> Result<Option<TokenRecord>, TokensError> {
        match self.tree.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode(id, &v)?)),
            None => Ok(None),
        }
    }

    pub fn list(&self) -> Result<Vec<TokenRecord>, TokensError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            out.push(decode(&String::from_utf8_lossy(&k), &v)?);
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Whether the token existed.
    pub fn delete(&self, id: &str) -> Result<bool, TokensError> {
        let existed = self.tree.remove(id.as_bytes())?.is_some();
        self.tree.flush()?;
        self.changed();
        Ok(existed)
    }

    /// The bootstrap token `id` for an enrolment whose proof `valid` decides, when it
    /// has not expired, without spending a use: the repeat of an enrolment it already
    /// paid for.
    pub fn confirm(
        &self,
        id: &str,
        now: DateTime<Utc>,
        valid: impl Fn(&TokenRecord) -> bool,
    ) -> Result<TokenRecord, Refusal> {
        let (_, record) = self.bootstrap(id, &valid)?;
        match record.usable(now) {
            Ok(()) | Err(Refusal::UsedUp(_)) => Ok(record),
            Err(e) => Err(e),
        }
    }

    fn bootstrap(
        &self,
        id: &str,
        valid: &impl Fn(&TokenRecord) -> bool,
    ) -> Result<(sled::IVec, TokenRecord), Refusal> {
        let old = self
            .tree
            .get(id.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| Refusal::Unknown(id.to_string()))?;
        let record = decode(id, &old).map_err(|_| Refusal::Unknown(id.to_string()))?;
        if !valid(&record) {
            return Err(Refusal::WrongSecret(id.to_string()));
        }
        if record.role != Role::Bootstrap {
            return Err(Refusal::NotBootstrap {
                id: id.to_string(),
                role: record.role,
            });
        }
        Ok((old, record))
    }

    /// Spends one use of bootstrap token `id` for an enrolment whose proof `valid`
    /// decides; atomic, so two enrolments racing for the last use cannot both win.
    pub fn spend(
        &self,
        id: &str,
        now: DateTime<Utc>,
        valid: impl Fn(&TokenRecord) -> bool,
    ) -> Result<TokenRecord, Refusal> {
        loop {
            let (old, record) = self.bootstrap(id, &valid)?;
            record.usable(now)?;
            let mut spent = record.clone();
            spent.uses_left = spent.uses_left.map(|n| n - 1);
            spent.last_used = Some(now);
            let new = serde_json::to_vec(&spent).expect("a token record serialises");
            match self
                .tree
                .compare_and_swap(id.as_bytes(), Some(old), Some(new))
            {
                Ok(Ok(())) => {
                    let _ = self.tree.flush();
                    self.changed();
                    return Ok(spent);
                }
                Ok(Err(_)) => continue, // changed meanwhile: look again
                Err(_) => return Err(Refusal::Unknown(id.to_string())),
            }
        }
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<TokenRecord, TokensError> {
    serde_json::from_slice(bytes).map_err(|source| TokensError::Corrupt {
        key: key.to_string(),
        source,
    })
}

pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(role: Role) -> TokenSpec {
        TokenSpec {
            role: Some(role),
            ..Default::default()
        }
    }

    #[test]
    fn roles_decide_what_rest_allows() {
        assert!(Role::Admin.may(false, true).is_ok());
        assert!(Role::ReadOnly.may(true, false).is_ok());
        assert!(Role::ReadOnly.may(false, false).is_err());
        assert!(Role::ReadOnly.may(true, true).is_err());
        assert!(Role::Operator.may(false, false).is_ok());
        assert!(Role::Operator.may(true, true).is_err());
        assert!(Role::Bootstrap.may(true, false).is_err());
        assert!(Role::ReadOnly.may_on(true, false, true).is_err());
        assert!(Role::Operator.may_on(true, false, true).is_ok());
        assert_eq!("read-only".parse::<Role>(), Ok(Role::ReadOnly));
        assert!("root".parse::<Role>().unwrap_err().contains("read-only"));
    }

    #[test]
    fn stores_no_secret_and_authorizes_by_role() {
        let tokens = Tokens::new("admin-token-0123456789");
        let now = Utc::now();
        let (record, token) = tokens.create(&spec(Role::ReadOnly), now).unwrap();
        let stored =
            String::from_utf8(tokens.tree.get(&record.id).unwrap().unwrap().to_vec()).unwrap();
        assert!(!stored.contains(&token.secret), "{stored}");
        assert_eq!(tokens.authorize(&token.to_string()), Some(Role::ReadOnly));
        assert_eq!(
            tokens.authorize("admin-token-0123456789"),
            Some(Role::Admin)
        );
        let wrong = format!("{}.{}", token.id, "0".repeat(48));
        assert_eq!(tokens.authorize(&wrong), None);
        assert!(enrol::mosquitto_verify(&record.mqtt_hash, &token.secret));
        assert_eq!(
            tokens.check_mqtt(&token.mqtt_username(), &token.secret),
            Ok(Role::ReadOnly)
        );
        assert!(tokens.delete(&record.id).unwrap());
        assert_eq!(tokens.authorize(&token.to_string()), None);
        assert!(!tokens.delete(&record.id).unwrap());
    }

    #[test]
    fn expiry_and_uses_are_enforced() {
        let tokens = Tokens::new("admin-token-0123456789");
        let now = Utc::now();
        let (rec, token) = tokens
            .create(
                &TokenSpec {
                    uses: Some(2),
                    ttl_seconds: Some(60),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(rec.role, Role::Bootstrap);
        let ok = |r: &TokenRecord| r.verifier == hex::encode(token.verifier());
        assert_eq!(tokens.spend(&rec.id, now, ok).unwrap().uses_left, Some(1));
        assert!(matches!(
            tokens.spend(&rec.id, now, |_| false),
            Err(Refusal::WrongSecret(_))
        ));
        assert!(matches!(
            tokens.spend(&rec.id, now + chrono::Duration::seconds(61), ok),
            Err(Refusal::Expired { .. })
        ));
        assert_eq!(tokens.spend(&rec.id, now, ok).unwrap().uses_left, Some(0));
        let err = tokens.spend(&rec.id, now, ok).unwrap_err();
        assert!(matches!(err, Refusal::UsedUp(_)), "{err}");
        assert!(err.to_string().contains("punnet token create"));
        assert!(matches!(
            tokens.spend("000000000000", now, ok),
            Err(Refusal::Unknown(_))
        ));

        // Used up, it still logs in for a while so a board can repeat a lost enrolment,
        // and confirm (not spend) answers that repeat; never after it expires.
        let later = now + chrono::Duration::seconds(30);
        let user = token.mqtt_username();
        assert_eq!(
            tokens.check_mqtt_at(&user, &token.secret, later),
            Ok(Role::Bootstrap)
        );
        assert!(matches!(
            tokens.check_mqtt_at(&user, &token.secret, now + chrono::Duration::seconds(61)),
            Err(Refusal::Expired { .. })
        ));
        assert!(matches!(
            tokens.check_mqtt_at(&user, "0", later),
            Err(Refusal::WrongSecret(_))
        ));
        let (once, once_token) = tokens
            .create(
                &TokenSpec {
                    uses: Some(1),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        let once_ok = |r: &TokenRecord| r.verifier == hex::encode(once_token.verifier());
        tokens.spend(&once.id, now, once_ok).unwrap();
        let once_user = once_token.mqtt_username();
        assert_eq!(
            tokens.check_mqtt_at(&once_user, &once_token.secret, now + LOGIN_GRACE / 2),
            Ok(Role::Bootstrap)
        );
        assert!(matches!(
            tokens.check_mqtt_at(&once_user, &once_token.secret, now + LOGIN_GRACE),
            Err(Refusal::UsedUp(_))
        ));
        assert_eq!(
            tokens.confirm(&rec.id, later, ok).unwrap().uses_left,
            Some(0)
        );
        assert!(matches!(
            tokens.confirm(&rec.id, now + chrono::Duration::seconds(61), ok),
            Err(Refusal::Expired { .. })
        ));
        assert!(matches!(
            tokens.confirm(&rec.id, later, |_| false),
            Err(Refusal::WrongSecret(_))
        ));
        let (admin, _) = tokens.create(&spec(Role::Admin), now).unwrap();
        assert!(matches!(
            tokens.spend(&admin.id, now, |_| true),
            Err(Refusal::NotBootstrap { .. })
        ));
        assert!(tokens
            .create(
                &TokenSpec {
                    uses: Some(0),
                    ..Default::default()
                },
                now
            )
            .is_err());
    }
}
