//! The agent's side of process reaping. Nothing in the runtime depends on being a
//! container's parent, and `ShimRuntime` reaps the shims it spawned itself. But with
//! `PR_SET_CHILD_SUBREAPER` set, the container of a shim that died (and anything else
//! orphaned below the agent) is re-parented to the agent, which must then reap it.

use std::io;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Reaps every exited child of this process without blocking; returns how many.
///
/// Call it periodically in a subreaper agent. It reaps *any* exited child, so a
/// process the agent waits for by pid (std or tokio `Command`, e.g. a CNI plugin) may
/// find its child already reaped and its wait failing with ECHILD; `ShimRuntime`
/// tolerates that for its shims, other callers must too (or not call this while they
/// have children running).
pub fn reap_children() -> usize {
    let mut reaped = 0;
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return reaped,
            Ok(_) => reaped += 1,
        }
    }
}

/// Marks the calling process as the child subreaper of its descendants (see
/// [`reap_children`]).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
