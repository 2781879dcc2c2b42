//! Pod networking with the standard CNI plugins: each Pod that does not use the host's
//! network gets its own network namespace, bind-mounted at `<netns_dir>/<uid>` so it
//! outlives the agent, wired up by `bridge` (+ `host-local` addresses from the node's Pod
//! CIDR), `portmap` (hostPorts) and `loopback`. What was set up is saved per Pod so that
//! teardown works from disk alone, after an agent crash too.
//!
//! The flow for the agent: [`PodNetwork::setup`] before the Pod's first container starts
//! (containers join [`PodNetStatus::netns_path`]), [`PodNetwork::teardown`] after its last
//! container is gone, and on start [`PodNetwork::list`] to tear down Pods no longer
//! desired.

mod cni;
mod config;
mod conflist;
mod error;
pub mod leftovers;
mod netns;
mod pod_network;
mod spec;
mod state;

pub use config::{NetworkConfig, DEFAULT_NETNS_DIR, DEFAULT_PLUGIN_DIRS};
pub use error::NetworkError;
pub use pod_network::PodNetwork;
pub use spec::{HostPort, PodNetSpec, PodNetStatus, Protocol};
