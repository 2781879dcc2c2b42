//! The board facts in `describe node`: model, platform and cgroups from the Node's
//! annotations and conditions, and the latest figures (CPU, memory, disk, temperature,
//! throttling) from the metrics API, which the controller keeps in memory.

use chrono::{DateTime, Utc};
use punnet_api::metrics::{throttled_flags, NodeMetrics};
use punnet_api::quantity::{format_cpu_millis, parse_bytes, parse_cpu_millis};
use punnet_api::Node;

use super::Doc;
use crate::age::age;

/// Annotation and condition names the controller uses (see its `nodesync::facts`).
const ANNOTATION_BOARD_MODEL: &str = "punnet.io/board-model";
const ANNOTATION_PLATFORM: &str = "punnet.io/platform";
const ANNOTATION_CGROUP_VERSION: &str = "punnet.io/cgroup-version";
const CONDITION_MEMORY_CGROUP: &str = "MemoryCgroupUnavailable";

/// Extra `System Info` lines.
pub fn system_info(d: &mut Doc, level: usize, node: &Node) {
    let a = &node.metadata.annotations;
    if let Some(board) = a.get(ANNOTATION_BOARD_MODEL) {
        d.field(level, "Board", board);
    }
    if let Some(platform) = a.get(ANNOTATION_PLATFORM) {
        d.field(level, "Platform", platform);
    }
    if let Some(v) = a.get(ANNOTATION_CGROUP_VERSION) {
        d.field(level, "Cgroup Version", format!("v{v}"));
    }
    match node.condition(CONDITION_MEMORY_CGROUP) {
        Some(c) if c.status == "True" => d.field(
            level,
            "Memory Cgroup",
            format!(
                "disabled, memory limits are not enforced ({})",
                c.message.as_deref().unwrap_or("no reason given")
            ),
        ),
        _ if a.contains_key(ANNOTATION_CGROUP_VERSION) => {
            d.field(level, "Memory Cgroup", "enabled")
        }
        _ => {}
    }
}

/// `1.2Gi`, `340Mi`: bytes to one decimal, for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (suffix, unit) in UNITS {
        if bytes >= unit {
            let v = bytes as f64 / unit as f64;
            return if v >= 100.0 || bytes % unit == 0 {
                format!("{:.0}{suffix}", v)
            } else {
                format!("{v:.1}{suffix}")
            };
        }
    }
    format!("{bytes}")
}

fn percent(part: u64, whole: u64) -> String {
    (part * 100)
        .checked_div(whole)
        .map(|p| format!(" ({p}%)"))
        .unwrap_or_default()
}

/// The `Board Status` section, when the node sent figures lately.
pub fn board_status(d: &mut Doc, m: &NodeMetrics, now: DateTime<Utc>) {
    let when = m
        .timestamp
        .as_ref()
        .map(|t| format!(" (as of {} ago)", age(Some(t), now)))
        .unwrap_or_default();
    d.line(0, format!("Board Status{when}:"));
    let f = m.punnet.clone().unwrap_or_default();
    let cpu = m
        .usage
        .get("cpu")
        .and_then(|q| parse_cpu_millis(q).ok())
        .unwrap_or(0);
    let cpus = u64::from(f.cpus) * 1000;
    let cpu_text = if cpus > 0 {
        format!(
            "{} of {}{}",
            format_cpu_millis(cpu),
            f.cpus,
            percent(cpu, cpus)
        )
    } else {
        format_cpu_millis(cpu)
    };
    d.field(1, "CPU", cpu_text);
    let mem = m
        .usage
        .get("memory")
        .and_then(|q| parse_bytes(q).ok())
        .unwrap_or(0);
    let mem_text = if f.memory_total_bytes > 0 {
        format!(
            "{} of {} used{}",
            human_bytes(mem),
            human_bytes(f.memory_total_bytes),
            percent(mem, f.memory_total_bytes)
        )
    } else {
        human_bytes(mem)
    };
    d.field(1, "Memory", mem_text);
    if f.disk_total_bytes > 0 {
        let used = f.disk_total_bytes.saturating_sub(f.disk_free_bytes);
        d.field(
            1,
            "Disk",
            format!(
                "{} of {} used{}, {} free",
                human_bytes(used),
                human_bytes(f.disk_total_bytes),
                percent(used, f.disk_total_bytes),
                human_bytes(f.disk_free_bytes)
            ),
        );
    }
    if let Some(t) = f.temperature_millicelsius {
        d.field(1, "Temperature", format!("{:.1}°C", t as f64 / 1000.0));
    }
    if let Some(bits) = f.throttled {
        d.field(1, "Throttling", throttling(bits));
    }
}

/// `none`, or `now: under-voltage, throttled; since boot: under-voltage`.
pub fn throttling(bits: u32) -> String {
    let (now, since) = throttled_flags(bits);
    let list = |v: Vec<&str>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    if now.is_empty() && since.is_empty() {
        return "none".into();
    }
    format!("now: {}; since boot: {}", list(now), list(since))
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::metrics::NodeFigures;
    use punnet_api::{NodeCondition, Time};

    #[test]
    fn facts_and_figures_read_as_a_person_wants_them() {
        let mut n = Node::default();
        let a = &mut n.metadata.annotations;
        a.insert(
            ANNOTATION_BOARD_MODEL.into(),
            "Raspberry Pi 4 Model B Rev 1.4".into(),
        );
        a.insert(ANNOTATION_PLATFORM.into(), "linux/arm64".into());
        a.insert(ANNOTATION_CGROUP_VERSION.into(), "2".into());
        n.status.conditions.push(NodeCondition {
            type_: CONDITION_MEMORY_CGROUP.into(),
            status: "True".into(),
            message: Some("cgroup_disable=memory on the kernel command line".into()),
            ..Default::default()
        });
        let mut d = Doc::default();
        system_info(&mut d, 1, &n);
        let now: DateTime<Utc> = "2024-05-01T12:00:00Z".parse().unwrap();
        let m = NodeMetrics {
            timestamp: Some(Time("2024-05-01T11:59:50Z".parse().unwrap())),
            usage: [
                ("cpu".to_string(), "1500m".to_string()),
                ("memory".to_string(), "524288Ki".to_string()),
            ]
            .into(),
            punnet: Some(NodeFigures {
                cpus: 4,
                memory_total_bytes: 1 << 30,
                disk_total_bytes: 32 << 30,
                disk_free_bytes: 24 << 30,
                temperature_millicelsius: Some(48_512),
                throttled: Some(0x5_0000),
                ..Default::default()
            }),
            ..Default::default()
        };
        board_status(&mut d, &m, now);
        assert_eq!(
            d.finish(),
            "  Board:           Raspberry Pi 4 Model B Rev 1.4\n\
             \x20 Platform:        linux/arm64\n\
             \x20 Cgroup Version:  v2\n\
             \x20 Memory Cgroup:   disabled, memory limits are not enforced (cgroup_disable=memory on the kernel command line)\n\
             Board Status (as of 10s ago):\n\
             \x20 CPU:          1500m of 4 (37%)\n\
             \x20 Memory:       512Mi of 1Gi used (50%)\n\
             \x20 Disk:         8Gi of 32Gi used (25%), 24Gi free\n\
             \x20 Temperature:  48.5°C\n\
             \x20 Throttling:   now: none; since boot: under-voltage, throttled\n"
        );
    }

    #[test]
    fn byte_figures() {
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(1536), "1.5Ki");
        assert_eq!(human_bytes(3 << 30), "3Gi");
        assert_eq!(human_bytes(3_500_000_000), "3.3Gi");
        assert_eq!(throttling(0), "none");
        assert_eq!(throttling(0x1), "now: under-voltage; since boot: none");
    }
}
