//! Settings of the node's Pod network: names, the Pod CIDR, where the CNI plugins are and
//! where state lives. Validation of those settings and of the Pod CIDR is pure.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::NetworkError;

/// Debian's containernetworking-plugins, then the upstream release's usual place.
pub const DEFAULT_PLUGIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];
/// Under /run so that a reboot, which kills every Pod, also forgets their namespaces.
pub const DEFAULT_NETNS_DIR: &str = "/run/punnet/netns";

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// The CNI network name: it names host-local's reservations and the iptables chains
    /// (`name: "punnet" id: ...` comments), so it must stay the same across restarts.
    pub network_name: String,
    /// The Linux bridge the Pods' veths join; its address is the Pods' gateway.
    pub bridge: String,
    /// The node's Pod range (`10.42.3.0/24`) from the controller; `None` until assigned.
    pub pod_cidr: Option<String>,
    /// Searched in order for each plugin; passed to the plugins as `CNI_PATH`.
    pub plugin_dirs: Vec<PathBuf>,
    /// Per-Pod saved state (`<uid>.json`), normally `<data-dir>/network`.
    pub state_dir: PathBuf,
    /// host-local's reservations (`<ipam_dir>/<network_name>/<ip>`). Kept next to the
    /// state files so both survive or vanish together.
    pub ipam_dir: PathBuf,
    /// Where each Pod's namespace is bind-mounted as `<netns_dir>/<uid>`.
    pub netns_dir: PathBuf,
    /// A plugin that takes longer is killed (it may be stuck on the xtables lock).
    pub plugin_timeout: Duration,
}

impl NetworkConfig {
    /// The defaults for an agent whose data dir is `data_dir`: network `punnet` on bridge
    /// `punnet0`, no Pod CIDR yet.
    pub fn new(data_dir: &Path) -> NetworkConfig {
        let state_dir = data_dir.join("network");
        NetworkConfig {
            network_name: "punnet".into(),
            bridge: "punnet0".into(),
            pod_cidr: None,
            plugin_dirs: DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
            ipam_dir: state_dir.join("ipam"),
            state_dir,
            netns_dir: PathBuf::from(DEFAULT_NETNS_DIR),
            plugin_timeout: Duration::from_secs(60),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), NetworkError> {
        if !is_cni_name(&self.network_name) {
            return Err(NetworkError::InvalidNetworkName {
                name: self.network_name.clone(),
            });
        }
        let bridge_ok = !self.bridge.is_empty()
            && self.bridge.len() <= 15
            && self
                .bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !bridge_ok {
            return Err(NetworkError::InvalidBridgeName {
                name: self.bridge.clone(),
            });
        }
        Ok(())
    }

    /// The plugin dirs as the errors show them.
    pub(crate) fn plugin_dirs_text(&self) -> String {
        self.plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The CNI spec's rule for network names and container ids.
pub(crate) fn is_cni_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A Pod uid also names a file (state, namespace), so it is held to the CNI container id
/// rule, which rules out `/` and a leading `.`.
pub(crate) fn check_uid(uid: &str) -> Result<(), NetworkError> {
    if uid.len() <= 100 && is_cni_name(uid) {
        Ok(())
    } else {
        Err(NetworkError::InvalidUid {
            uid: uid.to_string(),
        })
    }
}

/// A parsed, usable Pod range: the network address, with the gateway at `.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PodCidr {
    pub net: Ipv4Net,
}

impl PodCidr {
    /// Accepts `10.42.3.0/24`; host bits (`10.42.3.7/24`) are cleared. Needs room for
    /// the gateway and at least one Pod besides the network and broadcast addresses.
    pub fn parse(text: &str) -> Result<PodCidr, NetworkError> {
        let invalid = |reason: &str| NetworkError::InvalidCidr {
            cidr: text.to_string(),
            reason: reason.to_string(),
        };
        let net: Ipv4Net = text
            .trim()
            .parse()
            .map_err(|_| invalid("not an IPv4 address/prefix"))?;
        if net.prefix_len() > 30 {
            return Err(invalid("the prefix is longer than /30"));
        }
        Ok(PodCidr { net: net.trunc() })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net.network()) + 1)
    }
}

impl std::fmt::Display for PodCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.net.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_puts_gateway_at_one() {
        let c = PodCidr::parse("10.42.3.0/24").unwrap();
        assert_eq!(c.to_string(), "10.42.3.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        let c = PodCidr::parse("10.42.3.77/24").unwrap();
        assert_eq!(c.to_string(), "10.42.3.0/24");
    }

    #[test]
    fn cidr_rejects_garbage_ipv6_and_tiny_ranges() {
        for bad in [
            "",
            "10.42.0.0",
            "fd00::/64",
            "10.42.0.0/31",
            "10.42.0.0/33",
            "x/24",
        ] {
            let e = PodCidr::parse(bad).unwrap_err();
            assert!(matches!(e, NetworkError::InvalidCidr { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn uids_that_could_escape_a_directory_are_refused() {
        check_uid("3f1c2b8e-1a2b-4c3d-8e9f-0123456789ab").unwrap();
        for bad in ["", "../etc", ".hidden", "a/b", "a b", &"x".repeat(101)] {
            assert!(check_uid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_validated() {
        let mut cfg = NetworkConfig::new(Path::new("/var/lib/punnet-agent"));
        cfg.validate().unwrap();
        assert_eq!(
            cfg.ipam_dir,
            Path::new("/var/lib/punnet-agent/network/ipam")
        );
        cfg.bridge = "a-bridge-name-too-long".into();
        assert!(matches!(
            cfg.validate(),
            Err(NetworkError::InvalidBridgeName { .. })
        ));
        cfg.bridge = "punnet0".into();
        cfg.network_name = "-x".into();
        assert!(matches!(
            cfg.validate(),
            Err(NetworkError::InvalidNetworkName { .. })
        ));
    }
}
