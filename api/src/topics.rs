//! MQTT topic names, all under one configurable prefix (default `punnet/v1`).

/// Largest MQTT packet either side sends or accepts. rumqtt's default is 10 KiB each
/// way and an oversized publish is silently lost, so both sides set this explicitly.
pub const MAX_PACKET_SIZE: usize = 4 * 1024 * 1024;

pub const DEFAULT_PREFIX: &str = "punnet/v1";

/// Payloads of the retained `online` topic (plain text, readable with mosquitto_sub).
pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new(DEFAULT_PREFIX)
    }
}

impl Topics {
    pub fn new(prefix: &str) -> Topics {
        Topics {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Controller → agent, retained, QoS 1: the node's whole desired Pod set.
    pub fn desired(&self, node: &str) -> String {
        format!("{}/nodes/{node}/desired", self.prefix)
    }

    /// Agent → controller, QoS 1: node facts and Pod states (also the heartbeat).
    pub fn status(&self, node: &str) -> String {
        format!("{}/nodes/{node}/status", self.prefix)
    }

    /// Retained `online` / `offline`; the agent's last will writes `offline`.
    pub fn online(&self, node: &str) -> String {
        format!("{}/nodes/{node}/online", self.prefix)
    }

    /// Controller → agent: a request for a container's log.
    pub fn log_request(&self, node: &str) -> String {
        format!("{}/nodes/{node}/logs/request", self.prefix)
    }

    /// Agent → controller: the chunks answering log request `id`.
    pub fn log_reply(&self, node: &str, id: &str) -> String {
        format!("{}/nodes/{node}/logs/reply/{id}", self.prefix)
    }

    pub fn all_status(&self) -> String {
        format!("{}/nodes/+/status", self.prefix)
    }

    pub fn all_online(&self) -> String {
        format!("{}/nodes/+/online", self.prefix)
    }

    pub fn all_log_replies(&self) -> String {
        format!("{}/nodes/+/logs/reply/+", self.prefix)
    }

    /// The node name in a `<prefix>/nodes/<node>/...` topic.
    pub fn node_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix("/nodes/")?;
        let node = rest.split('/').next()?;
        (!node.is_empty()).then_some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_node_extraction() {
        let t = Topics::new("punnet/v1/");
        assert_eq!(t.desired("pi-1"), "punnet/v1/nodes/pi-1/desired");
        assert_eq!(t.node_of("punnet/v1/nodes/pi-1/status"), Some("pi-1"));
        assert_eq!(t.node_of("other/nodes/pi-1/status"), None);
        assert_eq!(t.log_reply("n", "42"), "punnet/v1/nodes/n/logs/reply/42");
    }
}
