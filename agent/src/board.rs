//! The board's health for the fleet: Raspberry Pi model, CPU and memory use, disk,
//! SoC temperature, firmware throttling, the cgroup setup (is the memory controller
//! there, and if not why), and per-container CPU and memory from cgroups. Parsers are
//! pure; `Sampler` keeps the previous counters so CPU use is a rate between reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use punnet_api::wire::{ContainerUsage, NodeFacts};

/// `/proc/device-tree/model` ends with a NUL.
pub fn parse_model(text: &str) -> String {
    text.trim_end_matches('\0').trim().to_string()
}

/// (busy, total) jiffies of the `cpu` line of /proc/stat.
pub fn parse_cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is counted in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn parse_mem_available(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// The Raspberry Pi firmware's throttling bits (`0x50005`).
pub fn parse_throttled(text: &str) -> Option<u32> {
    let t = text.trim();
    let hex = t.strip_prefix("0x").unwrap_or(t);
    u32::from_str_radix(hex, 16).ok()
}

/// What the kernel offers for memory limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupInfo {
    pub version: u8,
    pub memory: bool,
    pub problem: Option<String>,
}

/// From /sys/fs/cgroup/cgroup.controllers (v2 only), /proc/cgroups and /proc/cmdline.
pub fn cgroup_info(v2_controllers: Option<&str>, proc_cgroups: &str, cmdline: &str) -> CgroupInfo {
    let (version, memory) = match v2_controllers {
        Some(list) => (2, list.split_whitespace().any(|c| c == "memory")),
        None => (
            1,
            proc_cgroups.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 4 && f[0] == "memory" && f[3] == "1"
            }),
        ),
    };
    let disabled_by_cmdline = cmdline
        .split_whitespace()
        .any(|w| w == "cgroup_disable=memory");
    let problem = (!memory).then(|| {
        if disabled_by_cmdline {
            "the kernel command line has cgroup_disable=memory: add `cgroup_enable=memory cgroup_memory=1` to cmdline.txt (/boot/firmware/cmdline.txt on Raspberry Pi OS) and reboot".to_string()
        } else {
            "the kernel has no memory cgroup controller: memory limits cannot be enforced; enable it (cgroup_enable=memory on the kernel command line) or use a kernel that has it".to_string()
        }
    });
    CgroupInfo {
        version,
        memory,
        problem,
    }
}

/// A container's memory working set: usage less inactive file cache, as the kubelet
/// reports it.
pub fn working_set(usage: u64, memory_stat: &str, v2: bool) -> u64 {
    let key = if v2 {
        "inactive_file"
    } else {
        "total_inactive_file"
    };
    let inactive = memory_stat
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<u64>().ok())?
        })
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// Millis of one CPU used between two readings of a cumulative counter in nanoseconds.
pub fn cpu_millis(prev_ns: u64, now_ns: u64, elapsed_secs: f64) -> u64 {
    if elapsed_secs <= 0.0 {
        return 0;
    }
    (now_ns.saturating_sub(prev_ns) as f64 / 1e6 / elapsed_secs) as u64
}

/// Keeps the previous counters between samples.
#[derive(Default)]
pub struct Sampler {
    node_cpu: Option<(Instant, u64, u64)>,
    containers: BTreeMap<String, (Instant, u64)>,
}

fn read(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

impl Sampler {
    /// Adds the board's health to `facts`. Blocking (reads /proc and /sys).
    pub fn node(&mut self, facts: &mut NodeFacts, data_dir: &Path) {
        facts.board_model = read("/proc/device-tree/model")
            .map(|m| parse_model(&m))
            .unwrap_or_default();
        let now = Instant::now();
        if let Some((busy, total)) = read("/proc/stat").as_deref().and_then(parse_cpu_times) {
            if let Some((_, pb, pt)) = self.node_cpu {
                let dt = total.saturating_sub(pt);
                if dt > 0 {
                    let share = busy.saturating_sub(pb) as f64 / dt as f64;
                    facts.cpu_usage_millis = (share * f64::from(facts.cpus.max(1)) * 1000.0) as u64;
                }
            }
            self.node_cpu = Some((now, busy, total));
        }
        facts.memory_available_bytes = read("/proc/meminfo")
            .as_deref()
            .and_then(parse_mem_available)
            .unwrap_or(0);
        // The statvfs counts are 32-bit on 32-bit ARM: the casts are not no-ops there.
        #[allow(clippy::unnecessary_cast)]
        if let Ok(st) = nix::sys::statvfs::statvfs(data_dir) {
            let frag = st.fragment_size() as u64;
            facts.disk_total_bytes = st.blocks() as u64 * frag;
            facts.disk_free_bytes = st.blocks_available() as u64 * frag;
        }
        facts.temperature_millicelsius =
            read("/sys/class/thermal/thermal_zone0/temp").and_then(|t| t.trim().parse().ok());
        facts.throttled = read("/sys/devices/platform/soc/soc:firmware/get_throttled")
            .as_deref()
            .and_then(parse_throttled);
        let cg = cgroup_info(
            read("/sys/fs/cgroup/cgroup.controllers").as_deref(),
            &read("/proc/cgroups").unwrap_or_default(),
            &read("/proc/cmdline").unwrap_or_default(),
        );
        facts.cgroup_version = cg.version;
        facts.memory_cgroup = cg.memory;
        facts.memory_cgroup_problem = cg.problem;
    }

    /// CPU and memory of running containers by runtime id (containers not listed are
    /// forgotten). Blocking.
    pub fn containers(&mut self, ids: &[String]) -> BTreeMap<String, ContainerUsage> {
        let now = Instant::now();
        let mut out = BTreeMap::new();
        self.containers.retain(|id, _| ids.contains(id));
        for id in ids {
            let dirs = crate::runtime::host::cgroup_dirs(id);
            let (cpu_ns, memory) = usage_from(&dirs);
            let cpu_millis = match (cpu_ns, self.containers.get(id)) {
                (Some(ns), Some((at, prev))) => {
                    cpu_millis(*prev, ns, now.duration_since(*at).as_secs_f64())
                }
                _ => 0,
            };
            if let Some(ns) = cpu_ns {
                self.containers.insert(id.clone(), (now, ns));
            }
            out.insert(
                id.clone(),
                ContainerUsage {
                    container: String::new(),
                    cpu_millis,
                    memory_bytes: memory.unwrap_or(0),
                },
            );
        }
        out
    }
}

/// (cumulative CPU ns, memory working set) from a container's cgroup directories.
fn usage_from(dirs: &[PathBuf]) -> (Option<u64>, Option<u64>) {
    let (mut cpu, mut mem) = (None, None);
    for d in dirs {
        if let Some(v) = read(d.join("cpuacct.usage")).and_then(|t| t.trim().parse().ok()) {
            cpu = Some(v);
        }
        if let Some(stat) = read(d.join("cpu.stat")) {
            if let Some(us) = stat.lines().find_map(|l| {
                l.strip_prefix("usage_usec ")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            }) {
                cpu = Some(us * 1000);
            }
        }
        if let Some(u) = read(d.join("memory.usage_in_bytes")).and_then(|t| t.trim().parse().ok()) {
            mem = Some(working_set(
                u,
                &read(d.join("memory.stat")).unwrap_or_default(),
                false,
            ));
        }
        if let Some(u) = read(d.join("memory.current")).and_then(|t| t.trim().parse().ok()) {
            mem = Some(working_set(
                u,
                &read(d.join("memory.stat")).unwrap_or_default(),
                true,
            ));
        }
    }
    (cpu, mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi_model_and_throttling_parse() {
        assert_eq!(
            parse_model("Raspberry Pi 4 Model B Rev 1.4\0"),
            "Raspberry Pi 4 Model B Rev 1.4"
        );
        assert_eq!(
            parse_throttled("throttled=0x50005\n".trim_start_matches("throttled=")),
            Some(0x50005)
        );
        assert_eq!(parse_throttled("0x0"), Some(0));
    }

    #[test]
    fn cpu_and_memory_counters_parse() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(parse_cpu_times(stat), Some((150, 1000)));
        assert_eq!(
            parse_mem_available("MemTotal: 948304 kB\nMemAvailable:  512000 kB\n"),
            Some(512_000 * 1024)
        );
        assert_eq!(cpu_millis(0, 500_000_000, 2.0), 250);
        let v1 = "cache 10\ntotal_inactive_file 4096\n";
        assert_eq!(working_set(10_000, v1, false), 5904);
        assert_eq!(working_set(10_000, "inactive_file 1000\n", true), 9000);
    }

    #[test]
    fn a_missing_memory_controller_says_why() {
        let v1 = "#subsys_name hierarchy num_cgroups enabled\ncpu 2 1 1\nmemory 0 1 0\n";
        let info = cgroup_info(None, v1, "console=tty1 cgroup_disable=memory rootwait");
        assert_eq!((info.version, info.memory), (1, false));
        assert!(info
            .problem
            .unwrap()
            .contains("cgroup_enable=memory cgroup_memory=1"));

        let v2 = cgroup_info(Some("cpuset cpu io pids"), "", "console=tty1");
        assert_eq!((v2.version, v2.memory), (2, false));
        assert!(v2.problem.unwrap().contains("no memory cgroup controller"));

        let ok = cgroup_info(Some("cpuset cpu io memory pids"), "", "");
        assert_eq!((ok.version, ok.memory, ok.problem), (2, true, None));
    }
}
