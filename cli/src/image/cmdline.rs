//! Editing the kernel command line (`cmdline.txt`): the firmware reads it as one line,
//! so the result is one line; every edit replaces what an earlier run (or Raspberry Pi
//! Imager) added instead of adding it again, so building from a built image changes
//! nothing twice.

/// Turns on the memory cgroup controller, which Raspberry Pi kernels leave off: without
/// it memory limits silently do nothing (the most common first failure of k3s and
/// Docker on a Pi).
pub const CGROUP_FLAGS: [&str; 2] = ["cgroup_enable=memory", "cgroup_memory=1"];

/// The kernel arguments that make systemd run `script` once instead of booting
/// normally, then reboot: how Bookworm-era Raspberry Pi OS is customised (this is what
/// Raspberry Pi Imager appends; the script removes them again when it is done).
pub fn first_run_args(script: &str) -> [String; 3] {
    [
        format!("systemd.run={script}"),
        "systemd.run_success_action=reboot".to_string(),
        "systemd.unit=kernel-command-line.target".to_string(),
    ]
}

/// What to change on the command line.
#[derive(Debug, Default)]
pub struct Edit<'a> {
    /// Run this script on first boot (`systemd.run=`); `None`: remove such arguments.
    pub first_run: Option<&'a str>,
    /// The Wi-Fi regulatory domain (`cfg80211.ieee80211_regdom=GB`), as Imager sets it.
    pub wifi_country: Option<&'a str>,
}

/// Applies `edit` and the cgroup flags to the text of cmdline.txt. Only its first line
/// counts (the firmware reads no more), and the result ends with one newline.
pub fn edit(text: &str, edit: &Edit) -> String {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut args: Vec<String> = first
        .split_whitespace()
        .filter(|a| !is_first_run_arg(a))
        // An explicit `cgroup_disable=memory` would win over the flags we add.
        .filter(|a| *a != "cgroup_disable=memory")
        .filter(|a| edit.wifi_country.is_none() || !a.starts_with("cfg80211.ieee80211_regdom="))
        .map(str::to_string)
        .collect();
    for flag in CGROUP_FLAGS {
        if !args.iter().any(|a| a == flag) {
            args.push(flag.to_string());
        }
    }
    if let Some(cc) = edit.wifi_country {
        args.push(format!("cfg80211.ieee80211_regdom={cc}"));
    }
    // Last, as Imager puts them: firstrun.sh removes everything from `systemd.run` on.
    if let Some(script) = edit.first_run {
        args.extend(first_run_args(script));
    }
    let mut line = args.join(" ");
    line.push('\n');
    line
}

fn is_first_run_arg(arg: &str) -> bool {
    arg.starts_with("systemd.run=")
        || arg.starts_with("systemd.run_success_action=")
        || arg.starts_with("systemd.run_failure_action=")
        || arg == "systemd.unit=kernel-command-line.target"
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOKWORM: &str = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

    #[test]
    fn adds_the_cgroup_flags_once_on_one_line() {
        let once = edit(BOOKWORM, &Edit::default());
        assert_eq!(once.lines().count(), 1);
        assert!(once.ends_with("firstboot cgroup_enable=memory cgroup_memory=1\n"));
        assert_eq!(edit(&once, &Edit::default()), once);
        // Windows line ends, a second line and a flag that is already there.
        let messy = "root=/dev/mmcblk0p2 cgroup_memory=1 cgroup_disable=memory\r\nignored\r\n";
        assert_eq!(
            edit(messy, &Edit::default()),
            "root=/dev/mmcblk0p2 cgroup_memory=1 cgroup_enable=memory\n"
        );
    }

    #[test]
    fn first_run_and_wifi_country_are_replaced_not_repeated() {
        let e = Edit {
            first_run: Some("/boot/firmware/firstrun.sh"),
            wifi_country: Some("GB"),
        };
        let once = edit(BOOKWORM, &e);
        assert!(once.ends_with(" cgroup_enable=memory cgroup_memory=1 cfg80211.ieee80211_regdom=GB systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n"), "{once}");
        assert_eq!(edit(&once, &e), once);
        let de = Edit {
            first_run: None,
            wifi_country: Some("DE"),
        };
        let cloud = edit(&once, &de);
        assert!(!cloud.contains("systemd.run"), "{cloud}");
        assert_eq!(cloud.matches("regdom").count(), 1);
        assert!(cloud.contains("regdom=DE"));
        // An Imager-made line: its systemd.run arguments are replaced by ours.
        let imager = format!(
            "{} systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target",
            BOOKWORM.trim()
        );
        assert_eq!(edit(&imager, &e), once);
    }
}
