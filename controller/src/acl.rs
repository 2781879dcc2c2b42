//! Which topics each broker login may publish and subscribe to: one table, rendered as
//! Mosquitto's ACL file (`mosquitto-config`) and enforced for the embedded broker by its
//! gate (`broker_gate`), so the two brokers confine clients the same way.
//!
//! A node reads only its own desired state and log requests and writes only its own
//! status, presence and log replies; operator and admin tokens command (`cmd/#`) and
//! read the JSON status topics; any login may enrol under its own client id; the
//! controller may do anything. Client ids are part of it: rumqttd and Mosquitto drop an
//! existing session when another connection takes its client id, so the ids of the
//! agents (`punnet-agent-<node>`) and of the controller are reserved to their owners.

use crate::identity::Principal;
use crate::tokens::Role;

/// What a rule lets a login do with the topics its filter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    /// Mosquitto's spelling.
    pub fn keyword(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "readwrite",
        }
    }

    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One grant: `access` to every topic `filter` matches (MQTT wildcards allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub access: Access,
    pub filter: String,
}

fn rule(access: Access, filter: String) -> Rule {
    Rule { access, filter }
}

fn base(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

/// A node's topics, all under `<prefix>/nodes/<node>/`.
pub fn node_rules(prefix: &str, node: &str) -> Vec<Rule> {
    let n = format!("{}/nodes/{node}", base(prefix));
    vec![
        rule(Access::Read, format!("{n}/desired")),
        rule(Access::Read, format!("{n}/logs/request")),
        rule(Access::Write, format!("{n}/status")),
        rule(Access::ReadWrite, format!("{n}/online")),
        rule(Access::Write, format!("{n}/logs/reply/#")),
    ]
}

/// The topic spaces the rules name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub prefix: String,
    /// Home Assistant's discovery prefix, when the controller publishes discovery
    /// configs there (`--homeassistant`): operators (Home Assistant's login) read it.
    pub homeassistant: Option<String>,
}

impl Scope {
    pub fn new(prefix: &str, homeassistant: Option<&str>) -> Scope {
        Scope {
            prefix: base(prefix).to_string(),
            homeassistant: homeassistant.map(|h| base(h).to_string()),
        }
    }
}

/// An operator's or admin's topics: the command API (replies come under `cmd/reply/`),
/// the JSON status topics, and Home Assistant's discovery configs.
pub fn operator_rules(scope: &Scope) -> Vec<Rule> {
    let p = &scope.prefix;
    let mut rules = vec![
        rule(Access::ReadWrite, format!("{p}/cmd/#")),
        rule(Access::Read, format!("{p}/status/#")),
    ];
    if let Some(ha) = &scope.homeassistant {
        rules.push(rule(Access::Read, format!("{ha}/#")));
    }
    rules
}

/// Any login's enrolment topics, named by its client id (Mosquitto writes `%c`).
pub fn enrol_rules(prefix: &str, client_id: &str) -> Vec<Rule> {
    let p = base(prefix);
    vec![
        rule(Access::Write, format!("{p}/enrol/{client_id}/request")),
        rule(Access::Read, format!("{p}/enrol/{client_id}/reply")),
    ]
}

/// Client ids the controller connects with: `punnet-controller`, `…-enrol`, `…-api`.
const CONTROLLER_IDS: &str = "punnet-controller";
/// The agents' client ids: `punnet-agent-<node>`.
const AGENT_IDS: &str = "punnet-agent-";

/// What one connection may do, fixed at its CONNECT.
#[derive(Debug, Clone)]
pub struct Grants {
    everything: bool,
    rules: Vec<Rule>,
}

impl Grants {
    pub fn for_login(principal: &Principal, scope: &Scope, client_id: &str) -> Grants {
        let mut rules = enrol_rules(&scope.prefix, client_id);
        match principal {
            Principal::Controller => {
                return Grants {
                    everything: true,
                    rules,
                }
            }
            Principal::Node(node) => rules.extend(node_rules(&scope.prefix, node)),
            Principal::Token { role, .. } => {
                if matches!(role, Role::Operator | Role::Admin) {
                    rules.extend(operator_rules(scope));
                }
            }
        }
        Grants {
            everything: false,
            rules,
        }
    }

    /// Whether a PUBLISH to `topic` (or a last will on it) is allowed.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.everything
            || self
                .rules
                .iter()
                .any(|r| r.access.writes() && rumqttc::matches(topic, &r.filter))
    }

    /// Whether subscribing to `filter` is allowed: every topic it can match must be
    /// readable (`nodes/+/desired` is refused to a node even though its own matches).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.everything
            || self
                .rules
                .iter()
                .any(|r| r.access.reads() && filter_within(filter, &r.filter))
    }
}

/// Why `principal` may not connect as `client_id`, if it may not.
pub fn client_id_refusal(principal: &Principal, client_id: &str) -> Option<String> {
    if let Some(node) = client_id.strip_prefix(AGENT_IDS) {
        return match principal {
            Principal::Node(own) if own == node => None,
            Principal::Controller => None,
            _ => Some(format!(
                "client id {client_id:?} belongs to node {node:?}; use another client id"
            )),
        };
    }
    if client_id.starts_with(CONTROLLER_IDS) && *principal != Principal::Controller {
        return Some(format!(
            "client id {client_id:?} is reserved for the controller; use another client id"
        ));
    }
    None
}

/// Whether every topic `filter` matches is also matched by `allowed`: level by level, a
/// `#` in `allowed` covers the rest, a `+` covers one level (but not a `#`), and a
/// literal covers only the same literal.
pub fn filter_within(filter: &str, allowed: &str) -> bool {
    let mut f = filter.split('/');
    let mut a = allowed.split('/');
    loop {
        match (f.next(), a.next()) {
            (None, None) => return true,
            (_, Some("#")) => return true,
            (Some("#"), _) => return false,
            (Some(_), Some("+")) => {}
            (Some(fl), Some(al)) if fl == al && fl != "+" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new("punnet/v1", None)
    }

    fn node(n: &str) -> Principal {
        Principal::Node(n.to_string())
    }

    fn token(role: Role) -> Principal {
        Principal::Token {
            id: "aaaaaaaaaaaa".into(),
            role,
        }
    }

    #[test]
    fn a_node_reaches_only_its_own_topics() {
        let g = Grants::for_login(&node("pi-1"), &scope(), "punnet-agent-pi-1");
        assert!(g.may_subscribe("punnet/v1/nodes/pi-1/desired"));
        assert!(g.may_subscribe("punnet/v1/nodes/pi-1/logs/request"));
        assert!(g.may_publish("punnet/v1/nodes/pi-1/status"));
        assert!(g.may_publish("punnet/v1/nodes/pi-1/online"));
        assert!(g.may_publish("punnet/v1/nodes/pi-1/logs/reply/abc"));

        assert!(!g.may_subscribe("punnet/v1/nodes/pi-2/desired"));
        assert!(!g.may_subscribe("punnet/v1/nodes/+/desired"));
        assert!(!g.may_subscribe("punnet/v1/#"));
        assert!(!g.may_subscribe("#"));
        assert!(!g.may_publish("punnet/v1/nodes/pi-2/status"));
        assert!(!g.may_publish("punnet/v1/nodes/pi-1/desired"));
        assert!(!g.may_publish("punnet/v1/cmd/apply"));
        assert!(!g.may_subscribe("punnet/v1/nodes/pi-1/status"));
    }

    #[test]
    fn operators_command_bootstrap_tokens_only_enrol() {
        let ha = Scope::new("punnet/v1/", Some("homeassistant"));
        let op = Grants::for_login(&token(Role::Operator), &ha, "nodered");
        assert!(op.may_publish("punnet/v1/cmd/apply"));
        assert!(op.may_subscribe("punnet/v1/cmd/reply/#"));
        assert!(op.may_subscribe("punnet/v1/status/#"));
        assert!(!op.may_subscribe("punnet/v1/nodes/+/desired"));
        assert!(
            op.may_subscribe("homeassistant/#"),
            "Home Assistant reads discovery"
        );
        assert!(!op.may_publish("homeassistant/sensor/x/config"));
        let no_ha = Grants::for_login(&token(Role::Operator), &scope(), "nodered");
        assert!(!no_ha.may_subscribe("homeassistant/#"));

        let boot = Grants::for_login(&token(Role::Bootstrap), &scope(), "punnet-enrol-1f");
        assert!(boot.may_publish("punnet/v1/enrol/punnet-enrol-1f/request"));
        assert!(boot.may_subscribe("punnet/v1/enrol/punnet-enrol-1f/reply"));
        assert!(!boot.may_subscribe("punnet/v1/enrol/+/reply"));
        assert!(!boot.may_publish("punnet/v1/enrol/other/request"));
        assert!(!boot.may_publish("punnet/v1/cmd/apply"));

        let ctl = Grants::for_login(&Principal::Controller, &scope(), "punnet-controller");
        assert!(ctl.may_subscribe("#") && ctl.may_publish("punnet/v1/nodes/pi-1/desired"));
    }

    #[test]
    fn filters_within_filters() {
        assert!(filter_within("a/b/c", "a/#"));
        assert!(filter_within("a/+/c", "a/#"));
        assert!(filter_within("a/#", "a/#"));
        assert!(filter_within("a/b", "a/+"));
        assert!(filter_within("a/+", "a/+"));
        assert!(!filter_within("a/#", "a/+"));
        assert!(!filter_within("a/+", "a/b"));
        assert!(!filter_within("a/b/c", "a/+"));
        assert!(!filter_within("a", "a/b"));
        assert!(filter_within("a", "a/#"), "`a/#` also matches `a` itself");
    }

    #[test]
    fn reserved_client_ids() {
        assert_eq!(client_id_refusal(&node("pi-1"), "punnet-agent-pi-1"), None);
        assert!(client_id_refusal(&node("pi-1"), "punnet-agent-pi-2")
            .unwrap()
            .contains("belongs to node \"pi-2\""));
        assert!(client_id_refusal(&token(Role::Operator), "punnet-agent-pi-2").is_some());
        assert!(client_id_refusal(&token(Role::Admin), "punnet-controller-api").is_some());
        assert_eq!(
            client_id_refusal(&Principal::Controller, "punnet-controller"),
            None
        );
        assert_eq!(
            client_id_refusal(&token(Role::Bootstrap), "punnet-enrol-00"),
            None
        );
    }
}
