//! What the network layer needs to know about a Pod, and what it reports back.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use punnet_api::pod::Pod;
use serde::{Deserialize, Serialize};

use super::NetworkError;

/// One Pod as the network sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetSpec {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub host_ports: Vec<HostPort>,
}

/// A `hostPort` published on the node through CNI portmap (DNAT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only this host address; `None` means every address of the node.
    pub host_ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// portmap's spelling.
    pub fn as_cni(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A set-up Pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetStatus {
    /// Give it to the containers as the OCI `network` namespace `path`.
    pub netns_path: PathBuf,
    /// For `status.podIP`.
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The interface inside the namespace (`eth0`).
    pub interface: String,
    pub mac: Option<String>,
    /// True when this call made a new namespace. Containers started before in an older
    /// namespace of this Pod (one lost to a reboot or removed by hand) are not in it and
    /// must be restarted to be on the network.
    pub new_namespace: bool,
}

impl PodNetSpec {
    /// From a Pod bound to this node: every app container's `hostPort`s (init containers
    /// publish none, as in Kubernetes).
    pub fn from_pod(pod: &Pod) -> Result<PodNetSpec, NetworkError> {
        let namespace = pod.metadata.namespace_or_default().to_string();
        let name = pod.metadata.name.clone();
        let label = format!("{namespace}/{name}");
        let uid = pod
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| NetworkError::MissingUid { pod: label.clone() })?;
        let mut host_ports = Vec::new();
        for port in pod.spec.containers.iter().flat_map(|c| c.ports.iter()) {
            let Some(host_port) = port.host_port else {
                continue;
            };
            let to_u16 = |p: i32| {
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(NetworkError::InvalidPort {
                        pod: label.clone(),
                        port: p,
                    })
            };
            let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
                p if p.eq_ignore_ascii_case("TCP") => Protocol::Tcp,
                p if p.eq_ignore_ascii_case("UDP") => Protocol::Udp,
                other => {
                    return Err(NetworkError::UnsupportedProtocol {
                        pod: label,
                        port: host_port,
                        protocol: other.to_string(),
                    })
                }
            };
            host_ports.push(HostPort {
                host_port: to_u16(host_port)?,
                container_port: to_u16(port.container_port)?,
                protocol,
                host_ip: None,
            });
        }
        Ok(PodNetSpec {
            uid,
            namespace,
            name,
            host_ports,
        })
    }

    /// How errors name the Pod.
    pub(crate) fn label(&self) -> String {
        format!("{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn host_ports_are_collected_with_their_protocols() {
        let p = pod(r#"
metadata: {name: web, uid: u-1}
spec:
  containers:
  - name: a
    image: x
    ports:
    - {containerPort: 80, hostPort: 8080}
    - {containerPort: 81}
  - name: b
    image: x
    ports:
    - {containerPort: 53, hostPort: 5353, protocol: UDP}
"#);
        let spec = PodNetSpec::from_pod(&p).unwrap();
        assert_eq!(spec.uid, "u-1");
        assert_eq!(spec.namespace, "default");
        assert_eq!(
            spec.host_ports,
            vec![
                HostPort {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: None
                },
                HostPort {
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: None
                },
            ]
        );
    }

    #[test]
    fn missing_uid_sctp_and_bad_ports_are_errors() {
        let p = pod("metadata: {name: web}\nspec: {containers: []}");
        assert!(matches!(
            PodNetSpec::from_pod(&p),
            Err(NetworkError::MissingUid { .. })
        ));
        let p = pod(r#"
metadata: {name: web, uid: u}
spec: {containers: [{name: a, image: x, ports: [{containerPort: 9, hostPort: 9, protocol: SCTP}]}]}
"#);
        assert!(matches!(
            PodNetSpec::from_pod(&p),
            Err(NetworkError::UnsupportedProtocol { .. })
        ));
        let p = pod(r#"
metadata: {name: web, uid: u}
spec: {containers: [{name: a, image: x, ports: [{containerPort: 9, hostPort: 70000}]}]}
"#);
        assert!(matches!(
            PodNetSpec::from_pod(&p),
            Err(NetworkError::InvalidPort { port: 70000, .. })
        ));
    }
}
