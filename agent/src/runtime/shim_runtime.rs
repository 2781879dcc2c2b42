//! The real `Runtime`: every container runs under its own shim process (the agent
//! binary in shim mode, see `crate::shim`), and all state lives in the container's
//! directory and in /proc. Nothing here depends on being the parent of a container
//! or of a shim started by an earlier agent, so a restarted agent re-adopts what runs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::host;
use super::layout::{self, ContainerDir, ExitRecord, ShimSpec};
use super::{ContainerConfig, ContainerInfo, ContainerState, ExitReason, Runtime, RuntimeError};
use crate::image::{ImageError, ImageStore};
use crate::shim::Report;

/// How long `start` waits for the shim's report by default.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time `remove` gives a stopping shim beyond the container's grace period.
const STOP_SLACK: Duration = Duration::from_secs(5);
const LOAD_HINT: &str = "load it with `punnet-agent image load FILE`";
/// Name prefix of a container dir being written (`.creating-<id>-<agent pid>`).
const CREATING_PREFIX: &str = ".creating-";

pub struct ShimRuntime {
    /// `<data-dir>/containers`: one directory per container.
    root: PathBuf,
    images: Arc<ImageStore>,
    /// The agent binary and the arguments before the container dir (`["shim"]`).
    shim_exe: PathBuf,
    shim_args: Vec<String>,
    start_timeout: Duration,
    /// Shims this instance spawned are its children; kept to reap them when they exit.
    children: Mutex<HashMap<String, Child>>,
    /// Ids whose `start` is under way: `list` must not mistake them for lost shims.
    starting: Mutex<HashSet<String>>,
}

impl ShimRuntime {
    pub fn new(
        root: PathBuf,
        images: Arc<ImageStore>,
        shim_exe: PathBuf,
        shim_args: Vec<String>,
    ) -> ShimRuntime {
        ShimRuntime {
            root,
            images,
            shim_exe,
            shim_args,
            start_timeout: DEFAULT_START_TIMEOUT,
            children: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
        }
    }

    /// How long `start` waits for the shim to report (default 30 s).
    pub fn with_start_timeout(mut self, timeout: Duration) -> ShimRuntime {
        self.start_timeout = timeout;
        self
    }

    fn dir(&self, id: &str) -> ContainerDir {
        ContainerDir::new(self.root.join(id))
    }

    fn existing_dir(&self, id: &str) -> Result<ContainerDir, RuntimeError> {
        let not_found = || RuntimeError::NotFound { id: id.to_string() };
        if layout::invalid_id_reason(id).is_some() {
            return Err(not_found());
        }
        let dir = self.dir(id);
        if !dir.spec().is_file() {
            return Err(not_found());
        }
        Ok(dir)
    }

    fn start_inner(&self, config: &ContainerConfig) -> Result<ContainerInfo, RuntimeError> {
        let id = &config.id;
        let start_err = |message: String| RuntimeError::Start {
            id: id.clone(),
            message,
        };
        if let Some(reason) = layout::invalid_id_reason(id) {
            return Err(start_err(format!("invalid id: {reason}")));
        }
        let image = self.images.resolve(&config.image).map_err(|e| match e {
            ImageError::NotPresent { .. } => RuntimeError::ImageNotPresent {
                image: config.image.clone(),
                hint: LOAD_HINT.to_string(),
            },
            other => start_err(format!("image {:?}: {other}", config.image)),
        })?;
        let dir = self.dir(id);
        if dir.path().exists() {
            return Err(start_err(format!(
                "{} already exists; ids are per run, remove the old one first",
                dir.path().display()
            )));
        }
        self.write_container_dir(
            &dir,
            &ShimSpec {
                config: config.clone(),
                image,
            },
        )?;

        let mut child = self.spawn_shim(&dir).map_err(|e| {
            let message = format!("spawning shim {}: {e}", self.shim_exe.display());
            self.record_start_failure(&dir, &message);
            start_err(message)
        })?;
        if let Some((_, start_time)) = host::proc_stat(child.id() as i32) {
            let _ = dir.write_shim_pid(layout::ShimPid {
                pid: child.id() as i32,
                start_time,
            });
        }
        let report = read_report(&mut child, self.start_timeout);
        self.lock_children().insert(id.clone(), child);
        match report {
            Ok(Report::Started { pid }) => {
                let started_at = dir
                    .read_started()
                    .ok()
                    .flatten()
                    .map_or_else(SystemTime::now, |s| s.started_at.into());
                Ok(ContainerInfo {
                    config: config.clone(),
                    state: ContainerState::Running { pid, started_at },
                })
            }
            Ok(Report::Failed(message)) => Err(start_err(message)),
            Err(problem) => {
                let message = format!("{problem}{}", shim_log_tail(&dir));
                self.kill_shim(&dir);
                self.record_start_failure(&dir, &message);
                Err(start_err(message))
            }
        }
    }

    /// Writes the directory under a hidden name and renames it into place, so `list`
    /// never sees a container without its `container.json`.
    fn write_container_dir(&self, dir: &ContainerDir, spec: &ShimSpec) -> Result<(), RuntimeError> {
        let io_err = |context: String| move |source| RuntimeError::Io { context, source };
        fs::create_dir_all(&self.root)
            .map_err(io_err(format!("creating {}", self.root.display())))?;
        let tmp = self.root.join(format!(
            "{CREATING_PREFIX}{}-{}",
            spec.config.id,
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&tmp);
        let result = fs::create_dir(&tmp)
            .and_then(|()| {
                layout::write_json_atomically(&ContainerDir::new(tmp.clone()).spec(), spec)
            })
            .and_then(|()| fs::rename(&tmp, dir.path()));
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(io_err(format!(
                "creating container dir {}",
                dir.path().display()
            ))(e));
        }
        Ok(())
    }

    fn spawn_shim(&self, dir: &ContainerDir) -> io::Result<Child> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.shim_log())?;
        Command::new(&self.shim_exe)
            .args(&self.shim_args)
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
    }

    /// Records a start that failed outside the shim (spawn error, crash, timeout).
    fn record_start_failure(&self, dir: &ContainerDir, message: &str) {
        if matches!(dir.read_exit(), Ok(Some(_))) {
            return;
        }
        let _ = dir.write_exit(&ExitRecord {
            exit_code: 128,
            reason: ExitReason::StartError,
            started_at: None,
            finished_at: Utc::now(),
            message: Some(message.to_string()),
        });
    }

    /// SIGKILLs a shim that cannot be reasoned with, and whatever runs in its cgroup.
    fn kill_shim(&self, dir: &ContainerDir) {
        if let Ok(Some(shim)) = dir.read_shim_pid() {
            if host::is_alive(shim) {
                let _ = kill(Pid::from_raw(shim.pid), Signal::SIGKILL);
            }
        }
        if let Some(id) = dir.path().file_name().and_then(|n| n.to_str()) {
            host::kill_cgroup(id);
            self.reap_child(id);
        }
    }

    fn lock_children(&self) -> MutexGuard<'_, HashMap<String, Child>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaps our own shim child if it exited, so it does not linger as a zombie.
    fn reap_child(&self, id: &str) {
        let mut children = self.lock_children();
        if let Some(child) = children.get_mut(id) {
            // Err: someone else (reap_children) already reaped it.
            if !matches!(child.try_wait(), Ok(None)) {
                children.remove(id);
            }
        }
    }

    fn shim_alive(&self, dir: &ContainerDir, id: &str) -> bool {
        self.reap_child(id);
        matches!(dir.read_shim_pid(), Ok(Some(shim)) if host::is_alive(shim))
    }

    fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let dir = self.existing_dir(id)?;
        let io_err = |context: String| move |source| RuntimeError::Io { context, source };
        let spec = dir
            .read_spec()
            .map_err(io_err(format!("reading {}", dir.spec().display())))?;
        let exited = |record: ExitRecord| ContainerInfo {
            config: spec.config.clone(),
            state: ContainerState::Exited {
                exit_code: record.exit_code,
                reason: record.reason,
                started_at: record.started_at.map(Into::into),
                finished_at: record.finished_at.into(),
            },
        };
        let read_exit = || {
            dir.read_exit()
                .map_err(io_err(format!("reading {}", dir.exit().display())))
        };
        if let Some(record) = read_exit()? {
            return Ok(exited(record));
        }
        let started = dir.read_started().ok().flatten();
        if self.shim_alive(&dir, id) {
            let state = match started {
                Some(s) => ContainerState::Running {
                    pid: s.pid,
                    started_at: s.started_at.into(),
                },
                // Still being created by a shim this instance did not spawn.
                None => ContainerState::Running {
                    pid: 0,
                    started_at: fs::metadata(dir.spec())
                        .and_then(|m| m.modified())
                        .unwrap_or_else(|_| SystemTime::now()),
                },
            };
            return Ok(ContainerInfo {
                config: spec.config,
                state,
            });
        }
        // The shim writes exit.json before it exits: check again now that it is gone.
        if let Some(record) = read_exit()? {
            return Ok(exited(record));
        }
        let killed = host::kill_cgroup(id);
        let record = ExitRecord {
            exit_code: 128 + Signal::SIGKILL as i32,
            reason: ExitReason::Lost,
            started_at: started.map(|s| s.started_at),
            finished_at: Utc::now(),
            message: Some(format!(
                "the container's shim died without recording its exit; {killed} leftover process(es) killed"
            )),
        };
        dir.write_exit(&record)
            .map_err(io_err(format!("writing {}", dir.exit().display())))?;
        Ok(exited(record))
    }

    fn remove_inner(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.existing_dir(id)?;
        if self.shim_alive(&dir, id) {
            let grace = dir
                .read_spec()
                .map(|s| s.config.grace_period)
                .unwrap_or(Duration::from_secs(30));
            if let Ok(Some(shim)) = dir.read_shim_pid() {
                let _ = kill(Pid::from_raw(shim.pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + grace + STOP_SLACK;
            while self.shim_alive(&dir, id) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if self.shim_alive(&dir, id) {
                self.kill_shim(&dir);
            }
        }
        let io_err = |context: String| move |source| RuntimeError::Io { context, source };
        host::unmount_if_mounted(&dir.rootfs()).map_err(io_err(format!(
            "container {id}: unmounting its root filesystem"
        )))?;
        host::remove_cgroup(id, Duration::from_secs(2))
            .map_err(io_err(format!("container {id}: removing its cgroup")))?;
        if host::is_mount_point(&dir.rootfs()) {
            return Err(io_err(format!(
                "container {id}: removing {}",
                dir.path().display()
            ))(io::Error::other(
                "its root filesystem is still mounted",
            )));
        }
        fs::remove_dir_all(dir.path()).map_err(io_err(format!(
            "container {id}: removing {}",
            dir.path().display()
        )))?;
        self.lock_children().remove(id);
        Ok(())
    }
}

impl Runtime for ShimRuntime {
    /// Creates and starts the container through a new shim. When the container cannot
    /// be started the error says why, and the container stays listed as `Exited` with
    /// `ExitReason::StartError` until `remove`.
    fn start(&self, config: &ContainerConfig) -> Result<ContainerInfo, RuntimeError> {
        if !self
            .starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(config.id.clone())
        {
            return Err(RuntimeError::Start {
                id: config.id.clone(),
                message: "already being started".into(),
            });
        }
        let result = self.start_inner(config);
        self.starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&config.id);
        result
    }

    fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.existing_dir(id)?;
        if matches!(dir.read_exit(), Ok(Some(_))) {
            return Ok(());
        }
        if let Ok(Some(shim)) = dir.read_shim_pid() {
            if host::is_alive(shim) {
                kill(Pid::from_raw(shim.pid), Signal::SIGTERM).map_err(|e| RuntimeError::Io {
                    context: format!("container {id}: signalling its shim (pid {})", shim.pid),
                    source: e.into(),
                })?;
            }
        }
        Ok(())
    }

    fn stop_with_grace(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let dir = self.existing_dir(id)?;
        fs::write(dir.stop_grace(), grace.as_secs().to_string()).map_err(|source| {
            RuntimeError::Io {
                context: format!("container {id}: recording its stop grace period"),
                source,
            }
        })?;
        self.stop(id)
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.remove_inner(id)
    }

    fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RuntimeError::Io {
                    context: format!("listing {}", self.root.display()),
                    source,
                })
            }
        };
        let starting = self
            .starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut infos = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(CREATING_PREFIX) {
                remove_abandoned_tmp(&entry.path(), rest);
                continue;
            }
            if layout::invalid_id_reason(&name).is_some() || starting.contains(&name) {
                continue; // temp dirs (".creating-…") and foreign files
            }
            match self.inspect(&name) {
                Ok(info) => infos.push(info),
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(container = %name, error = %e, "skipping unreadable container")
                }
            }
        }
        infos.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        Ok(infos)
    }
}

/// Removes a half-written container dir whose writer (an agent that crashed in
/// `start`) is gone; `rest` is `<id>-<pid>`.
fn remove_abandoned_tmp(path: &std::path::Path, rest: &str) {
    let pid = rest.rsplit('-').next().and_then(|p| p.parse::<i32>().ok());
    let writer_alive =
        pid.is_some_and(|p| p as u32 == std::process::id() || host::proc_stat(p).is_some());
    if !writer_alive {
        let _ = fs::remove_dir_all(path);
    }
}

/// Waits for the shim's one-line report on its stdout.
fn read_report(child: &mut Child, timeout: Duration) -> Result<Report, String> {
    let Some(mut stdout) = child.stdout.take() else {
        return Err("the shim's stdout was not captured".into());
    };
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("the shim did not report within {timeout:?}"));
        }
        let ms = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("waiting for the shim: {e}")),
        }
        let n = stdout
            .read(&mut buf)
            .map_err(|e| format!("reading the shim's report: {e}"))?;
        if n == 0 {
            let status = child
                .try_wait()
                .ok()
                .flatten()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            return Err(format!("the shim exited without reporting{status}"));
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(&line[..end]);
            return Report::parse(&text).ok_or_else(|| format!("the shim reported {text:?}"));
        }
    }
}

/// The last lines of the shim's own log, to explain a crash.
fn shim_log_tail(dir: &ContainerDir) -> String {
    let text = fs::read_to_string(dir.shim_log()).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    if tail.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = tail.into_iter().rev().collect();
    format!(
        "; shim log {}: {}",
        dir.shim_log().display(),
        lines.join(" | ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_log_tail_is_empty_without_a_log() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            shim_log_tail(&ContainerDir::new(dir.path().to_path_buf())),
            ""
        );
        fs::write(dir.path().join("shim.log"), "a\nb\n").unwrap();
        assert!(shim_log_tail(&ContainerDir::new(dir.path().to_path_buf())).ends_with("a | b"));
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let root = tempfile::tempdir().unwrap();
        let images = Arc::new(ImageStore::open(&root.path().join("images")).unwrap());
        let rt = ShimRuntime::new(
            root.path().join("containers"),
            images,
            "/bin/false".into(),
            vec![],
        );
        assert!(matches!(
            rt.stop("nope"),
            Err(RuntimeError::NotFound { .. })
        ));
        assert!(matches!(
            rt.remove("../etc"),
            Err(RuntimeError::NotFound { .. })
        ));
        assert!(rt.list().unwrap().is_empty());
    }

    #[test]
    fn a_missing_image_names_the_load_command() {
        let root = tempfile::tempdir().unwrap();
        let images = Arc::new(ImageStore::open(&root.path().join("images")).unwrap());
        let rt = ShimRuntime::new(
            root.path().join("containers"),
            images,
            "/bin/false".into(),
            vec![],
        );
        let config = ContainerConfig {
            id: "c1".into(),
            pod_uid: "u".into(),
            pod_namespace: "default".into(),
            pod_name: "p".into(),
            container_name: "c".into(),
            restart_count: 0,
            image: "busybox:1.36".into(),
            command: vec![],
            args: vec![],
            env: vec![],
            working_dir: None,
            memory_limit_bytes: None,
            cpu_limit_millis: None,
            mounts: vec![],
            host_network: true,
            netns_path: None,
            devices: vec![],
            security: Default::default(),
            hooks: Default::default(),
            grace_period: Duration::from_secs(1),
            log_path: root.path().join("c.log"),
        };
        let err = rt.start(&config).unwrap_err();
        assert!(matches!(err, RuntimeError::ImageNotPresent { .. }), "{err}");
        assert!(err.to_string().contains("punnet-agent image load"), "{err}");
    }
}
