//! Node facts reported with every status: what the scheduler needs to place Pods (arch,
//! cpus, memory) and what a person needs to recognise a board (hostname, OS, machine id,
//! addresses). Parsers are pure and tested with sample files; `gather` does the reading.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use punnet_api::wire::NodeFacts;

/// The agent's version, reported so a fleet page can show boards that need an update.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Maps `uname -m` to Go's architecture names, as used by `kubernetes.io/arch` and OCI
/// image indexes.
pub fn go_arch(machine: &str) -> String {
    match machine {
        "aarch64" | "arm64" => "arm64",
        "armv7l" | "armv6l" | "armv8l" | "arm" => "arm",
        "x86_64" | "amd64" => "amd64",
        "i386" | "i686" => "386",
        "riscv64" => "riscv64",
        other => other,
    }
    .to_string()
}

/// `MemTotal` from /proc/meminfo, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => Some(value * 1024),
            Some(_) => None,
        }
    })
}

/// `PRETTY_NAME` from /etc/os-release, unquoted.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(unquoted.replace("\\\"", "\""))
    })
}

/// Everything that does not depend on reading the machine.
pub struct FactsInput {
    pub hostname: String,
    pub machine: String,
    pub kernel_release: String,
    pub meminfo: String,
    pub os_release: String,
    pub machine_id: String,
    pub cpus: u32,
    pub addresses: Vec<Ipv4Addr>,
}

pub fn facts_from(input: FactsInput, labels: &BTreeMap<String, String>) -> NodeFacts {
    NodeFacts {
        hostname: input.hostname,
        arch: go_arch(&input.machine),
        os: "linux".to_string(),
        os_image: parse_os_release(&input.os_release).unwrap_or_else(|| "Linux".to_string()),
        kernel_version: input.kernel_release,
        machine_id: input.machine_id.trim().to_string(),
        cpus: input.cpus,
        memory_bytes: parse_meminfo_total(&input.meminfo).unwrap_or(0),
        addresses: input
            .addresses
            .iter()
            .filter(|a| !a.is_loopback())
            .map(|a| a.to_string())
            .collect(),
        agent_version: AGENT_VERSION.to_string(),
        labels: labels.clone(),
        ..NodeFacts::default()
    }
}

/// Reads this machine's facts. Missing files give empty values, never an error: a board
/// that reports part of its facts is still useful.
pub fn gather(labels: &BTreeMap<String, String>) -> NodeFacts {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    facts_from(
        FactsInput {
            hostname: crate::config::hostname(),
            machine: field(|u| u.machine()),
            kernel_release: field(|u| u.release()),
            meminfo: read("/proc/meminfo"),
            os_release: {
                let t = read("/etc/os-release");
                if t.is_empty() {
                    read("/usr/lib/os-release")
                } else {
                    t
                }
            },
            machine_id: read("/etc/machine-id"),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            addresses: ipv4_addresses(),
        },
        labels,
    )
}

/// IPv4 addresses of the interfaces that are up, in the kernel's order.
pub fn ipv4_addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs only writes the list head; we free it with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned and not yet freed.
        let ifa = unsafe { &*cur };
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        if up && !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it names;
            // we only reinterpret it as sockaddr_in when that family is AF_INET.
            unsafe {
                if i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    if !out.contains(&addr) {
                        out.push(addr);
                    }
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("armv7l"), "arm");
        assert_eq!(go_arch("armv6l"), "arm");
        assert_eq!(go_arch("x86_64"), "amd64");
    }

    #[test]
    fn parses_sample_files() {
        let meminfo = "MemTotal:         944268 kB\nMemFree:          512000 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(944268 * 1024));
        let os = "PRETTY_NAME=\"Raspbian GNU/Linux 12 (bookworm)\"\nNAME=\"Raspbian GNU/Linux\"\nID=raspbian\n";
        assert_eq!(
            parse_os_release(os).as_deref(),
            Some("Raspbian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release("PRETTY_NAME=Alpine\n").as_deref(),
            Some("Alpine")
        );
        assert_eq!(parse_os_release("ID=x\n"), None);

        let labels = BTreeMap::from([("zone".to_string(), "garden".to_string())]);
        let facts = facts_from(
            FactsInput {
                hostname: "pi-1".into(),
                machine: "aarch64".into(),
                kernel_release: "6.6.51+rpt-rpi-v8".into(),
                meminfo: meminfo.into(),
                os_release: os.into(),
                machine_id: "0123abcd\n".into(),
                cpus: 4,
                addresses: vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(192, 168, 1, 20)],
            },
            &labels,
        );
        assert_eq!(facts.arch, "arm64");
        assert_eq!(facts.os, "linux");
        assert_eq!(facts.machine_id, "0123abcd");
        assert_eq!(facts.addresses, vec!["192.168.1.20".to_string()]);
        assert_eq!(facts.memory_bytes, 944268 * 1024);
        assert_eq!(facts.labels, labels);
        assert_eq!(facts.agent_version, AGENT_VERSION);
    }

    #[test]
    fn gathers_this_machine() {
        let facts = gather(&BTreeMap::new());
        assert!(facts.cpus >= 1);
        assert!(facts.memory_bytes > 0);
        assert!(!facts.arch.is_empty());
    }
}
