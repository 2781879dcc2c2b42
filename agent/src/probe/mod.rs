//! Container probes (startup, liveness, readiness) and lifecycle handlers (postStart,
//! preStop), with Kubernetes' semantics.
//!
//! - `state`: the pure bookkeeping per container run: when each probe is due, the
//!   thresholds, `started`/`ready`, and whether to restart.
//! - `action`: a probe's or handler's action resolved against its container (named
//!   ports, the Pod IP as default host).
//! - `net`: the `httpGet` and `tcpSocket` executors; `exec` runs through
//!   [`crate::shim::exec`] on the blocking pool.
//! - `run`: one probe run, one handler run.
//! - `prober`: the driver the agent owns; it runs due probes as tasks and hands back
//!   what changed.

pub mod action;
pub mod net;
mod prober;
mod run;
pub mod state;

pub use prober::{ProbeEvent, ProbeStatus, ProbeTarget, Prober};
pub use run::{run_handler, run_probe, HookError};
pub use state::{
    ContainerProbes, ProbeChange, ProbeKind, ProbeOutcome, ProbeTiming, RestartReason,
};
