//! Running a command inside a running container (`kubectl exec`, exec probes and
//! exec lifecycle hooks), the way `runc exec`/`youki exec` do it: a new process joins
//! the container's namespaces and cgroup and runs with its environment, user,
//! working directory, capabilities and limits (libcontainer's tenant builder).
//!
//! libcontainer forks and must not run inside the multi-threaded agent (FACTS.md),
//! so [`ContainerExec::exec`] re-executes the agent binary as
//! `punnet-agent shim-exec <container-dir> <timeout-ms> -- <argv>...`, a short-lived
//! single-threaded helper. The helper captures the command's combined stdout and
//! stderr (the first 10 KiB, like the kubelet), kills the command's process group when
//! the timeout passes, and prints one JSON [`HelperReport`] line on its stdout.
//!
//! One gap against runc: libcontainer 0.7's tenant keeps only the namespaces and cgroup
//! of the container's `linux` section, so the exec'd process does not get the
//! container's seccomp filter.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, read, Pid};
use serde::{Deserialize, Serialize};

use crate::runtime::layout::{self, ContainerDir};

/// The first argument that selects the exec helper.
pub const SUBCOMMAND: &str = "shim-exec";

/// How much of the command's output is kept, as the kubelet does for exec probes.
pub const OUTPUT_CAP: usize = 10 * 1024;

/// How long the agent waits for a helper beyond the command's own timeout before it
/// gives up on the helper (a hung libcontainer step).
const HELPER_SLACK: Duration = Duration::from_secs(10);

/// After the command exits, how long output its background children still write is read.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(50);

/// How a command run in a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// The exit status; 128 + signal when killed (137 after a timeout).
    pub exit_code: i32,
    /// Combined stdout and stderr, the first [`OUTPUT_CAP`] bytes.
    pub output: Vec<u8>,
    /// The command outlived its timeout and was killed.
    pub timed_out: bool,
}

impl ExecOutput {
    pub fn output_lossy(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {id:?}: invalid id: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("container {id}: exec needs a command")]
    EmptyCommand { id: String },
    #[error("container {id} not found under {root}")]
    NotFound { id: String, root: String },
    #[error("container {id}: starting the exec helper {exe}: {source}")]
    Spawn {
        id: String,
        exe: String,
        #[source]
        source: io::Error,
    },
    /// The helper ran and says why the command could not be started.
    #[error("container {id}: exec failed: {message}")]
    Failed { id: String, message: String },
    #[error("container {id}: the exec helper ended without a report{detail}")]
    NoReport { id: String, detail: String },
    #[error("container {id}: the exec helper did not finish within {after:?} and was killed")]
    HelperHung { id: String, after: Duration },
}

/// Runs commands in the containers under one runtime root by re-executing `exe` (the
/// agent or controller binary, whose `main` hands `shim-exec` to [`super::dispatch`]).
#[derive(Debug, Clone)]
pub struct ContainerExec {
    exe: PathBuf,
    /// `<data-dir>/containers`, the `ShimRuntime` root.
    containers_root: PathBuf,
}

impl ContainerExec {
    pub fn new(exe: PathBuf, containers_root: PathBuf) -> ContainerExec {
        ContainerExec {
            exe,
            containers_root,
        }
    }

    /// Uses the running binary as the helper.
    pub fn current(containers_root: PathBuf) -> io::Result<ContainerExec> {
        Ok(ContainerExec::new(
            std::env::current_exe()?,
            containers_root,
        ))
    }

    /// Runs `argv` in the running container `id` and waits for it, at most `timeout`
    /// (then it is killed and `timed_out` set). Blocking: from async code call it on
    /// the blocking pool.
    pub fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        if let Some(reason) = layout::invalid_id_reason(id) {
            return Err(ExecError::InvalidId {
                id: id.to_string(),
                reason,
            });
        }
        if argv.is_empty() {
            return Err(ExecError::EmptyCommand { id: id.to_string() });
        }
        let dir = self.containers_root.join(id);
        if !dir.join("container.json").is_file() {
            return Err(ExecError::NotFound {
                id: id.to_string(),
                root: self.containers_root.display().to_string(),
            });
        }
        let mut child = Command::new(&self.exe)
            .args(helper_args(&dir, timeout, argv))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ExecError::Spawn {
                id: id.to_string(),
                exe: self.exe.display().to_string(),
                source,
            })?;
        let limit = timeout + HELPER_SLACK;
        let collected = collect_helper_output(&mut child, Instant::now() + limit);
        // The agent, a subreaper, may reap the helper itself: its report is on stdout,
        // not in its exit status.
        let _ = child.wait();
        let (stdout, stderr, finished) = collected;
        if !finished {
            return Err(ExecError::HelperHung {
                id: id.to_string(),
                after: limit,
            });
        }
        match parse_report(&stdout) {
            Some(HelperReport::Done(output)) => Ok(output),
            Some(HelperReport::Failed(message)) => Err(ExecError::Failed {
                id: id.to_string(),
                message,
            }),
            None => Err(ExecError::NoReport {
                id: id.to_string(),
                detail: stderr_tail(&stderr),
            }),
        }
    }
}

/// Runs `argv` in container `id` under `containers_root` with the running binary as
/// the helper; see [`ContainerExec::exec`].
pub fn exec_in_container(
    containers_root: &Path,
    id: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput, ExecError> {
    let exec = ContainerExec::current(containers_root.to_path_buf()).map_err(|source| {
        ExecError::Spawn {
            id: id.to_string(),
            exe: "the running binary".into(),
            source,
        }
    })?;
    exec.exec(id, argv, timeout)
}

fn helper_args(dir: &Path, timeout: Duration, argv: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        SUBCOMMAND.into(),
        dir.into(),
        timeout.as_millis().to_string().into(),
        "--".into(),
    ];
    args.extend(argv.iter().map(OsString::from));
    args
}

/// Reads the helper's stdout and stderr until both close or `deadline` passes (then
/// the helper is killed). Returns both and whether the helper finished in time.
fn collect_helper_output(child: &mut Child, deadline: Instant) -> (Vec<u8>, Vec<u8>, bool) {
    let mut pipes: [Option<Box<dyn ReadFd>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
    ];
    let mut bufs = [Vec::new(), Vec::new()];
    let mut chunk = [0u8; 4096];
    while pipes.iter().any(Option::is_some) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            return (bufs[0].clone(), bufs[1].clone(), false);
        }
        let open: Vec<usize> = (0..2).filter(|&i| pipes[i].is_some()).collect();
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = open
                .iter()
                .filter_map(|&i| pipes[i].as_ref())
                .map(|p| PollFd::new(p.fd(), PollFlags::POLLIN))
                .collect();
            let ms = PollTimeout::try_from(left.as_millis().clamp(1, 60_000))
                .unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, ms) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return (bufs[0].clone(), bufs[1].clone(), false),
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        for (k, &i) in open.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let Some(pipe) = pipes[i].as_mut() else {
                continue;
            };
            match pipe.read(&mut chunk) {
                Ok(0) => pipes[i] = None,
                Ok(n) => {
                    // The report is small; a runaway helper must not grow the agent.
                    if bufs[i].len() < 16 * OUTPUT_CAP {
                        bufs[i].extend_from_slice(&chunk[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => pipes[i] = None,
            }
        }
    }
    (bufs[0].clone(), bufs[1].clone(), true)
}

/// A child pipe that can be polled and read.
trait ReadFd: Read {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl ReadFd for std::process::ChildStdout {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.as_fd()
    }
}

impl ReadFd for std::process::ChildStderr {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.as_fd()
    }
}

fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(3)..];
    format!("; its stderr: {}", tail.join(" | "))
}

/// The one line the helper prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HelperReport {
    Done(ExecOutput),
    Failed(String),
}

impl HelperReport {
    fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"Failed\":\"encoding the report: {e}\"}}"));
        line.push('\n');
        line
    }
}

fn parse_report(stdout: &[u8]) -> Option<HelperReport> {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    serde_json::from_str(line).ok()
}

/// The helper's command line after `shim-exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HelperArgs {
    dir: PathBuf,
    timeout: Duration,
    argv: Vec<String>,
}

fn parse_helper_args(args: &[OsString]) -> Result<HelperArgs, String> {
    let usage =
        || format!("usage: punnet-agent {SUBCOMMAND} <container-dir> <timeout-ms> -- <command>...");
    let [dir, timeout, sep, argv @ ..] = args else {
        return Err(usage());
    };
    if sep != "--" || argv.is_empty() {
        return Err(usage());
    }
    let timeout = timeout
        .to_str()
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(usage)?;
    let argv = argv
        .iter()
        .map(|a| a.to_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| "the command must be valid UTF-8".to_string())?;
    Ok(HelperArgs {
        dir: PathBuf::from(dir),
        timeout: Duration::from_millis(timeout),
        argv,
    })
}

/// The helper process: `args` are the arguments after `shim-exec`. Prints its report
/// and returns the process's exit code (0 when the command ran, whatever its status).
/// Must run in a single-threaded process.
pub fn run_helper(args: &[OsString]) -> i32 {
    // Not in the agent's session: a ^C for the agent must not leave a half-set-up exec.
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let report = match parse_helper_args(args) {
        Ok(args) => match exec_here(&args) {
            Ok(output) => HelperReport::Done(output),
            Err(message) => HelperReport::Failed(message),
        },
        Err(usage) => HelperReport::Failed(usage),
    };
    reap_any(None);
    let mut out = io::stdout().lock();
    let _ = out.write_all(report.to_line().as_bytes());
    let _ = out.flush();
    match report {
        HelperReport::Done(_) => 0,
        HelperReport::Failed(_) => 1,
    }
}

fn exec_here(args: &HelperArgs) -> Result<ExecOutput, String> {
    let deadline = Instant::now() + args.timeout;
    let dir = ContainerDir::new(args.dir.clone());
    let id = dir
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{}: not a container directory", dir.path().display()))?;
    if let Ok(Some(exit)) = dir.read_exit() {
        return Err(format!(
            "the container is not running (it exited with code {})",
            exit.exit_code
        ));
    }
    let process_file = write_exec_process(&dir, &args.argv)?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))?;
    let err_w = out_w
        .try_clone()
        .map_err(|e| format!("duplicating a pipe: {e}"))?;
    let stdin = fs::File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;

    // The command must start with SIGPIPE at its default, not Rust's ignore.
    set_sigpipe(SigHandler::SigDfl);
    let built = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_root_path(dir.state_root())
        .map(|b| {
            b.with_stdin(OwnedFd::from(stdin))
                .with_stdout(out_w)
                .with_stderr(err_w)
        })
        .and_then(ContainerBuilder::validate_id)
        .and_then(|b| b.as_tenant().with_process(Some(&process_file)).build());
    set_sigpipe(SigHandler::SigIgn);
    let _ = fs::remove_file(&process_file);
    let pid = built.map_err(|e| super::create::chain(&e))?;
    Ok(collect(pid, out_r, deadline))
}

/// Writes the container's own process (user, env, cwd, capabilities, rlimits) with
/// `argv` as its command, for the tenant builder to run.
fn write_exec_process(dir: &ContainerDir, argv: &[String]) -> Result<PathBuf, String> {
    let config = dir.bundle().join("config.json");
    let spec = Spec::load(&config).map_err(|e| format!("reading {}: {e}", config.display()))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| format!("{}: no process", config.display()))?;
    process.set_args(Some(argv.to_vec()));
    process.set_terminal(Some(false));
    process.set_console_size(None);
    let path = dir
        .path()
        .join(format!(".exec-{}.json", std::process::id()));
    layout::write_json_atomically(&path, &process)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

fn set_sigpipe(handler: SigHandler) {
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL and SIG_IGN are not functions; no handler code runs.
    let _ = unsafe { sigaction(Signal::SIGPIPE, &action) };
}

/// Waits for the exec'd process `pid` (a child of this helper) while reading its
/// output, killing its process group at `deadline`.
fn collect(pid: Pid, out: OwnedFd, deadline: Instant) -> ExecOutput {
    // Blocked only now: the exec'd process must not inherit a blocked SIGCHLD.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = mask.thread_block();
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok();
    set_nonblocking(&out);

    let mut pipe = Some(out);
    let mut output = CappedOutput::new(OUTPUT_CAP);
    let mut status = None;
    let mut timed_out = false;
    let mut drain_until: Option<Instant> = None;
    let mut buf = [0u8; 8192];
    // It may have exited before SIGCHLD reached the signalfd.
    reap_any(Some((pid, &mut status)));
    loop {
        if status.is_some() {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN_AFTER_EXIT);
            // After a timeout, whatever it left running may hold the pipe: stop at once.
            if pipe.is_none() || timed_out || Instant::now() >= until {
                break;
            }
        } else if !timed_out && Instant::now() >= deadline {
            timed_out = true;
            // The exec'd process leads its own session and group (libcontainer's setsid).
            let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
        }
        let wake_at = if status.is_some() {
            drain_until
        } else if timed_out {
            None
        } else {
            Some(deadline)
        };
        let fallback = signals
            .is_none()
            .then(|| Instant::now() + Duration::from_millis(10));
        let timeout = match [wake_at, fallback].into_iter().flatten().min() {
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis() + 1;
                PollTimeout::try_from(ms.min(60_000)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let (signal_ready, pipe_ready) = {
            let mut fds: Vec<PollFd> = Vec::with_capacity(2);
            if let Some(s) = &signals {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            if let Some(p) = &pipe {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            let _ = poll(&mut fds, timeout);
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let signal_ready = signals.is_some() && ready(&fds[0]);
            let pipe_ready = pipe.is_some() && fds.last().is_some_and(ready);
            (signal_ready, pipe_ready)
        };
        if signal_ready || signals.is_none() {
            if let Some(s) = &signals {
                while let Ok(Some(_)) = s.read_signal() {}
            }
            reap_any(Some((pid, &mut status)));
        }
        if pipe_ready {
            if let Some(p) = &pipe {
                if !drain(p, &mut buf, &mut output) {
                    pipe = None;
                }
            }
        }
    }
    if let Some(p) = &pipe {
        drain(p, &mut buf, &mut output);
    }
    let exit_code = match status {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(_, signal, _)) => 128 + signal as i32,
        _ => 128 + Signal::SIGKILL as i32,
    };
    ExecOutput {
        exit_code,
        output: output.into_bytes(),
        timed_out,
    }
}

/// Reads what is available; false at end of file.
fn drain(fd: &OwnedFd, buf: &mut [u8], output: &mut CappedOutput) -> bool {
    loop {
        match read(fd.as_raw_fd(), buf) {
            Ok(0) => return false,
            Ok(n) => output.push(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return true,
            Err(_) => return false,
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)
        .map(OFlag::from_bits_truncate)
        .unwrap_or(OFlag::empty());
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK));
}

/// Reaps every exited child (libcontainer's intermediate process too); records the
/// status of `watch.0` when it is among them.
fn reap_any(mut watch: Option<(Pid, &mut Option<WaitStatus>)>) {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(s) => {
                if let Some((pid, status)) = watch.as_mut() {
                    if s.pid() == Some(*pid)
                        && matches!(s, WaitStatus::Exited(..) | WaitStatus::Signaled(..))
                    {
                        **status = Some(s);
                    }
                }
            }
        }
    }
}

/// Keeps the first `cap` bytes of a stream and drops the rest.
#[derive(Debug)]
struct CappedOutput {
    bytes: Vec<u8>,
    cap: usize,
}

impl CappedOutput {
    fn new(cap: usize) -> CappedOutput {
        CappedOutput {
            bytes: Vec::new(),
            cap,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn helper_arguments_round_trip() {
        let argv = vec!["sh".to_string(), "-c".into(), "echo -- hi".into()];
        let args = helper_args(
            Path::new("/data/containers/c1"),
            Duration::from_millis(1500),
            &argv,
        );
        assert_eq!(args[0], SUBCOMMAND);
        let parsed = parse_helper_args(&args[1..]).unwrap();
        assert_eq!(
            parsed,
            HelperArgs {
                dir: "/data/containers/c1".into(),
                timeout: Duration::from_millis(1500),
                argv,
            }
        );
    }

    #[test]
    fn bad_helper_arguments_are_refused_with_the_usage() {
        for bad in [
            os(&[]),
            os(&["/d", "100"]),
            os(&["/d", "100", "--"]),
            os(&["/d", "soon", "--", "true"]),
            os(&["/d", "100", "true"]),
        ] {
            let err = parse_helper_args(&bad).unwrap_err();
            assert!(err.contains("usage"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn output_keeps_the_first_bytes_up_to_the_cap() {
        let mut out = CappedOutput::new(5);
        out.push(b"abc");
        out.push(b"defgh");
        out.push(b"ij");
        assert_eq!(out.into_bytes(), b"abcde");
    }

    #[test]
    fn reports_round_trip_and_the_last_line_wins() {
        let done = HelperReport::Done(ExecOutput {
            exit_code: 3,
            output: b"line\n\xff".to_vec(),
            timed_out: false,
        });
        let failed = HelperReport::Failed("container is not running".into());
        for r in [done.clone(), failed.clone()] {
            assert_eq!(parse_report(r.to_line().as_bytes()), Some(r));
        }
        let both = format!("{}{}", failed.to_line(), done.to_line());
        assert_eq!(parse_report(both.as_bytes()), Some(done));
        assert_eq!(parse_report(b"garbage\n"), None);
        assert_eq!(parse_report(b""), None);
    }

    #[test]
    fn exec_refuses_bad_ids_empty_commands_and_unknown_containers() {
        let root = tempfile::tempdir().unwrap();
        let exec = ContainerExec::new("/bin/false".into(), root.path().to_path_buf());
        let cmd = vec!["true".to_string()];
        let t = Duration::from_secs(1);
        assert!(matches!(
            exec.exec("../x", &cmd, t),
            Err(ExecError::InvalidId { .. })
        ));
        assert!(matches!(
            exec.exec("c1", &[], t),
            Err(ExecError::EmptyCommand { .. })
        ));
        let err = exec.exec("c1", &cmd, t).unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err}");
    }

    #[test]
    fn a_helper_without_a_report_is_an_error_naming_its_stderr() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("c1")).unwrap();
        fs::write(root.path().join("c1/container.json"), "{}").unwrap();
        let script = root.path().join("helper.sh");
        fs::write(&script, "#!/bin/sh\necho broken helper >&2\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let exec = ContainerExec::new(script, root.path().to_path_buf());
        let err = exec
            .exec("c1", &["true".to_string()], Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(err, ExecError::NoReport { .. }), "{err}");
        assert!(err.to_string().contains("broken helper"), "{err}");
    }
}
