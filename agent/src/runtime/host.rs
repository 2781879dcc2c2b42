//! What the runtime and the shim learn from, and do to, the host kernel through its
//! files: whether a process still lives (/proc), a container's cgroup directories
//! (v1 per-controller or v2 unified), OOM-kill counters, and mounts. Kept free of
//! libcontainer so that the multi-threaded agent can call it (see FACTS.md).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::layout::ShimPid;
use super::DeviceNode;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Parent of every container's cgroup, so Punnet's cgroups never mix with others'.
const CGROUP_PARENT: &str = "punnet";

/// `linux.cgroupsPath` for a container: explicit and unique (FACTS.md: the default
/// lands at each controller's root).
pub fn cgroups_path(id: &str) -> String {
    format!("/{CGROUP_PARENT}/{id}")
}

/// State letter and start time (clock ticks since boot) of `pid`, from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<(char, u64)> {
    // The command name is in parentheses and may itself hold spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of stat(5); `fields` starts at field 3.
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

/// The calling process's identity for `shim.pid`.
pub fn current_process() -> io::Result<ShimPid> {
    let pid = std::process::id() as i32;
    let (_, start_time) = proc_stat(pid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "cannot read /proc/self/stat"))?;
    Ok(ShimPid { pid, start_time })
}

/// Whether the process is the same one that wrote `shim.pid` and has not exited.
/// A zombie counts as gone: it no longer supervises anything.
pub fn is_alive(shim: ShimPid) -> bool {
    matches!(proc_stat(shim.pid), Some((state, start)) if start == shim.start_time && state != 'Z' && state != 'X')
}

/// The container's existing cgroup directories: one per v1 hierarchy, or the v2 one.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let v2 = Path::new(CGROUP_ROOT).join(CGROUP_PARENT).join(id);
    if v2.is_dir() {
        dirs.push(v2);
    }
    if let Ok(entries) = fs::read_dir(CGROUP_ROOT) {
        for entry in entries.flatten() {
            let dir = entry.path().join(CGROUP_PARENT).join(id);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// Every process in the container's cgroups.
pub fn cgroup_pids(id: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = cgroup_dirs(id)
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process left in the container's cgroups; returns how many it signalled.
pub fn kill_cgroup(id: &str) -> usize {
    let pids = cgroup_pids(id);
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    pids.len()
}

/// Kills what is left in the container's cgroups and removes the directories, waiting
/// up to `timeout` for killed processes to leave them.
pub fn remove_cgroup(id: &str, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        kill_cgroup(id);
        let mut last_err = None;
        for dir in cgroup_dirs(id) {
            if let Err(e) = fs::remove_dir(&dir) {
                last_err = Some(io::Error::new(
                    e.kind(),
                    format!("removing cgroup {}: {e}", dir.display()),
                ));
            }
        }
        match last_err {
            None => return Ok(()),
            Some(e) if Instant::now() >= deadline => return Err(e),
            Some(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// How many processes the kernel OOM-killed in the container's memory cgroup
/// (v1 `memory.oom_control`, v2 `memory.events`). Read it before the cgroup is removed.
pub fn oom_kill_count(id: &str) -> u64 {
    let v1 = Path::new(CGROUP_ROOT)
        .join("memory")
        .join(CGROUP_PARENT)
        .join(id)
        .join("memory.oom_control");
    let v2 = Path::new(CGROUP_ROOT)
        .join(CGROUP_PARENT)
        .join(id)
        .join("memory.events");
    [v1, v2]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|text| counter(&text, "oom_kill"))
        .max()
        .unwrap_or(0)
}

fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether something is mounted exactly at `path` in this process's mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| Path::new(&unescape_mountinfo(mount_point)) == target)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let digit = |k: usize| u32::from(bytes[i + k] - b'0');
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts `path` if something is mounted there; a busy mount is detached instead.
pub fn unmount_if_mounted(path: &Path) -> io::Result<()> {
    while is_mount_point(path) {
        umount2(path, MntFlags::empty())
            .or_else(|e| match e {
                nix::errno::Errno::EBUSY => umount2(path, MntFlags::MNT_DETACH),
                other => Err(other),
            })
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("unmounting {}: {e}", path.display()),
                )
            })?;
    }
    Ok(())
}

/// The device node at `path` as a container device, `None` when it is not a character
/// or block device (or does not exist).
pub fn device_node(path: &Path, container_path: &str, read_only: bool) -> Option<DeviceNode> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(DeviceNode {
        container_path: container_path.to_string(),
        kind,
        major: i64::from(nix::sys::stat::major(rdev) as u32),
        minor: i64::from(nix::sys::stat::minor(rdev) as u32),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        read_only,
    })
}

/// Every device node under the host's /dev (two levels: `/dev/snd/*`, `/dev/dri/*`), for
/// privileged containers, as containerd gives them. Pseudo-terminals and the standard
/// nodes the runtime creates anyway are left out.
pub fn host_devices() -> Vec<DeviceNode> {
    let mut out = Vec::new();
    let mut dirs = vec![(PathBuf::from("/dev"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if depth == 0 && matches!(name.as_str(), "pts" | "shm" | "mqueue" | "console" | "ptmx")
            {
                continue;
            }
            // entry.file_type does not follow links: /dev/stdout and friends are links
            // the runtime makes itself.
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_symlink() {
                continue;
            }
            if ft.is_dir() && depth < 2 {
                dirs.push((path, depth + 1));
            } else if let Some(dev) = device_node(&path, &path.to_string_lossy(), false) {
                out.push(dev);
            }
        }
    }
    out.sort_by(|a, b| a.container_path.cmp(&b.container_path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let stat = "1234 (we ird) (x)) S 1 1234 1234 0 -1 4194560 99 0 0 0 0 0 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = current_process().unwrap();
        assert!(is_alive(me));
        assert!(!is_alive(ShimPid {
            start_time: me.start_time + 1,
            ..me
        }));
    }

    #[test]
    fn oom_counters_are_read_from_v1_and_v2_formats() {
        assert_eq!(
            counter("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            2
        );
        assert_eq!(
            counter("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n", "oom_kill"),
            1
        );
        assert_eq!(counter("", "oom_kill"), 0);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
    }
}
