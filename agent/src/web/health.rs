//! What the board page says about the board's clock and storage. Parsers are pure;
//! `read_clock` and `read_storage` do the reading (one syscall, a few sysfs files).
//!
//! Clock sync is read from the kernel (`adjtimex` with no changes, as `timedatectl`'s
//! "System clock synchronized" does): whichever daemon disciplines the clock
//! (systemd-timesyncd, chrony, ntpd) clears `STA_UNSYNC`, and the kernel sets it again
//! by itself once its error estimate passes 16 s with nobody updating it. The file
//! `/run/systemd/timesync/synchronized` only exists with systemd-timesyncd, and stays
//! after a sync is lost, so it is not used.

use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Clock {
    pub synced: bool,
    /// The kernel's estimate of the clock's error bound, in milliseconds.
    pub max_error_ms: Option<f64>,
    pub estimated_error_ms: Option<f64>,
    /// In words, for the page.
    pub detail: String,
}

/// From what `adjtimex` returned: its return value (the clock state), the `status`
/// bits and the error fields (microseconds).
pub fn clock_from_timex(state: i32, status: i32, max_error_us: i64, est_error_us: i64) -> Clock {
    let unsync = status & libc::STA_UNSYNC != 0 || state == libc::TIME_ERROR;
    let ms = |us: i64| (us >= 0).then(|| us as f64 / 1000.0);
    let detail = if unsync {
        "not synchronised: no time daemon (systemd-timesyncd, chrony, ntpd) has set the clock, or it lost its server".to_string()
    } else {
        format!(
            "synchronised by the time daemon (error bound {:.1} ms)",
            max_error_us as f64 / 1000.0
        )
    };
    Clock {
        synced: !unsync,
        max_error_ms: ms(max_error_us),
        estimated_error_ms: ms(est_error_us),
        detail,
    }
}

/// The kernel's view of the clock. Read-only (`modes` = 0 changes nothing, so it needs no
/// privilege).
pub fn read_clock() -> Clock {
    // SAFETY: `timex` is plain data; all-zero is a valid value (modes 0: read only).
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed timex for the call's duration.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Clock {
            synced: false,
            max_error_ms: None,
            estimated_error_ms: None,
            detail: format!(
                "unknown: adjtimex failed ({})",
                std::io::Error::last_os_error()
            ),
        };
    }
    // The fields are `c_long`: 32 bits on 32-bit ARM.
    #[allow(clippy::unnecessary_cast)]
    clock_from_timex(state, tx.status, tx.maxerror as i64, tx.esterror as i64)
}

/// The disk that holds the agent's data, and what the kernel says about its health.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// `mmcblk0`, `sda`, `nvme0n1`; `None` when the data is not on a block device
    /// (tmpfs, overlay).
    pub device: Option<String>,
    /// `SD card`, `eMMC`, `USB or SATA disk`, `NVMe SSD`, `virtual disk`.
    pub kind: Option<String>,
    /// The card's or disk's model name (`SC32G`).
    pub model: Option<String>,
    /// eMMC wear, type A and B cells: `0–10 %` of the rated life used, up to
    /// `exceeded`.
    pub life_time: Option<(String, String)>,
    /// eMMC reserved blocks: `normal`, `warning` (80 % used) or `urgent` (90 %).
    pub pre_eol: Option<String>,
    pub written_since_boot_bytes: Option<u64>,
    /// The filesystem's error count (ext4 only).
    pub fs_errors: Option<u64>,
    pub read_only: bool,
    /// What the kernel does not say, so the page can tell people why nothing is shown.
    pub note: Option<String>,
}

/// An eMMC `life_time` field (`0x01`…`0x0b`) in words.
pub fn life_time_words(v: u8) -> String {
    match v {
        0 => "not reported".to_string(),
        1..=10 => format!("{}–{} %", (v - 1) * 10, v * 10),
        11 => "exceeded".to_string(),
        _ => format!("unknown (0x{v:02x})"),
    }
}

fn parse_hex_byte(text: &str) -> Option<u8> {
    let t = text.trim();
    u8::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
}

/// `life_time` ("0x01 0x02"): (type A, type B) estimates.
pub fn parse_life_time(text: &str) -> Option<(u8, u8)> {
    let mut it = text.split_whitespace().map(parse_hex_byte);
    Some((it.next()??, it.next()??))
}

/// `pre_eol_info` ("0x01") in words.
pub fn pre_eol_words(text: &str) -> Option<String> {
    Some(
        match parse_hex_byte(text)? {
            0 => return None,
            1 => "normal",
            2 => "warning",
            3 => "urgent",
            _ => "unknown",
        }
        .to_string(),
    )
}

/// Sectors written, from a block device's `stat` (the 7th field; 512-byte units
/// whatever the device's sector size).
pub fn parse_sectors_written(stat: &str) -> Option<u64> {
    stat.split_whitespace().nth(6)?.parse().ok()
}

/// What a disk is, from its name and (for MMC) the card's `type`.
pub fn disk_kind(device: &str, mmc_type: Option<&str>) -> &'static str {
    match mmc_type.map(str::trim) {
        Some("SD") => "SD card",
        Some("MMC") => "eMMC",
        Some(_) => "MMC device",
        None if device.starts_with("nvme") => "NVMe SSD",
        None if device.starts_with("sd") => "USB or SATA disk",
        None if device.starts_with("vd") || device.starts_with("xvd") => "virtual disk",
        None => "disk",
    }
}

/// Reads files of a disk's sysfs directory.
pub struct StorageInput<'a> {
    pub device: &'a str,
    pub read: &'a dyn Fn(&str) -> Option<String>,
    /// The ext4 error count of the partition, when it is ext4.
    pub fs_errors: Option<u64>,
}

/// The storage view from a disk's sysfs files (`read("device/type")`, relative to
/// `/sys/block/<device>`).
pub fn storage_from(input: &StorageInput) -> Storage {
    let read = input.read;
    let mmc_type = read("device/type");
    let kind = disk_kind(input.device, mmc_type.as_deref());
    let life_time = read("device/life_time")
        .as_deref()
        .and_then(parse_life_time)
        .filter(|(a, b)| *a != 0 || *b != 0)
        .map(|(a, b)| (life_time_words(a), life_time_words(b)));
    let pre_eol = read("device/pre_eol_info")
        .as_deref()
        .and_then(pre_eol_words);
    let model = read("device/name")
        .or_else(|| read("device/model"))
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    let note = match kind {
        "SD card" => Some("SD cards report no wear data to Linux (only eMMC has life_time and pre_eol_info); watch the writes and keep a spare card".to_string()),
        "eMMC" if life_time.is_none() && pre_eol.is_none() => Some("this eMMC reports no wear data".to_string()),
        "eMMC" => None,
        _ => Some("no wear data through sysfs (smartctl or nvme-cli can read it)".to_string()),
    };
    Storage {
        device: Some(input.device.to_string()),
        kind: Some(kind.to_string()),
        model,
        life_time,
        pre_eol,
        written_since_boot_bytes: read("stat")
            .as_deref()
            .and_then(parse_sectors_written)
            .map(|s| s * 512),
        fs_errors: input.fs_errors,
        read_only: read("ro").is_some_and(|v| v.trim() == "1"),
        note,
    }
}

/// The sysfs directory of the partition or disk holding `path`, and its disk.
fn block_device_of(path: &Path) -> Option<(PathBuf, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major == 0 {
        return None; // tmpfs, overlay, btrfs subvolumes: no block device to ask
    }
    let part = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    let disk = if part.join("partition").exists() {
        part.parent()?.to_path_buf()
    } else {
        part.clone()
    };
    Some((part, disk))
}

/// What the kernel says about the disk holding `data_dir`.
pub fn read_storage(data_dir: &Path) -> Storage {
    let Some((part, disk)) = block_device_of(data_dir) else {
        return Storage {
            note: Some(format!(
                "{} is not on a block device (tmpfs or overlay): no disk health to show",
                data_dir.display()
            )),
            ..Storage::default()
        };
    };
    let device = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part_name = part
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fs_errors = std::fs::read_to_string(format!("/sys/fs/ext4/{part_name}/errors_count"))
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let read = |rel: &str| std::fs::read_to_string(disk.join(rel)).ok();
    storage_from(&StorageInput {
        device: &device,
        read: &read,
        fs_errors,
    })
}

/// The Raspberry Pi firmware's throttling bits (`vcgencmd get_throttled`) in words:
/// what is happening now, and what happened since boot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    pub now: Vec<&'static str>,
    pub since_boot: Vec<&'static str>,
}

pub const UNDER_VOLTAGE: &str = "under-voltage";
pub const FREQUENCY_CAPPED: &str = "ARM frequency capped";
pub const THROTTLED: &str = "throttled";
pub const SOFT_TEMPERATURE_LIMIT: &str = "soft temperature limit";

pub fn throttling(bits: u32) -> Throttling {
    let names = [
        UNDER_VOLTAGE,
        FREQUENCY_CAPPED,
        THROTTLED,
        SOFT_TEMPERATURE_LIMIT,
    ];
    let pick = |shift: u32| {
        names
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << (shift + *i as u32)) != 0)
            .map(|(_, n)| *n)
            .collect()
    };
    Throttling {
        now: pick(0),
        since_boot: pick(16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn clock_state_from_the_kernel_bits() {
        let ok = clock_from_timex(libc::TIME_OK, 0x2001, 12_500, 300);
        assert!(ok.synced);
        assert_eq!(ok.max_error_ms, Some(12.5));
        assert!(ok.detail.contains("12.5 ms"), "{}", ok.detail);
        let unsync = clock_from_timex(libc::TIME_ERROR, libc::STA_UNSYNC, 16_000_000, 16_000_000);
        assert!(!unsync.synced);
        assert!(unsync.detail.contains("not synchronised"));
        // The state alone is enough (a daemon may leave the status bit alone).
        assert!(!clock_from_timex(libc::TIME_ERROR, 0, 0, 0).synced);
        assert!(!clock_from_timex(libc::TIME_OK, libc::STA_UNSYNC, 0, 0).synced);
    }

    #[test]
    fn this_machine_has_a_clock_state() {
        let c = read_clock();
        assert!(!c.detail.is_empty());
        assert!(!c.detail.starts_with("unknown"), "{}", c.detail);
    }

    fn sysfs(files: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |p: &str| map.get(p).cloned()
    }

    #[test]
    fn emmc_wear_is_read_and_worded() {
        let read = sysfs(&[
            ("device/type", "MMC\n"),
            ("device/name", "DG4008\n"),
            ("device/life_time", "0x02 0x0b\n"),
            ("device/pre_eol_info", "0x02\n"),
            (
                "stat",
                "  1000 0 20000 500 300 10 4096 900 0 700 1400 0 0 0 0 0 0\n",
            ),
            ("ro", "0\n"),
        ]);
        let s = storage_from(&StorageInput {
            device: "mmcblk0",
            read: &read,
            fs_errors: Some(0),
        });
        assert_eq!(s.kind.as_deref(), Some("eMMC"));
        assert_eq!(s.model.as_deref(), Some("DG4008"));
        assert_eq!(
            s.life_time,
            Some(("10–20 %".to_string(), "exceeded".to_string()))
        );
        assert_eq!(s.pre_eol.as_deref(), Some("warning"));
        assert_eq!(s.written_since_boot_bytes, Some(4096 * 512));
        assert_eq!(s.note, None);
        assert!(!s.read_only);
    }

    #[test]
    fn sd_cards_say_they_report_no_wear() {
        let read = sysfs(&[
            ("device/type", "SD\n"),
            ("device/name", "SC32G\n"),
            ("stat", "1 0 2 3 4 5 6 7 8 9 10\n"),
            ("ro", "1\n"),
        ]);
        let s = storage_from(&StorageInput {
            device: "mmcblk0",
            read: &read,
            fs_errors: None,
        });
        assert_eq!(s.kind.as_deref(), Some("SD card"));
        assert_eq!(s.life_time, None);
        assert!(s.note.unwrap().contains("no wear data"));
        assert!(s.read_only);
        assert_eq!(s.written_since_boot_bytes, Some(6 * 512));
    }

    #[test]
    fn words_for_wear_fields() {
        assert_eq!(life_time_words(1), "0–10 %");
        assert_eq!(life_time_words(10), "90–100 %");
        assert_eq!(parse_life_time("0x01 0x03"), Some((1, 3)));
        assert_eq!(parse_life_time("0x01"), None);
        assert_eq!(pre_eol_words("0x03").as_deref(), Some("urgent"));
        assert_eq!(pre_eol_words("0x00"), None);
        assert_eq!(disk_kind("sda", None), "USB or SATA disk");
        assert_eq!(disk_kind("nvme0n1", None), "NVMe SSD");
    }

    #[test]
    fn this_machine_has_a_storage_answer() {
        let s = read_storage(Path::new("/"));
        assert!(s.device.is_some() || s.note.is_some(), "{s:?}");
        let tmp = read_storage(Path::new("/dev/shm"));
        assert!(tmp.note.unwrap().contains("not on a block device"));
    }

    #[test]
    fn throttling_bits_in_words() {
        let t = throttling(0x50005);
        assert_eq!(t.now, vec![UNDER_VOLTAGE, THROTTLED]);
        assert_eq!(t.since_boot, vec![UNDER_VOLTAGE, THROTTLED]);
        assert_eq!(throttling(0x80000).since_boot, vec![SOFT_TEMPERATURE_LIMIT]);
        assert_eq!(throttling(0), Throttling::default());
    }
}
