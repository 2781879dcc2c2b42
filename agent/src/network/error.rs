//! The one error type of the Pod network layer: each variant names the Pod (or the
//! setting) it is about and says what to do.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network name {name:?} is not usable as a CNI network name: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidNetworkName { name: String },

    #[error("bridge name {name:?} is not a usable interface name: use 1 to 15 letters, digits, '_', '.' or '-'")]
    InvalidBridgeName { name: String },

    #[error("pod uid {uid:?} cannot name a network namespace: a uid must be 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit")]
    InvalidUid { uid: String },

    #[error("pod {pod}: has no metadata.uid; the controller sets one on every Pod it binds")]
    MissingUid { pod: String },

    #[error("pod {pod}: hostPort {port}: protocol {protocol:?} is not supported; use TCP or UDP")]
    UnsupportedProtocol {
        pod: String,
        port: i32,
        protocol: String,
    },

    #[error("pod {pod}: port {port} is outside 1-65535")]
    InvalidPort { pod: String, port: i32 },

    #[error("Pod CIDR {cidr:?} cannot be used: {reason}; the node's podCIDR must be an IPv4 range with room for a gateway and Pods, like 10.42.0.0/24")]
    InvalidCidr { cidr: String, reason: String },

    #[error("pod {pod}: this node has no Pod CIDR yet: wait until the controller assigns the node's spec.podCIDR, or run the Pod with hostNetwork: true")]
    NoPodCidr { pod: String },

    #[error("{}CNI plugin {plugin} not found in {dirs}: install containernetworking-plugins (or point the agent's CNI plugin directories at it)", pod_prefix(.pod))]
    PluginMissing {
        pod: Option<String>,
        plugin: String,
        dirs: String,
    },

    #[error("pod {pod}: no free address left in Pod CIDR {cidr} ({plugin}: {msg}): delete Pods on this node or give the node a larger podCIDR")]
    AddressesExhausted {
        pod: String,
        cidr: String,
        plugin: String,
        msg: String,
    },

    #[error("pod {pod}: CNI {command} of plugin {plugin} failed (code {code}): {msg}{}", details_suffix(.details))]
    Plugin {
        pod: String,
        command: &'static str,
        plugin: String,
        code: u64,
        msg: String,
        details: Option<String>,
    },

    #[error("pod {pod}: CNI plugin {plugin} could not be started for {command}: {source}")]
    PluginSpawn {
        pod: String,
        command: &'static str,
        plugin: String,
        source: io::Error,
    },

    #[error("pod {pod}: CNI {command} of plugin {plugin} did not finish within {timeout:?} and was killed; look for a stuck iptables lock (`iptables -L` hanging) or a hung plugin")]
    PluginTimeout {
        pod: String,
        command: &'static str,
        plugin: String,
        timeout: Duration,
    },

    #[error("pod {pod}: CNI {command} of plugin {plugin} exited with {status} without a CNI error on its output; its stderr: {stderr:?}")]
    PluginCrashed {
        pod: String,
        command: &'static str,
        plugin: String,
        status: String,
        stderr: String,
    },

    #[error("pod {pod}: CNI {command} of plugin {plugin} printed a result that is not CNI JSON ({reason}); output: {output:?}")]
    BadResult {
        pod: String,
        command: &'static str,
        plugin: String,
        reason: String,
        output: String,
    },

    #[error("pod {pod}: the CNI result gives {ifname} no IPv4 address: {result}")]
    NoAddress {
        pod: String,
        ifname: String,
        result: String,
    },

    #[error("pod {pod}: cannot {action} network namespace {path}: {source}")]
    Netns {
        pod: String,
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("pod {pod}: cannot {action} network state file {path}: {source}")]
    State {
        pod: String,
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("network state file {path} is not valid ({source}); check the Pod's namespace and iptables rules by hand, then remove the file")]
    CorruptState {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
}

fn pod_prefix(pod: &Option<String>) -> String {
    pod.as_ref()
        .map(|p| format!("pod {p}: "))
        .unwrap_or_default()
}

fn details_suffix(details: &Option<String>) -> String {
    details
        .as_ref()
        .filter(|d| !d.is_empty())
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_missing_names_plugin_dirs_and_fix() {
        let e = NetworkError::PluginMissing {
            pod: None,
            plugin: "bridge".into(),
            dirs: "/usr/lib/cni, /opt/cni/bin".into(),
        };
        assert_eq!(
            e.to_string(),
            "CNI plugin bridge not found in /usr/lib/cni, /opt/cni/bin: install containernetworking-plugins (or point the agent's CNI plugin directories at it)"
        );
        let e = NetworkError::PluginMissing {
            pod: Some("default/web".into()),
            plugin: "portmap".into(),
            dirs: "/usr/lib/cni".into(),
        };
        assert!(e
            .to_string()
            .starts_with("pod default/web: CNI plugin portmap"));
    }

    #[test]
    fn plugin_error_carries_msg_and_details() {
        let e = NetworkError::Plugin {
            pod: "default/web".into(),
            command: "ADD",
            plugin: "bridge".into(),
            code: 1,
            msg: "incompatible CNI versions".into(),
            details: Some("config is \"9.9.9\"".into()),
        };
        assert_eq!(
            e.to_string(),
            "pod default/web: CNI ADD of plugin bridge failed (code 1): incompatible CNI versions (config is \"9.9.9\")"
        );
    }
}
