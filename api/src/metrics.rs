//! The resource metrics API (`metrics.k8s.io/v1beta1`, as metrics-server serves it):
//! the latest CPU and memory use of each node and of each running Pod's containers, so
//! `punnet top` and `kubectl top` work. A node's entry also carries the board figures
//! a fleet needs (disk, temperature, throttling) under `punnet`, a field other
//! clients ignore.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{ListMeta, ObjectMeta, Time};

pub const METRICS_GROUP: &str = "metrics.k8s.io";
pub const METRICS_API_VERSION: &str = "metrics.k8s.io/v1beta1";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetrics {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// When the figures were measured.
    #[serde(default)]
    pub timestamp: Option<Time>,
    /// The span the CPU figure is averaged over (`10s`).
    #[serde(default)]
    pub window: String,
    /// `cpu` (`250m`) and `memory` (`312Mi`) in use.
    #[serde(default)]
    pub usage: BTreeMap<String, String>,
    #[serde(default)]
    pub punnet: Option<NodeFigures>,
}

/// What a board reports beyond CPU and memory use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFigures {
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub memory_total_bytes: u64,
    #[serde(default)]
    pub memory_available_bytes: u64,
    #[serde(default)]
    pub disk_total_bytes: u64,
    #[serde(default)]
    pub disk_free_bytes: u64,
    #[serde(default)]
    pub temperature_millicelsius: Option<i64>,
    /// Raspberry Pi firmware throttling bits (`vcgencmd get_throttled`).
    #[serde(default)]
    pub throttled: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub timestamp: Option<Time>,
    #[serde(default)]
    pub window: String,
    #[serde(default)]
    pub containers: Vec<ContainerMetrics>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerMetrics {
    pub name: String,
    #[serde(default)]
    pub usage: BTreeMap<String, String>,
}

/// `NodeMetricsList`, `PodMetricsList`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsList<T> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

impl<T> MetricsList<T> {
    pub fn new(kind: &str, items: Vec<T>) -> MetricsList<T> {
        MetricsList {
            api_version: METRICS_API_VERSION.to_string(),
            kind: format!("{kind}List"),
            metadata: ListMeta::default(),
            items,
        }
    }
}

/// The Raspberry Pi firmware's throttling bits, in words: what holds now, and what
/// has happened since boot.
pub fn throttled_flags(bits: u32) -> (Vec<&'static str>, Vec<&'static str>) {
    const NAMES: [&str; 4] = [
        "under-voltage",
        "frequency capped",
        "throttled",
        "soft temperature limit",
    ];
    let pick = |shift: u32| {
        NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << (shift + *i as u32)) != 0)
            .map(|(_, n)| *n)
            .collect()
    };
    (pick(0), pick(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_bits_decode() {
        assert_eq!(throttled_flags(0), (vec![], vec![]));
        let (now, since) = throttled_flags(0x5_0005);
        assert_eq!(now, ["under-voltage", "throttled"]);
        assert_eq!(since, ["under-voltage", "throttled"]);
        assert_eq!(throttled_flags(0x8_0000).1, ["soft temperature limit"]);
        assert_eq!(throttled_flags(0x2).0, ["frequency capped"]);
    }
}
