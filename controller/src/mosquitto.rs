//! `mosquitto-config`: the password file and ACL file that let a Mosquitto broker do
//! what the embedded broker cannot (per-client topic ACLs). The password file holds the
//! `$7$` hashes the controller already stores (never a secret): the controller, every
//! enrolled node, and the usable bootstrap, operator and admin tokens. The ACL confines
//! each node to `<prefix>/nodes/<node>/…`, gives the controller everything, operator and
//! admin tokens `cmd/#` and `status/#`, and an enrolling client (any login, by its
//! client id) only its own `enrol/<client-id>/request` and `…/reply`.
//!
//! Rendering is pure; `write` puts both files into a directory atomically, readable by
//! the `mosquitto` user (Mosquitto drops root to it before reading them).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use punnet_api::enrol::{token_username, CONTROLLER_USERNAME};

use crate::acl;
use crate::identity::NodeIdentity;
use crate::tokens::{Role, TokenRecord};

pub const PASSWORD_FILE: &str = "passwd";
pub const ACL_FILE: &str = "acl";

/// What goes into the files.
pub struct Logins<'a> {
    pub scope: &'a acl::Scope,
    /// `$7$` hash of the controller's password.
    pub controller_hash: String,
    pub nodes: &'a [NodeIdentity],
    pub tokens: &'a [TokenRecord],
    pub now: DateTime<Utc>,
}

impl Logins<'_> {
    /// Tokens that may log in to the broker now: read-only ones never do, and expired
    /// or used-up ones no longer (a used-up bootstrap token stays for its
    /// [`LOGIN_GRACE`](crate::tokens::LOGIN_GRACE), until the files are next written).
    fn broker_tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens
            .iter()
            .filter(|t| t.role != Role::ReadOnly && t.may_log_in(self.now).is_ok())
    }

    /// `username:hash` lines.
    pub fn password_file(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{CONTROLLER_USERNAME}:{}", self.controller_hash);
        for n in self.nodes {
            let _ = writeln!(out, "{}:{}", n.node, n.mqtt_hash);
        }
        for t in self.broker_tokens() {
            let _ = writeln!(out, "{}:{}", token_username(&t.id), t.mqtt_hash);
        }
        out
    }

    pub fn acl_file(&self) -> String {
        let mut out = String::from(
            "# Written by punnet-controller (mosquitto-config); rewritten on every enrolment.\n\
             # Any login may enrol, confined to the topics named by its own client id.\n",
        );
        let rules = |out: &mut String, keyword: &str, rules: Vec<acl::Rule>| {
            for r in rules {
                let _ = writeln!(out, "{keyword} {} {}", r.access.keyword(), r.filter);
            }
            out.push('\n');
        };
        rules(
            &mut out,
            "pattern",
            acl::enrol_rules(&self.scope.prefix, "%c"),
        );
        let _ = writeln!(out, "user {CONTROLLER_USERNAME}\ntopic readwrite #\n");
        for n in self.nodes {
            let _ = writeln!(out, "user {}", n.node);
            rules(
                &mut out,
                "topic",
                acl::node_rules(&self.scope.prefix, &n.node),
            );
        }
        for t in self.broker_tokens() {
            if matches!(t.role, Role::Operator | Role::Admin) {
                let _ = writeln!(out, "user {}", token_username(&t.id));
                rules(&mut out, "topic", acl::operator_rules(self.scope));
            }
        }
        out
    }
}

/// Writes `DIR/passwd` and `DIR/acl` (each atomically, mode 0640, group `mosquitto`
/// when that user exists, so the broker can read them after dropping root). Returns
/// the two paths.
pub fn write(dir: &Path, logins: &Logins<'_>) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let owner = mosquitto_ids();
    let mut paths = Vec::new();
    for (name, text) in [
        (PASSWORD_FILE, logins.password_file()),
        (ACL_FILE, logins.acl_file()),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
        }
        std::fs::rename(&tmp, &path)?;
        paths.push(path);
    }
    let acl = paths.pop().expect("two files");
    let passwd = paths.pop().expect("two files");
    Ok((passwd, acl))
}

/// Renders and writes the files from the live registries (what the controller does on
/// every change with `--mosquitto-config DIR`); then sends SIGHUP to the pid in
/// `pid_file`, if given, so that Mosquitto reloads them.
pub fn sync(
    dir: &Path,
    pid_file: Option<&Path>,
    scope: &acl::Scope,
    controller_password: &str,
    tokens: &crate::tokens::Tokens,
    nodes: &crate::identity::NodeIdentities,
) -> Result<(), String> {
    // Enrolments run in parallel; their rewrites must not interleave in the temp files.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = nodes.list().map_err(|e| e.to_string())?;
    let tokens = tokens.list().map_err(|e| e.to_string())?;
    let logins = Logins {
        scope,
        controller_hash: punnet_api::enrol::mosquitto_hash(controller_password, rand::random()),
        nodes: &nodes,
        tokens: &tokens,
        now: Utc::now(),
    };
    write(dir, &logins).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(pid_file) = pid_file {
        let text = std::fs::read_to_string(pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("{}: not a pid", pid_file.display()))?;
        // SAFETY: kill(2) with a pid read from the file and a valid signal number.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            return Err(format!(
                "cannot signal Mosquitto (pid {pid} from {}): {}",
                pid_file.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// `punnet-controller mosquitto-config DIR` on a stopped controller's data dir.
pub fn write_offline(data_dir: &Path, dir: &Path, scope: &acl::Scope) -> Result<(), String> {
    let db_dir = crate::backup::db_dir(data_dir);
    let db = sled::Config::new().path(&db_dir).open().map_err(|e| {
        format!(
            "cannot open the database in {} ({e}); while the controller runs, start it with --mosquitto-config {} instead (it rewrites the files on every change)",
            db_dir.display(),
            dir.display()
        )
    })?;
    let admin = crate::auth_token::load_or_create(data_dir).map_err(|e| e.to_string())?;
    let tokens = crate::tokens::Tokens::open(
        &admin,
        db.open_tree(crate::tokens::TREE)
            .map_err(|e| e.to_string())?,
    );
    let nodes = crate::identity::NodeIdentities::open(
        db.open_tree(crate::identity::TREE)
            .map_err(|e| e.to_string())?,
    );
    let password = crate::identity::controller_password(data_dir).map_err(|e| e.to_string())?;
    sync(dir, None, scope, &password, &tokens, &nodes)
}

/// The `mosquitto` user's uid and gid from /etc/passwd, if it exists.
fn mosquitto_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd_entry(&passwd, "mosquitto")
}

fn passwd_entry(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::enrol::mosquitto_hash;

    fn token(id: &str, role: Role, uses: Option<u32>) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            role,
            verifier: String::new(),
            mqtt_hash: mosquitto_hash(id, [0; 12]),
            uses_left: uses,
            expires: None,
            labels: Default::default(),
            created: Utc::now(),
            last_used: None,
        }
    }

    #[test]
    fn files_confine_each_login() {
        let nodes = vec![NodeIdentity {
            node: "pi-1".into(),
            mqtt_hash: mosquitto_hash("x", [1; 12]),
            public_key: String::new(),
            token_id: None,
            enrolled: Utc::now(),
        }];
        let tokens = vec![
            token("aaaaaaaaaaaa", Role::Operator, None),
            token("bbbbbbbbbbbb", Role::Bootstrap, Some(0)),
            token("cccccccccccc", Role::ReadOnly, None),
            token("dddddddddddd", Role::Bootstrap, Some(3)),
        ];
        let scope = acl::Scope::new("punnet/v1", None);
        let l = Logins {
            scope: &scope,
            controller_hash: mosquitto_hash("c", [2; 12]),
            nodes: &nodes,
            tokens: &tokens,
            now: Utc::now(),
        };
        let pw = l.password_file();
        assert!(pw.starts_with("punnet-controller:$7$101$"), "{pw}");
        assert!(pw.contains("\npi-1:$7$"));
        assert!(pw.contains("\npunnet-token-aaaaaaaaaaaa:$7$"));
        assert!(pw.contains("\npunnet-token-dddddddddddd:$7$"));
        assert!(!pw.contains("bbbbbbbbbbbb"), "used up");
        assert!(!pw.contains("cccccccccccc"), "read-only");
        let acl = l.acl_file();
        assert!(acl.contains("user pi-1\ntopic read punnet/v1/nodes/pi-1/desired\n"));
        assert!(acl.contains("user punnet-token-aaaaaaaaaaaa\ntopic readwrite punnet/v1/cmd/#"));
        assert!(!acl.contains("user punnet-token-dddddddddddd"));
        assert!(acl.contains("pattern write punnet/v1/enrol/%c/request"));
    }

    #[test]
    fn finds_the_mosquitto_user() {
        let p = "root:x:0:0::/root:/bin/sh\nmosquitto:x:101:102::/var/lib/mosquitto:/usr/sbin/nologin\n";
        assert_eq!(passwd_entry(p, "mosquitto"), Some((101, 102)));
        assert_eq!(passwd_entry(p, "nobody"), None);
    }
}
