//! One run of a probe, one run of a lifecycle handler. Exec actions run in the
//! container through the exec helper on tokio's blocking pool (the helper blocks while
//! the command runs).

use std::time::{Duration, Instant};

use punnet_api::pod::{LifecycleHandler, Probe};

use super::action::{handler_action, probe_action, Action};
use super::net::{http_probe, tcp_probe};
use super::prober::ProbeTarget;
use super::state::{ProbeOutcome, ProbeTiming};
use crate::shim::exec::{ContainerExec, ExecError, ExecOutput};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("container {container}: {message}")]
    Invalid { container: String, message: String },
    #[error("container {container}: hook command {command:?} exited with {exit_code}: {output}")]
    ExecFailed {
        container: String,
        command: String,
        exit_code: i32,
        output: String,
    },
    #[error("container {container}: hook {what} did not finish within the grace period")]
    DeadlinePassed { container: String, what: String },
    #[error("container {container}: hook {message}")]
    HttpFailed { container: String, message: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Runs one probe against its container once and says how it went; never errors (a
/// probe that cannot run has failed, as in the kubelet).
pub async fn run_probe(probe: &Probe, target: &ProbeTarget, exec: &ContainerExec) -> ProbeOutcome {
    let timeout = ProbeTiming::of(probe).timeout;
    let action = match probe_action(probe, &target.spec, target.pod_ip) {
        Ok(a) => a,
        Err(message) => return ProbeOutcome::Failure(message),
    };
    match action {
        Action::Exec(command) => {
            match exec_blocking(exec, &target.container_id, command.clone(), timeout).await {
                Ok(out) if out.timed_out => {
                    ProbeOutcome::Failure(format!("command {:?} timed out", command.join(" ")))
                }
                Ok(out) if out.exit_code == 0 => ProbeOutcome::Success,
                Ok(out) => ProbeOutcome::Failure(exit_message(&command, &out)),
                Err(e) => ProbeOutcome::Failure(e.to_string()),
            }
        }
        Action::HttpGet(req) => http_probe(&req, timeout).await,
        Action::TcpSocket { host, port } => tcp_probe(&host, port, timeout).await,
        Action::Sleep(_) => ProbeOutcome::Failure("sleep is not a probe action".into()),
    }
}

/// Runs a postStart or preStop handler, giving up at `deadline` (the end of the grace
/// period for preStop). A `sleep` cut short by the deadline is not an error, as in the
/// kubelet.
pub async fn run_handler(
    handler: &LifecycleHandler,
    target: &ProbeTarget,
    exec: &ContainerExec,
    deadline: Instant,
) -> Result<(), HookError> {
    let container = target.spec.name.clone();
    let action = handler_action(handler, &target.spec, target.pod_ip).map_err(|message| {
        HookError::Invalid {
            container: container.clone(),
            message,
        }
    })?;
    let left = deadline.saturating_duration_since(Instant::now());
    match action {
        Action::Exec(command) => {
            if left.is_zero() {
                return Err(HookError::DeadlinePassed {
                    container,
                    what: format!("command {:?}", command.join(" ")),
                });
            }
            let out = exec_blocking(exec, &target.container_id, command.clone(), left).await?;
            if out.timed_out {
                return Err(HookError::DeadlinePassed {
                    container,
                    what: format!("command {:?}", command.join(" ")),
                });
            }
            if out.exit_code != 0 {
                return Err(HookError::ExecFailed {
                    container,
                    command: command.join(" "),
                    exit_code: out.exit_code,
                    output: out.output_lossy().trim_end().to_string(),
                });
            }
            Ok(())
        }
        Action::HttpGet(req) => {
            if left.is_zero() {
                return Err(HookError::DeadlinePassed {
                    container,
                    what: format!("GET {}", req.url()),
                });
            }
            match http_probe(&req, left).await {
                ProbeOutcome::Success => Ok(()),
                ProbeOutcome::Failure(message) => Err(HookError::HttpFailed { container, message }),
            }
        }
        Action::Sleep(duration) => {
            tokio::time::sleep(duration.min(left)).await;
            Ok(())
        }
        Action::TcpSocket { .. } => Err(HookError::Invalid {
            container,
            message: "tcpSocket is not a lifecycle handler action".into(),
        }),
    }
}

async fn exec_blocking(
    exec: &ContainerExec,
    id: &str,
    command: Vec<String>,
    timeout: Duration,
) -> Result<ExecOutput, ExecError> {
    let exec = exec.clone();
    let id = id.to_string();
    let task_id = id.clone();
    tokio::task::spawn_blocking(move || exec.exec(&task_id, &command, timeout))
        .await
        .unwrap_or_else(|e| {
            Err(ExecError::Failed {
                id,
                message: format!("the exec task failed: {e}"),
            })
        })
}

/// The kubelet reports a failed exec probe with the command's output; with none, the
/// exit code says more than an empty message.
fn exit_message(command: &[String], out: &ExecOutput) -> String {
    let output = out.output_lossy();
    let output = output.trim_end();
    if output.is_empty() {
        format!(
            "command {:?} exited with {}",
            command.join(" "),
            out.exit_code
        )
    } else {
        output.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::pod::{Container, ExecAction};
    use std::time::SystemTime;

    #[tokio::test]
    async fn a_hook_whose_deadline_has_passed_does_not_run() {
        let target = ProbeTarget {
            key: "p/main".into(),
            container_id: "c1".into(),
            started_at: SystemTime::now(),
            spec: Container {
                name: "main".into(),
                ..Container::default()
            },
            pod_ip: None,
        };
        let handler = LifecycleHandler {
            exec: Some(ExecAction {
                command: vec!["true".into()],
            }),
            ..LifecycleHandler::default()
        };
        // A helper that would fail loudly if it were started.
        let exec = ContainerExec::new("/nonexistent".into(), "/nonexistent".into());
        let err = run_handler(&handler, &target, &exec, Instant::now())
            .await
            .unwrap_err();
        assert!(matches!(err, HookError::DeadlinePassed { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "container main: hook command \"true\" did not finish within the grace period"
        );
    }

    #[test]
    fn failed_exec_probes_report_their_output_or_exit_code() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let mut out = ExecOutput {
            exit_code: 3,
            output: b"not ready yet\n".to_vec(),
            timed_out: false,
        };
        assert_eq!(exit_message(&cmd, &out), "not ready yet");
        out.output.clear();
        assert_eq!(
            exit_message(&cmd, &out),
            "command \"sh -c exit 3\" exited with 3"
        );
    }
}
