//! The CNI network configurations Punnet uses, and how one plugin's stdin is derived from
//! a configuration list the way the CNI spec says (name and cniVersion copied down,
//! `runtimeConfig` only for declared capabilities, `prevResult` from the chain). Pure.

use serde_json::{json, Map, Value};

use super::config::{NetworkConfig, PodCidr};
use super::spec::HostPort;

/// The newest version Debian's plugins (1.1.1) speak.
pub const CNI_VERSION: &str = "1.0.0";

/// `bridge` (gateway on the bridge, NAT for traffic leaving the Pod range, hairpin so a
/// Pod reaches itself through its own hostPort) with host-local addresses from the Pod
/// CIDR, then `portmap` when the Pod has hostPorts (most Pods have none, and portmap's
/// ADD and DEL cost more than the bridge's).
pub fn pod_conflist(cfg: &NetworkConfig, cidr: &PodCidr, host_ports: bool) -> Value {
    let mut list = json!({
        "cniVersion": CNI_VERSION,
        "name": cfg.network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": cfg.bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                // When the Pod CIDR changes the bridge's old gateway address must be
                // replaced; without this every ADD fails with "already has an IP address".
                "forceAddress": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": cfg.ipam_dir,
                    "ranges": [[{
                        "subnet": cidr.to_string(),
                        "gateway": cidr.gateway().to_string(),
                    }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
            },
        ],
    });
    if !host_ports {
        if let Some(plugins) = list["plugins"].as_array_mut() {
            plugins.truncate(1);
        }
    }
    list
}

/// The `lo` of the namespace (a new one starts with `lo` down).
pub fn loopback_config(cfg: &NetworkConfig) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": format!("{}-lo", cfg.network_name),
        "type": "loopback",
    })
}

/// The runtime's capability arguments: portMappings from the Pod's hostPorts.
pub fn runtime_config(ports: &[HostPort]) -> Value {
    let mappings: Vec<Value> = ports
        .iter()
        .map(|p| {
            let mut m = json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol.as_cni(),
            });
            if let Some(ip) = p.host_ip {
                m["hostIP"] = json!(ip.to_string());
            }
            m
        })
        .collect();
    json!({ "portMappings": mappings })
}

/// The plugin entries of a list (a single config counts as a list of one).
pub fn plugins(list: &Value) -> Vec<Value> {
    match list.get("plugins").and_then(Value::as_array) {
        Some(p) => p.clone(),
        None => vec![list.clone()],
    }
}

/// The stdin of one plugin of `list`: its entry with the list's `name` and
/// `cniVersion`, `runtimeConfig` holding only the capabilities it declares, and
/// `prevResult` when given.
pub fn plugin_stdin(
    list: &Value,
    plugin: &Value,
    runtime: &Value,
    prev_result: Option<&Value>,
) -> Value {
    let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
    for key in ["name", "cniVersion"] {
        if let Some(v) = list.get(key) {
            conf.insert(key.to_string(), v.clone());
        }
    }
    let mut rc = Map::new();
    if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
        for (cap, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = runtime.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    Value::Object(conf)
}

/// The plugin's executable name.
pub fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::super::spec::Protocol;
    use super::*;

    fn cfg() -> NetworkConfig {
        let mut c = NetworkConfig::new(Path::new("/data"));
        c.network_name = "net1".into();
        c.bridge = "br1".into();
        c
    }

    #[test]
    fn conflist_is_bridge_then_portmap_over_the_pod_cidr() {
        let cidr = PodCidr::parse("10.42.7.0/24").unwrap();
        let list = pod_conflist(&cfg(), &cidr, true);
        assert_eq!(list["name"], "net1");
        let p = plugins(&list);
        assert_eq!(
            p.iter().map(plugin_type).collect::<Vec<_>>(),
            ["bridge", "portmap"]
        );
        assert_eq!(p[0]["bridge"], "br1");
        assert_eq!(p[0]["isGateway"], true);
        assert_eq!(p[0]["ipMasq"], true);
        assert_eq!(p[0]["hairpinMode"], true);
        assert_eq!(p[0]["ipam"]["dataDir"], "/data/network/ipam");
        assert_eq!(p[0]["ipam"]["ranges"][0][0]["subnet"], "10.42.7.0/24");
        assert_eq!(p[0]["ipam"]["ranges"][0][0]["gateway"], "10.42.7.1");
        assert_eq!(p[0]["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(p[1]["capabilities"]["portMappings"], true);
        let without = plugins(&pod_conflist(&cfg(), &cidr, false));
        assert_eq!(
            without.iter().map(plugin_type).collect::<Vec<_>>(),
            ["bridge"]
        );
    }

    #[test]
    fn plugin_stdin_follows_the_spec() {
        let cidr = PodCidr::parse("10.42.7.0/24").unwrap();
        let list = pod_conflist(&cfg(), &cidr, true);
        let rc = runtime_config(&[
            HostPort {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            },
            HostPort {
                host_port: 5353,
                container_port: 53,
                protocol: Protocol::Udp,
                host_ip: Some(Ipv4Addr::new(192, 168, 1, 2)),
            },
        ]);
        let p = plugins(&list);

        // bridge declares no capability: no runtimeConfig; first plugin: no prevResult.
        let bridge = plugin_stdin(&list, &p[0], &rc, None);
        assert_eq!(bridge["name"], "net1");
        assert_eq!(bridge["cniVersion"], CNI_VERSION);
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());

        let prev = json!({"cniVersion": CNI_VERSION, "ips": []});
        let portmap = plugin_stdin(&list, &p[1], &rc, Some(&prev));
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"],
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.168.1.2"},
            ])
        );
    }

    #[test]
    fn a_single_config_is_a_list_of_one() {
        let lo = loopback_config(&cfg());
        let p = plugins(&lo);
        assert_eq!(p.len(), 1);
        let stdin = plugin_stdin(&lo, &p[0], &json!({}), None);
        assert_eq!(stdin, lo);
        assert_eq!(plugin_type(&p[0]), "loopback");
    }
}
