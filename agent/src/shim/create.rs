//! The shim's first half: from `container.json` to a running container. Mounts the
//! root filesystem, writes the OCI bundle, and creates and starts the container with
//! libcontainer, its stdout and stderr on pipes the shim keeps. Undoes its own steps
//! when one fails.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{pipe2, Pid};

use super::logger::LogFile;
use super::rootfs::{self, RootfsError};
use crate::runtime::layout::{write_json_atomically, ContainerDir, ShimSpec, StartedRecord};
use crate::runtime::spec::{
    bounding_set, build_spec, nofile_hard_limit, resolve_user, SpecError, SpecInputs,
};
use crate::runtime::{host, ContainerConfig, Seccomp};
use libcontainer::oci_spec::runtime::LinuxSeccomp;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("reading {path}: {source}")]
    ReadSpec {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("container {id}: preparing the root filesystem: {source}")]
    Rootfs {
        id: String,
        #[source]
        source: RootfsError,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("container {id}: {what}: {source}")]
    Io {
        id: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("container {id}: libcontainer {step} failed: {}", chain(source))]
    Libcontainer {
        id: String,
        step: &'static str,
        #[source]
        source: Box<LibcontainerError>,
    },
}

/// libcontainer's errors often keep the useful part ("No such file or directory") in
/// their sources; the start error the user sees should carry it.
pub(super) fn chain(e: &LibcontainerError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A started container and what the shim holds for it.
pub struct Running {
    pub container: Container,
    pub id: String,
    pub pid: Pid,
    pub started_at: DateTime<Utc>,
    pub grace_period: Duration,
    /// Read ends of the container's stdout and stderr pipes, until the supervisor takes them.
    pipes: Option<(OwnedFd, OwnedFd)>,
    pub log: LogFile,
}

impl Running {
    pub fn take_pipes(&mut self) -> (Option<OwnedFd>, Option<OwnedFd>) {
        match self.pipes.take() {
            Some((out, err)) => (Some(out), Some(err)),
            None => (None, None),
        }
    }
}

static TERM_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn remember_term(_: libc::c_int) {
    TERM_REQUESTED.store(true, Ordering::SeqCst);
}

/// Catches SIGTERM/SIGINT in a flag until the signalfd takes over. A handler rather
/// than a blocked mask or SIG_IGN: libcontainer's children inherit masks and ignored
/// signals into the container's process, but exec resets handlers.
pub fn install_term_flag() {
    let action = SigAction::new(
        SigHandler::Handler(remember_term),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// Whether a SIGTERM/SIGINT arrived while the flag handler was installed.
pub fn term_requested() -> bool {
    TERM_REQUESTED.load(Ordering::SeqCst)
}

fn set_sigpipe(handler: SigHandler) {
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL and SIG_IGN are not functions; no handler code runs.
    let _ = unsafe { sigaction(Signal::SIGPIPE, &action) };
}

pub fn create_and_start(dir: &ContainerDir) -> Result<Running, ShimError> {
    let spec = dir.read_spec().map_err(|source| ShimError::ReadSpec {
        path: dir.spec().display().to_string(),
        source,
    })?;
    let id = spec.config.id.clone();
    let rootfs_err = |source| ShimError::Rootfs {
        id: id.clone(),
        source,
    };
    rootfs::mount_overlay(dir, &spec.image.layers).map_err(rootfs_err)?;
    let result = create_on_rootfs(dir, &spec);
    if result.is_err() {
        if let Err(e) = host::unmount_if_mounted(&dir.rootfs()) {
            eprintln!("punnet shim: {e}");
        }
    }
    result
}

/// Device nodes among the hostPath mounts become devices of the container (made in its
/// /dev and allowed in its device cgroup) instead of bind mounts the device cgroup would
/// refuse; a privileged container gets every host device.
fn with_devices(mut config: ContainerConfig) -> ContainerConfig {
    let mut mounts = Vec::new();
    for m in std::mem::take(&mut config.mounts) {
        match host::device_node(&m.host_path, &m.container_path, m.read_only) {
            Some(dev) => config.devices.push(dev),
            None => mounts.push(m),
        }
    }
    config.mounts = mounts;
    if config.security.privileged {
        for dev in host::host_devices() {
            if !config
                .devices
                .iter()
                .any(|d| d.container_path == dev.container_path)
            {
                config.devices.push(dev);
            }
        }
    }
    config
}

/// The profile a `Localhost` seccomp setting names: an OCI `linux.seccomp` JSON file.
fn localhost_seccomp(config: &ContainerConfig) -> Result<Option<LinuxSeccomp>, SpecError> {
    let Seccomp::Localhost(path) = &config.security.seccomp else {
        return Ok(None);
    };
    let err = |reason: String| SpecError::SeccompProfile {
        id: config.id.clone(),
        path: path.clone(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| err(format!("is not an OCI seccomp profile: {e}")))
}

fn create_on_rootfs(dir: &ContainerDir, spec: &ShimSpec) -> Result<Running, ShimError> {
    let config = &with_devices(spec.config.clone());
    let id = config.id.clone();
    let io_err = |what: String| {
        let id = id.clone();
        move |source: io::Error| ShimError::Io { id, what, source }
    };

    let hostname = rootfs::write_etc_files(dir, spec).map_err(|source| ShimError::Rootfs {
        id: id.clone(),
        source,
    })?;
    let user = resolve_user(
        &id,
        spec.image.config.user.as_deref(),
        rootfs::read_image_etc_file(dir, "passwd").as_deref(),
        rootfs::read_image_etc_file(dir, "group").as_deref(),
    )?;
    let etc_dir = dir.etc();
    let oci_spec = build_spec(&SpecInputs {
        config,
        image_ref: &config.image,
        image: &spec.image.config,
        user,
        hostname,
        etc_dir: &etc_dir,
        nofile_hard: nofile_hard_limit(),
        localhost_seccomp: localhost_seccomp(config)?,
        bounding: bounding_set(),
    })?;
    let config_json = dir.bundle().join("config.json");
    oci_spec
        .save(&config_json)
        .map_err(|e| io_err(format!("writing {}", config_json.display()))(io::Error::other(e)))?;

    let log = LogFile::open(config.log_path.clone()).map_err(io_err(format!(
        "opening log file {}",
        config.log_path.display()
    )))?;
    let (stdout_r, stdout_w) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("creating a pipe".into())(e.into()))?;
    let (stderr_r, stderr_w) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("creating a pipe".into())(e.into()))?;
    let stdin = fs::File::open("/dev/null").map_err(io_err("opening /dev/null".into()))?;
    let state_root = dir.state_root();
    fs::create_dir_all(&state_root)
        .map_err(io_err(format!("creating {}", state_root.display())))?;

    // Rust starts programs with SIGPIPE ignored, and an ignored signal survives exec:
    // the container's processes must get the default.
    set_sigpipe(SigHandler::SigDfl);
    let built = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_root_path(&state_root)
        .map(|b| {
            b.with_stdin(OwnedFd::from(stdin))
                .with_stdout(stdout_w)
                .with_stderr(stderr_w)
        })
        .and_then(ContainerBuilder::validate_id)
        .and_then(|b| b.as_init(dir.bundle()).with_systemd(false).build());
    set_sigpipe(SigHandler::SigIgn);
    let mut container = built.map_err(|source| ShimError::Libcontainer {
        id: id.clone(),
        step: "create",
        source: Box::new(source),
    })?;

    if let Err(source) = container.start() {
        let _ = container.delete(true);
        return Err(ShimError::Libcontainer {
            id,
            step: "start",
            source: Box::new(source),
        });
    }
    let started_at = Utc::now();
    let Some(pid) = container.pid() else {
        let _ = container.delete(true);
        return Err(io_err("libcontainer reported no pid".into())(
            io::Error::other("container has no init pid"),
        ));
    };
    let record = StartedRecord {
        pid: pid.as_raw(),
        started_at,
    };
    if let Err(e) = write_json_atomically(&dir.started(), &record) {
        let _ = container.delete(true);
        return Err(io_err(format!("writing {}", dir.started().display()))(e));
    }
    Ok(Running {
        container,
        id,
        pid,
        started_at,
        grace_period: config.grace_period,
        pipes: Some((stdout_r, stderr_r)),
        log,
    })
}
