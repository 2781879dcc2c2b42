//! A container's directory under `<data-dir>/containers/<id>/` and the small records in
//! it. The runtime (agent process) and the container's shim share nothing but this
//! directory, so everything either needs after a restart of the other is written here,
//! each file whole or not at all (temp file + rename).
//!
//! ```text
//! container.json   ShimSpec: what to run (runtime writes it before spawning the shim)
//! shim.pid         "<pid> <start time>" of the shim (shim, first thing)
//! started.json     StartedRecord: container pid and start time (shim, once it runs)
//! exit.json        ExitRecord: how it ended (shim, or the runtime for a lost shim)
//! shim.log         the shim's own stderr (diagnostics, not the container's output)
//! bundle/          OCI bundle: config.json and the rootfs mount point
//! upper/ work/     the overlayfs upper and work dirs: the container's writes
//! etc/             hosts, hostname and resolv.conf bind-mounted into the container
//! state/           libcontainer's state root
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ContainerConfig, ExitReason};
use crate::image::ResolvedImage;

/// Everything the shim needs; written by the runtime, read by the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    pub config: ContainerConfig,
    pub image: ResolvedImage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRecord {
    /// Host pid of the container's init process.
    pub pid: i32,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit status; 128 + signal when the process was killed by a signal.
    pub exit_code: i32,
    pub reason: ExitReason,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    /// Why the container failed to start, or what happened to a lost shim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Identifies the shim process across pid reuse: the pid plus its start time in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimPid {
    pub pid: i32,
    pub start_time: u64,
}

/// Paths of one container's directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    path: PathBuf,
}

impl ContainerDir {
    pub fn new(path: PathBuf) -> ContainerDir {
        ContainerDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn spec(&self) -> PathBuf {
        self.path.join("container.json")
    }
    pub fn shim_pid(&self) -> PathBuf {
        self.path.join("shim.pid")
    }
    /// Seconds of grace for this stop when it differs from the container's own (a failed
    /// probe's `terminationGracePeriodSeconds`); read by the shim on SIGTERM.
    pub fn stop_grace(&self) -> PathBuf {
        self.path.join("stop-grace")
    }
    pub fn started(&self) -> PathBuf {
        self.path.join("started.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.path.join("exit.json")
    }
    pub fn shim_log(&self) -> PathBuf {
        self.path.join("shim.log")
    }
    pub fn bundle(&self) -> PathBuf {
        self.path.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("bundle").join("rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
    pub fn etc(&self) -> PathBuf {
        self.path.join("etc")
    }
    pub fn state_root(&self) -> PathBuf {
        self.path.join("state")
    }

    pub fn read_spec(&self) -> io::Result<ShimSpec> {
        read_json(&self.spec())?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    pub fn read_started(&self) -> io::Result<Option<StartedRecord>> {
        read_json(&self.started())
    }

    pub fn read_exit(&self) -> io::Result<Option<ExitRecord>> {
        read_json(&self.exit())
    }

    pub fn write_exit(&self, record: &ExitRecord) -> io::Result<()> {
        write_json_atomically(&self.exit(), record)
    }

    pub fn read_shim_pid(&self) -> io::Result<Option<ShimPid>> {
        let text = match fs::read_to_string(self.shim_pid()) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        match (parts.next(), parts.next()) {
            (Some(Ok(pid)), Some(Ok(start_time))) => Ok(Some(ShimPid {
                pid: pid as i32,
                start_time,
            })),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: expected \"<pid> <start time>\", found {text:?}",
                    self.shim_pid().display()
                ),
            )),
        }
    }

    pub fn write_shim_pid(&self, shim: ShimPid) -> io::Result<()> {
        write_atomically(
            &self.shim_pid(),
            format!("{} {}\n", shim.pid, shim.start_time).as_bytes(),
        )
    }
}

/// Reads a JSON record; `Ok(None)` when the file does not exist (yet).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` next to `path` under a unique temp name, syncs, and renames it over
/// `path`: a reader sees the old file or the new one, never a partial one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.{}.{n}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Why an id cannot name a container, or `None` if it can. Ids become directory names,
/// cgroup paths and libcontainer ids, so they are kept to `[a-z0-9-]{1,64}`.
pub fn invalid_id_reason(id: &str) -> Option<&'static str> {
    if id.is_empty() || id.len() > 64 {
        return Some("must be 1 to 64 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("may only contain a-z, 0-9 and '-'");
    }
    if id.starts_with('-') {
        return Some("must not start with '-'");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_restricted_to_safe_names() {
        assert_eq!(invalid_id_reason("web-1-abc"), None);
        assert!(invalid_id_reason("").is_some());
        assert!(invalid_id_reason("../x").is_some());
        assert!(invalid_id_reason("A").is_some());
        assert!(invalid_id_reason(&"a".repeat(65)).is_some());
        assert!(invalid_id_reason("-a").is_some());
    }

    #[test]
    fn records_round_trip_and_missing_files_read_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let c = ContainerDir::new(dir.path().to_path_buf());
        assert_eq!(c.read_exit().unwrap(), None);
        assert_eq!(c.read_shim_pid().unwrap(), None);
        let exit = ExitRecord {
            exit_code: 137,
            reason: ExitReason::OomKilled,
            started_at: Some(Utc::now()),
            finished_at: Utc::now(),
            message: None,
        };
        c.write_exit(&exit).unwrap();
        assert_eq!(c.read_exit().unwrap(), Some(exit));
        let shim = ShimPid {
            pid: 42,
            start_time: 123456,
        };
        c.write_shim_pid(shim).unwrap();
        assert_eq!(c.read_shim_pid().unwrap(), Some(shim));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
