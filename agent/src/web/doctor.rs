//! The board's doctor: checks of what makes a board misbehave in ways that are hard to
//! see from the fleet (memory limits not enforced, a weak power supply, heat, an
//! unsynchronised clock, a full or worn disk, an insecure or untrusted link), each with
//! the exact fix. Pure: it judges values read elsewhere.

use punnet_api::wire::NodeFacts;
use serde::Serialize;

use super::health::{self, Clock, Storage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub level: Level,
    /// What is checked: `memory cgroup`, `power`, `clock`.
    pub name: &'static str,
    /// The finding, in a sentence.
    pub detail: String,
    /// What to do about it (`None` when all is well).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            level: Level::Ok,
            name,
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(level: Level, name: &'static str, detail: impl Into<String>, fix: &str) -> Check {
        Check {
            level,
            name,
            detail: detail.into(),
            fix: Some(fix.to_string()),
        }
    }
}

/// What the doctor looks at besides the node's facts.
pub struct Input<'a> {
    pub facts: &'a NodeFacts,
    pub clock: &'a Clock,
    pub storage: &'a Storage,
    /// The MQTT link runs without TLS (`--allow-plaintext`).
    pub plaintext: bool,
    pub broker: &'a str,
    pub connected: bool,
    /// Why the last connection attempt failed.
    pub link_error: Option<&'a str>,
    pub has_controller_key: bool,
    pub rejected_desired: u64,
    pub last_rejection: Option<&'a str>,
}

const CMDLINE_FIX: &str = "add `cgroup_enable=memory cgroup_memory=1` to the end of the single line in /boot/firmware/cmdline.txt (/boot/cmdline.txt before Raspberry Pi OS bookworm), then reboot";
const POWER_FIX: &str = "use a supply that holds 5.1 V under load (the official 5.1 V 3 A supply for a Pi 4, 5 A for a Pi 5) and a short, thick USB cable; unplug power-hungry USB devices or give them a powered hub";
const HEAT_FIX: &str =
    "give the board a heatsink or a fan, or a case with airflow; keep it out of the sun";
const CLOCK_FIX: &str = "turn on time sync (`sudo timedatectl set-ntp true` starts systemd-timesyncd) and let UDP port 123 out to an NTP server, or install chrony";
const DISK_FIX: &str = "free space on the data disk: unused images are deleted automatically below --image-gc-min-free; look for large Pod logs and emptyDir volumes under the data directory";
const WEAR_FIX: &str = "back up the board's data and replace the card or eMMC module soon";
const FSCK_FIX: &str = "check the filesystem at the next boot: add `fsck.mode=force` to cmdline.txt for one boot (or `sudo touch /forcefsck` on older systems), then reboot";
const RO_FIX: &str = "the disk went read-only (usually after I/O errors): back up what you can, check `dmesg` for mmc or I/O errors, and replace the card";
const PLAINTEXT_FIX: &str = "connect with mqtts:// and the controller's CA (--ca <controller-data>/ca.pem), then drop --allow-plaintext";
const BROKER_FIX: &str = "check that the controller (or the broker) runs and that this board reaches its address and port (`nc -vz HOST PORT`); a certificate error means --ca is not the controller's ca.pem, or the broker's name is not in its certificate (controller --tls-san)";
const KEY_FIX: &str = "enrol the node (`punnet-agent --token <bootstrap token>`), or copy controller.pub from the controller's data directory into the agent's";
const SIGNATURE_FIX: &str = "something other than the controller publishes on this node's desired-state topic, or the controller's key changed: check the broker's clients, and that controller.pub matches the controller's";

pub fn checks(input: &Input) -> Vec<Check> {
    let f = input.facts;
    let mut out = Vec::new();

    out.push(if f.memory_cgroup {
        Check::ok(
            "memory cgroup",
            format!(
                "memory limits are enforced (cgroup v{})",
                f.cgroup_version
            ),
        )
    } else {
        let problem = f
            .memory_cgroup_problem
            .clone()
            .unwrap_or_else(|| "the memory cgroup controller is disabled".into());
        let fix = if problem.contains("cgroup_disable=memory") || f.board_model.contains("Raspberry Pi") {
            CMDLINE_FIX
        } else {
            "boot with `cgroup_enable=memory` on the kernel command line, or use a kernel built with the memory cgroup controller"
        };
        Check::bad(
            Level::Error,
            "memory cgroup",
            format!("memory limits are not enforced: {problem}"),
            fix,
        )
    });

    if let Some(bits) = f.throttled {
        let t = health::throttling(bits);
        let under_now = t.now.contains(&health::UNDER_VOLTAGE);
        let under_ever = t.since_boot.contains(&health::UNDER_VOLTAGE);
        let heat_now = t.now.iter().any(|n| *n != health::UNDER_VOLTAGE);
        out.push(if under_now {
            Check::bad(
                Level::Error,
                "power",
                format!("under-voltage now ({})", t.now.join(", ")),
                POWER_FIX,
            )
        } else if under_ever {
            Check::bad(
                Level::Warning,
                "power",
                "under-voltage happened since boot: the supply sags under load",
                POWER_FIX,
            )
        } else {
            Check::ok("power", "no under-voltage since boot")
        });
        if heat_now {
            out.push(Check::bad(
                Level::Warning,
                "throttling",
                format!("the firmware slows the CPU now: {}", t.now.join(", ")),
                HEAT_FIX,
            ));
        } else if !t.since_boot.is_empty() && t.since_boot != [health::UNDER_VOLTAGE] {
            out.push(Check::bad(
                Level::Warning,
                "throttling",
                format!("the CPU was slowed since boot: {}", t.since_boot.join(", ")),
                HEAT_FIX,
            ));
        }
    }

    if let Some(mc) = f.temperature_millicelsius {
        let c = mc as f64 / 1000.0;
        // The Pi's firmware starts throttling at 80 °C and hard-limits at 85 °C.
        out.push(if c >= 80.0 {
            Check::bad(
                Level::Error,
                "temperature",
                format!("{c:.1} °C: the CPU is being slowed"),
                HEAT_FIX,
            )
        } else if c >= 70.0 {
            Check::bad(
                Level::Warning,
                "temperature",
                format!("{c:.1} °C: close to the 80 °C throttling point"),
                HEAT_FIX,
            )
        } else {
            Check::ok("temperature", format!("{c:.1} °C"))
        });
    }

    out.push(if input.clock.synced {
        Check::ok("clock", input.clock.detail.clone())
    } else {
        Check::bad(
            Level::Warning,
            "clock",
            format!("{}; certificate checks and log times may be wrong (most Raspberry Pis have no battery-backed clock)", input.clock.detail),
            CLOCK_FIX,
        )
    });

    if f.disk_total_bytes > 0 {
        let free = f.disk_free_bytes as f64 / f.disk_total_bytes as f64 * 100.0;
        let text = format!(
            "{} free of {} ({free:.0} %)",
            human_bytes(f.disk_free_bytes),
            human_bytes(f.disk_total_bytes)
        );
        out.push(if free < 5.0 {
            Check::bad(Level::Error, "disk space", text, DISK_FIX)
        } else if free < 10.0 {
            Check::bad(Level::Warning, "disk space", text, DISK_FIX)
        } else {
            Check::ok("disk space", text)
        });
    }

    let s = input.storage;
    if s.read_only {
        out.push(Check::bad(
            Level::Error,
            "disk",
            format!(
                "{} is read-only",
                s.device.as_deref().unwrap_or("the data disk")
            ),
            RO_FIX,
        ));
    }
    let worn_out = s
        .life_time
        .as_ref()
        .is_some_and(|(a, b)| a == "exceeded" || b == "exceeded")
        || s.pre_eol.as_deref() == Some("urgent");
    let wearing = s.life_time.as_ref().is_some_and(|(a, b)| {
        a.starts_with("80") || a.starts_with("90") || b.starts_with("80") || b.starts_with("90")
    }) || s.pre_eol.as_deref() == Some("warning");
    if worn_out || wearing {
        let (a, b) = s.life_time.clone().unwrap_or_default();
        out.push(Check::bad(
            if worn_out {
                Level::Error
            } else {
                Level::Warning
            },
            "disk wear",
            format!(
                "the eMMC reports life used {a} (type A) / {b} (type B), reserved blocks {}",
                s.pre_eol.as_deref().unwrap_or("not reported")
            ),
            WEAR_FIX,
        ));
    } else if s.life_time.is_some() || s.pre_eol.is_some() {
        out.push(Check::ok("disk wear", "the eMMC reports normal wear"));
    }
    if let Some(n) = s.fs_errors.filter(|n| *n > 0) {
        out.push(Check::bad(
            Level::Warning,
            "filesystem",
            format!("ext4 recorded {n} error(s) on the data filesystem"),
            FSCK_FIX,
        ));
    }

    out.push(if input.connected {
        Check::ok("controller link", format!("connected to {}", input.broker))
    } else {
        Check::bad(
            Level::Warning,
            "controller link",
            match input.link_error {
                Some(e) => format!("cannot reach the broker {}: {e}; the Pods keep running on the last desired state", input.broker),
                None => format!("not connected to the broker {} (yet); the Pods keep running on the last desired state", input.broker),
            },
            BROKER_FIX,
        )
    });
    if input.plaintext {
        out.push(Check::bad(
            Level::Warning,
            "link security",
            "the MQTT link runs WITHOUT TLS (--allow-plaintext): anyone on the network can read this node's status and logs",
            PLAINTEXT_FIX,
        ));
    }
    if !input.has_controller_key {
        out.push(Check::bad(
            Level::Error,
            "controller key",
            "no controller key: every desired state is refused",
            KEY_FIX,
        ));
    }
    if input.rejected_desired > 0 {
        out.push(Check::bad(
            Level::Warning,
            "signatures",
            format!(
                "{} desired-state message(s) refused since the agent started; last: {}",
                input.rejected_desired,
                input.last_rejection.unwrap_or("-")
            ),
            SIGNATURE_FIX,
        ));
    }
    // Worst first: what needs doing is at the top of the page.
    out.sort_by_key(|c| std::cmp::Reverse(c.level));
    out
}

/// `42.3 GiB`: sizes as people read them (binary units, one decimal).
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(synced: bool) -> Clock {
        Clock {
            synced,
            max_error_ms: None,
            estimated_error_ms: None,
            detail: if synced {
                "synchronised".into()
            } else {
                "not synchronised".into()
            },
        }
    }

    fn healthy() -> NodeFacts {
        NodeFacts {
            board_model: "Raspberry Pi 4 Model B Rev 1.4".into(),
            cgroup_version: 2,
            memory_cgroup: true,
            throttled: Some(0),
            temperature_millicelsius: Some(48_000),
            disk_total_bytes: 32 << 30,
            disk_free_bytes: 20 << 30,
            ..NodeFacts::default()
        }
    }

    fn run(facts: &NodeFacts, storage: &Storage, synced: bool) -> Vec<Check> {
        checks(&Input {
            facts,
            clock: &clock(synced),
            storage,
            plaintext: false,
            broker: "mqtts://c.lan:8883",
            connected: true,
            link_error: None,
            has_controller_key: true,
            rejected_desired: 0,
            last_rejection: None,
        })
    }

    #[test]
    fn a_healthy_board_is_all_ok() {
        let c = run(&healthy(), &Storage::default(), true);
        assert!(
            c.iter().all(|c| c.level == Level::Ok && c.fix.is_none()),
            "{c:?}"
        );
        let names: Vec<_> = c.iter().map(|c| c.name).collect();
        assert!(
            c.iter()
                .any(|c| c.detail == "20.0 GiB free of 32.0 GiB (62 %)"),
            "{c:?}"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        for n in [
            "memory cgroup",
            "power",
            "temperature",
            "clock",
            "disk space",
            "controller link",
        ] {
            assert!(names.contains(&n), "{names:?}");
        }
    }

    #[test]
    fn a_disabled_memory_cgroup_gets_the_cmdline_fix_first() {
        let facts = NodeFacts {
            memory_cgroup: false,
            memory_cgroup_problem: Some("the kernel command line has cgroup_disable=memory".into()),
            ..healthy()
        };
        let c = run(&facts, &Storage::default(), true);
        assert_eq!(c[0].name, "memory cgroup");
        assert_eq!(c[0].level, Level::Error);
        assert!(c[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("cgroup_enable=memory cgroup_memory=1"));
        assert!(c[0].fix.as_deref().unwrap().contains("cmdline.txt"));
    }

    #[test]
    fn power_heat_clock_and_disk_problems_are_found() {
        let facts = NodeFacts {
            throttled: Some(0x50005),
            temperature_millicelsius: Some(82_000),
            disk_free_bytes: 1 << 30,
            ..healthy()
        };
        let storage = Storage {
            device: Some("mmcblk0".into()),
            life_time: Some(("90–100 %".into(), "10–20 %".into())),
            pre_eol: Some("warning".into()),
            fs_errors: Some(2),
            ..Storage::default()
        };
        let c = run(&facts, &storage, false);
        let level = |name: &str| c.iter().find(|c| c.name == name).map(|c| c.level);
        assert_eq!(level("power"), Some(Level::Error));
        assert_eq!(level("throttling"), Some(Level::Warning));
        assert_eq!(level("temperature"), Some(Level::Error));
        assert_eq!(level("clock"), Some(Level::Warning));
        assert_eq!(level("disk space"), Some(Level::Error));
        assert_eq!(level("disk wear"), Some(Level::Warning));
        assert_eq!(level("filesystem"), Some(Level::Warning));
        assert!(
            c.windows(2).all(|w| w[0].level >= w[1].level),
            "worst first"
        );
        assert!(c
            .iter()
            .filter(|c| c.level != Level::Ok)
            .all(|c| c.fix.is_some()));
    }

    #[test]
    fn past_under_voltage_is_a_warning_and_link_trouble_shows() {
        let facts = NodeFacts {
            throttled: Some(0x10000),
            ..healthy()
        };
        let c = checks(&Input {
            facts: &facts,
            clock: &clock(true),
            storage: &Storage::default(),
            plaintext: true,
            broker: "mqtt://c.lan:1883",
            connected: false,
            link_error: Some("I/O: Connection refused (os error 111)"),
            has_controller_key: false,
            rejected_desired: 3,
            last_rejection: Some("not signed"),
        });
        let find = |name: &str| c.iter().find(|c| c.name == name).unwrap();
        assert_eq!(find("power").level, Level::Warning);
        let link = find("controller link");
        assert_eq!(link.level, Level::Warning);
        assert!(link.detail.contains("Connection refused") && link.detail.contains("keep running"));
        assert!(c.iter().all(|c| c.name != "throttling"));
        assert!(find("link security").detail.contains("WITHOUT TLS"));
        assert_eq!(find("controller key").level, Level::Error);
        assert!(find("signatures").detail.contains("3 desired-state"));
        assert!(find("signatures").detail.contains("not signed"));
    }
}
