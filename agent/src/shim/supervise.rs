//! The shim's second half: one poll loop over a signalfd (SIGCHLD, SIGTERM, SIGINT)
//! and the container's stdout/stderr pipes, until the container's init exits. Then
//! the exit is recorded (OOM kills read from the cgroup first) and the container,
//! its cgroup and its root filesystem mount are removed.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{read, Pid};

use super::create::{term_requested, Running};
use super::logger::LineBuffer;
use crate::runtime::host;
use crate::runtime::layout::{ContainerDir, ExitRecord};
use crate::runtime::logfmt::Stream;
use crate::runtime::ExitReason;

/// After init exits, how long to keep reading output its (now killed) descendants
/// may still have buffered in the pipes.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// One of the container's output pipes.
struct Output {
    fd: Option<OwnedFd>,
    lines: LineBuffer,
}

pub fn supervise(dir: &ContainerDir, mut running: Running) {
    let status = watch(&mut running, dir);
    let finished_at = Utc::now();
    let exit_code = match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        _ => 128 + Signal::SIGKILL as i32,
    };
    // Must be read before delete removes the cgroup.
    let oom_kills = host::oom_kill_count(&running.id);
    let reason = if exit_code != 0 && oom_kills > 0 {
        ExitReason::OomKilled
    } else if exit_code == 0 {
        ExitReason::Completed
    } else {
        ExitReason::Error
    };
    let record = ExitRecord {
        exit_code,
        reason,
        started_at: Some(running.started_at),
        finished_at,
        message: None,
    };
    if let Err(e) = dir.write_exit(&record) {
        eprintln!("punnet shim: writing {}: {e}", dir.exit().display());
    }

    if let Err(e) = running.container.delete(true) {
        eprintln!("punnet shim: deleting container {}: {e}", running.id);
    }
    // libcontainer leaves a cgroup behind when delete fails half-way.
    if let Err(e) = host::remove_cgroup(&running.id, Duration::from_secs(2)) {
        eprintln!("punnet shim: {e}");
    }
    if let Err(e) = host::unmount_if_mounted(&dir.rootfs()) {
        eprintln!("punnet shim: {e}");
    }
    reap_all();
}

/// Runs the loop until the container's init has exited and its output is drained;
/// returns init's wait status.
fn watch(running: &mut Running, dir: &ContainerDir) -> WaitStatus {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(s);
    }
    // From here on these signals arrive only through the signalfd.
    let _ = mask.thread_block();
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok();

    let (stdout, stderr) = running.take_pipes();
    let mut outputs = [
        Output {
            fd: stdout.map(nonblocking),
            lines: LineBuffer::new(Stream::Stdout),
        },
        Output {
            fd: stderr.map(nonblocking),
            lines: LineBuffer::new(Stream::Stderr),
        },
    ];
    super::memory::release_startup_memory();

    let mut status = None;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    if term_requested() {
        kill_at = Some(request_stop(running, dir));
    }
    // The container may have exited before SIGCHLD was routed to the signalfd.
    reap(running.pid, &mut status);
    let mut buf = [0u8; 8192];

    loop {
        if status.is_some() {
            let deadline = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN_AFTER_EXIT);
            if outputs.iter().all(|o| o.fd.is_none()) || Instant::now() >= deadline {
                break;
            }
        }
        if let Some(at) = kill_at {
            if status.is_none() && Instant::now() >= at {
                force_kill(running);
                kill_at = None;
            }
        }
        // Without a signalfd (it could not be created) SIGCHLD is polled for.
        let fallback_tick = signals
            .is_none()
            .then(|| Instant::now() + Duration::from_millis(100));
        let wake_at = [
            kill_at.filter(|_| status.is_none()),
            drain_until,
            fallback_tick,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match wake_at {
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis() + 1;
                PollTimeout::try_from(ms.min(60_000)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };

        let (signal_ready, output_ready) = {
            let mut fds: Vec<PollFd> = Vec::with_capacity(3);
            if let Some(s) = &signals {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            let output_slots: Vec<usize> = (0..outputs.len())
                .filter(|&i| outputs[i].fd.is_some())
                .collect();
            for &i in &output_slots {
                if let Some(fd) = &outputs[i].fd {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => eprintln!("punnet shim: poll: {e}"),
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let offset = usize::from(signals.is_some());
            let signal_ready = signals.is_some() && ready(&fds[0]);
            let mut output_ready = [false; 2];
            for (k, &i) in output_slots.iter().enumerate() {
                output_ready[i] = ready(&fds[offset + k]);
            }
            (signal_ready, output_ready)
        };

        if signal_ready || signals.is_none() {
            if let Some(s) = &signals {
                while let Ok(Some(info)) = s.read_signal() {
                    let signo = info.ssi_signo as i32;
                    if (signo == Signal::SIGTERM as i32 || signo == Signal::SIGINT as i32)
                        && kill_at.is_none()
                        && status.is_none()
                    {
                        kill_at = Some(request_stop(running, dir));
                    }
                }
            }
            reap(running.pid, &mut status);
        }
        for (i, out) in outputs.iter_mut().enumerate() {
            if output_ready[i] {
                drain(out, &mut buf, &mut running.log);
            }
        }
    }
    for out in &mut outputs {
        if out.fd.is_some() {
            drain(out, &mut buf, &mut running.log);
        }
        out.lines.finish(&mut running.log);
    }
    status.unwrap_or(WaitStatus::Signaled(running.pid, Signal::SIGKILL, false))
}

/// Reads what is available; closes the pipe at end of file.
fn drain(out: &mut Output, buf: &mut [u8], log: &mut super::logger::LogFile) {
    let Some(fd) = &out.fd else { return };
    loop {
        match read(fd.as_raw_fd(), buf) {
            Ok(0) => {
                out.fd = None;
                return;
            }
            Ok(n) => out.lines.push(&buf[..n], log),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return,
            Err(e) => {
                eprintln!("punnet shim: reading container output: {e}");
                out.fd = None;
                return;
            }
        }
    }
}

fn nonblocking(fd: OwnedFd) -> OwnedFd {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)
        .map(OFlag::from_bits_truncate)
        .unwrap_or(OFlag::empty());
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK));
    fd
}

/// Sends SIGTERM to the container's init; returns when to escalate to SIGKILL: after
/// the grace the stop asked for, else the container's own.
fn request_stop(running: &Running, dir: &ContainerDir) -> Instant {
    if let Err(e) = kill(running.pid, Signal::SIGTERM) {
        eprintln!("punnet shim: SIGTERM to {}: {e}", running.pid);
    }
    let asked = std::fs::read_to_string(dir.stop_grace())
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    Instant::now() + asked.unwrap_or(running.grace_period)
}

/// SIGKILLs every process of the container (init alone would do in its own pid
/// namespace; the cgroup-wide kill also covers processes that escaped it).
fn force_kill(running: &mut Running) {
    let _ = kill(running.pid, Signal::SIGKILL);
    if let Err(e) = running.container.kill(Signal::SIGKILL, true) {
        eprintln!("punnet shim: killing container {}: {e}", running.id);
        host::kill_cgroup(&running.id);
    }
}

/// Reaps every exited child; records init's status when it is among them.
fn reap(init: Pid, status: &mut Option<WaitStatus>) {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(s) => {
                if s.pid() == Some(init) {
                    *status = Some(s);
                }
            }
        }
    }
}

/// Reaps any exited children (libcontainer's helpers, a failed create's leftovers), so
/// none is handed to the agent as a zombie when the shim exits.
pub fn reap_all() {
    let mut ignored = None;
    reap(Pid::from_raw(0), &mut ignored);
}
