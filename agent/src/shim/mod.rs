//! The per-container shim: the agent binary re-executed as
//! `punnet-agent shim <container-dir>`, one process per container.
//!
//! libcontainer forks and must not run inside the multi-threaded tokio agent
//! (FACTS.md), and a container must outlive its agent. So the runtime spawns this
//! small single-threaded process, which detaches into its own session, creates and
//! starts the container, tells its spawner "started" (or why not) on its stdout, and
//! from then on only talks through files in the container directory: it copies the
//! container's output to the Pod's log file, forwards SIGTERM (SIGKILL after the grace
//! period), records how the container ended in `exit.json`, cleans up and exits.
//!
//! The binary's `main` must hand over before starting tokio or any thread:
//! ```ignore
//! if let Some(code) = punnet_agent::shim::dispatch(std::env::args_os()) {
//!     std::process::exit(code);
//! }
//! ```

mod create;
pub mod exec;
mod logger;
mod memory;
mod rootfs;
mod supervise;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use chrono::Utc;

use crate::runtime::host;
use crate::runtime::layout::{ContainerDir, ExitRecord};
use crate::runtime::ExitReason;

pub use create::ShimError;

/// The first argument that selects shim mode.
pub const SUBCOMMAND: &str = "shim";

/// Runs the shim when `args` (the whole argv, program name first) is
/// `<program> shim <container-dir>`, or the exec helper for `<program> shim-exec ...`
/// (see [`exec`]), returning the process's exit code; `None` for any other command line.
pub fn dispatch<I: IntoIterator<Item = OsString>>(args: I) -> Option<i32> {
    let mut args = args.into_iter().skip(1);
    let first = args.next()?;
    if first == exec::SUBCOMMAND {
        return Some(exec::run_helper(&args.collect::<Vec<_>>()));
    }
    if first != SUBCOMMAND {
        return None;
    }
    match (args.next(), args.next()) {
        (Some(dir), None) => Some(run_shim(Path::new(&dir))),
        _ => {
            eprintln!("usage: punnet-agent {SUBCOMMAND} <container-dir>");
            Some(2)
        }
    }
}

/// Supervises the container described by `container_dir/container.json` until it
/// exits. Returns 0 once the container ran and its exit was recorded, 1 when it could
/// not be started (recorded as `StartError`). Must be called in a single-threaded
/// process; it changes process-wide state (session, signal handling, stdout).
pub fn run_shim(container_dir: &Path) -> i32 {
    // Before anything slow: a stop() that arrives while the container is being created
    // must not kill the shim, only be remembered.
    create::install_term_flag();
    enable_debug_log();
    // Leave the agent's session and process group: a terminal's ^C or a signal to the
    // agent's group must not reach containers. Fails only if already a leader.
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let dir = ContainerDir::new(container_dir.to_path_buf());
    if let Err(e) = host::current_process().and_then(|me| dir.write_shim_pid(me)) {
        let message = format!("writing {}: {e}", dir.shim_pid().display());
        report(&Report::Failed(message));
        return 1;
    }

    match create::create_and_start(&dir) {
        Ok(running) => {
            report(&Report::Started {
                pid: running.pid.as_raw(),
            });
            supervise::supervise(&dir, running);
            0
        }
        Err(e) => {
            let message = e.to_string();
            eprintln!("punnet shim: {message}");
            let record = ExitRecord {
                exit_code: 128,
                reason: ExitReason::StartError,
                started_at: None,
                finished_at: Utc::now(),
                message: Some(message.clone()),
            };
            if let Err(e) = dir.write_exit(&record) {
                eprintln!("punnet shim: writing {}: {e}", dir.exit().display());
            }
            report(&Report::Failed(message));
            supervise::reap_all();
            1
        }
    }
}

/// Environment variable with a `tracing` filter (`debug`, `libcontainer=trace`) that
/// makes the shim log libcontainer's steps to `shim.log`; off by default to keep the
/// shim small.
pub const DEBUG_ENV: &str = "PUNNET_SHIM_LOG";

fn enable_debug_log() {
    let Ok(filter) = std::env::var(DEBUG_ENV) else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// The one line the shim writes to its spawner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Report {
    Started { pid: i32 },
    Failed(String),
}

impl Report {
    fn to_line(&self) -> String {
        match self {
            Report::Started { pid } => format!("started {pid}\n"),
            Report::Failed(message) => format!("failed {}\n", message.replace('\n', " ")),
        }
    }

    pub(crate) fn parse(line: &str) -> Option<Report> {
        let line = line.trim_end_matches('\n');
        if let Some(pid) = line.strip_prefix("started ") {
            return pid.parse().ok().map(|pid| Report::Started { pid });
        }
        line.strip_prefix("failed ")
            .map(|m| Report::Failed(m.to_string()))
    }
}

/// Writes the report to stdout, then points stdout at /dev/null: the spawner may be
/// gone by the time anything else would be written there.
fn report(report: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(report.to_line().as_bytes());
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), std::io::stdout().as_raw_fd());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Started { pid: 42 },
            Report::Failed("no such file".into()),
        ] {
            assert_eq!(Report::parse(&r.to_line()), Some(r));
        }
        assert_eq!(
            Report::parse(&Report::Failed("a\nb".into()).to_line()),
            Some(Report::Failed("a b".into()))
        );
        assert_eq!(Report::parse("hello"), None);
    }

    #[test]
    fn dispatch_only_takes_the_shim_subcommand() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(dispatch(args(&["punnet-agent"])), None);
        assert_eq!(dispatch(args(&["punnet-agent", "run"])), None);
        assert_eq!(dispatch(args(&["punnet-agent", "shim"])), Some(2));
    }
}
