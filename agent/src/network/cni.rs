//! Running one CNI plugin as the spec says: the configuration on stdin, the call's
//! parameters in `CNI_*` variables, a result or an error object as JSON on stdout.
//! Reading that output is pure and kept apart from the process handling.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

/// The environment of one call.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub command: CniCommand,
    pub container_id: &'a str,
    /// `None` only for a DEL whose namespace is gone (the spec allows an empty one).
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// The plugin dirs joined with `:`, for plugins that run others (bridge → host-local).
    pub cni_path: &'a str,
    pub cni_args: &'a str,
}

/// Why a call failed, before the caller adds which Pod and plugin it was.
#[derive(Debug)]
pub enum ExecError {
    Spawn(std::io::Error),
    Timeout,
    /// The plugin's error object.
    Cni {
        code: u64,
        msg: String,
        details: Option<String>,
    },
    Crashed {
        status: String,
        stderr: String,
    },
    BadResult {
        reason: String,
        output: String,
    },
}

/// How the plugin process ended, as far as we could see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Success,
    Failed(String),
    /// Someone else reaped it: the agent, as child subreaper, reaps every exited child
    /// with `waitpid(-1)`, which can take a plugin's status before tokio sees it. The
    /// output still tells success from failure: a failing plugin prints an error object.
    Unknown,
}

#[derive(Debug, Deserialize)]
struct ErrorObject {
    code: u64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: Option<String>,
}

/// Reads a finished plugin's output: `Ok(None)` for the empty success of DEL and CHECK,
/// `Ok(Some(result))` for ADD.
pub fn interpret(exit: &Exit, stdout: &[u8], stderr: &[u8]) -> Result<Option<Value>, ExecError> {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim();
    let parsed: Option<Value> = if text.is_empty() {
        None
    } else {
        serde_json::from_str(text).ok()
    };
    if let Some(v) = &parsed {
        if v.get("code").is_some_and(Value::is_u64) {
            if let Ok(e) = serde_json::from_value::<ErrorObject>(v.clone()) {
                return Err(ExecError::Cni {
                    code: e.code,
                    msg: e.msg,
                    details: e.details,
                });
            }
        }
    }
    if let Exit::Failed(status) = exit {
        return Err(ExecError::Crashed {
            status: status.clone(),
            stderr: clip(&String::from_utf8_lossy(stderr)),
        });
    }
    match parsed {
        Some(v) if v.is_object() => Ok(Some(v)),
        Some(_) => Err(ExecError::BadResult {
            reason: "not a JSON object".into(),
            output: clip(text),
        }),
        None if text.is_empty() => Ok(None),
        None => Err(ExecError::BadResult {
            reason: "not JSON".into(),
            output: clip(text),
        }),
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 2000;
    let s = s.trim();
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Runs `plugin` with `stdin` and waits at most `timeout`; the plugin is killed if it
/// takes longer.
pub async fn exec(
    plugin: &Path,
    call: &Call<'_>,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Option<Value>, ExecError> {
    let netns = call
        .netns
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut child = tokio::process::Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", call.command.as_str())
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_PATH", call.cni_path)
        .env("CNI_ARGS", call.cni_args)
        // bridge and portmap run `iptables`, which must be found even when the agent's
        // own PATH lacks the sbin directories.
        .env("PATH", search_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(ExecError::Spawn)?;
    let (Some(mut input), Some(mut out), Some(mut err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ExecError::Spawn(std::io::Error::other(
            "plugin started without piped stdio",
        )));
    };
    let run = async {
        let write = async {
            // A plugin may exit without reading its input; its output says why.
            let _ = input.write_all(stdin).await;
            drop(input);
        };
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let read_out = out.read_to_end(&mut stdout);
        let read_err = err.read_to_end(&mut stderr);
        let (_, _, _) = tokio::join!(write, read_out, read_err);
        let exit = match child.wait().await {
            Ok(s) if s.success() => Exit::Success,
            Ok(s) => Exit::Failed(s.to_string()),
            Err(_) => Exit::Unknown,
        };
        (exit, stdout, stderr)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((exit, stdout, stderr)) => interpret(&exit, &stdout, &stderr),
        Err(_) => {
            let _ = child.start_kill();
            Err(ExecError::Timeout)
        }
    }
}

/// The agent's PATH plus the system directories.
pub fn search_path() -> String {
    const SYSTEM: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => format!("{p}:{SYSTEM}"),
        _ => SYSTEM.to_string(),
    }
}

#[derive(Debug, Deserialize)]
struct ResultObject {
    #[serde(default)]
    interfaces: Vec<InterfaceObject>,
    #[serde(default)]
    ips: Vec<IpObject>,
}

#[derive(Debug, Deserialize)]
struct InterfaceObject {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IpObject {
    #[serde(default)]
    interface: Option<usize>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

/// The Pod's IPv4 address on `ifname` in a CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub mac: Option<String>,
}

/// Finds the IPv4 address of the sandbox interface `ifname`; a result that does not say
/// which interface an address is on counts as the Pod's.
pub fn pod_address(result: &Value, ifname: &str) -> Option<PodAddress> {
    let r: ResultObject = serde_json::from_value(result.clone()).ok()?;
    let wanted = r
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty()));
    r.ips
        .iter()
        .filter(|ip| match (ip.interface, wanted) {
            (Some(i), Some(w)) => i == w,
            (None, _) => true,
            (Some(_), None) => false,
        })
        .find_map(|ip| {
            let address: Ipv4Net = ip.address.parse().ok()?;
            Some(PodAddress {
                address,
                gateway: ip.gateway.as_deref().and_then(|g| g.parse().ok()),
                mac: ip
                    .interface
                    .and_then(|i| r.interfaces.get(i))
                    .and_then(|i| i.mac.clone()),
            })
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const BRIDGE_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"punnet0","mac":"e6:dd:3e:a1:2a:5c"},{"name":"vethd718e5a9","mac":"32:e3:25:a5:4f:a3"},{"name":"eth0","mac":"0e:47:0e:5c:71:4a","sandbox":"/run/punnet/netns/u1"}],"ips":[{"interface":2,"address":"10.99.0.2/24","gateway":"10.99.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;

    #[test]
    fn a_result_is_returned_as_is() {
        let v = interpret(&Exit::Success, BRIDGE_RESULT.as_bytes(), b"")
            .unwrap()
            .unwrap();
        assert_eq!(v["ips"][0]["address"], "10.99.0.2/24");
    }

    #[test]
    fn empty_success_is_none() {
        assert!(interpret(&Exit::Success, b"\n", b"").unwrap().is_none());
        assert!(interpret(&Exit::Unknown, b"", b"").unwrap().is_none());
    }

    #[test]
    fn an_error_object_becomes_a_cni_error_even_when_the_status_was_lost() {
        let out =
            br#"{"code": 1, "msg": "incompatible CNI versions", "details": "config is \"9.9.9\""}"#;
        for exit in [Exit::Failed("exit status: 1".into()), Exit::Unknown] {
            match interpret(&exit, out, b"") {
                Err(ExecError::Cni { code, msg, details }) => {
                    assert_eq!(code, 1);
                    assert_eq!(msg, "incompatible CNI versions");
                    assert_eq!(details.as_deref(), Some("config is \"9.9.9\""));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_crash_without_error_object_keeps_stderr() {
        match interpret(&Exit::Failed("signal: 11".into()), b"", b"panic: boom\n") {
            Err(ExecError::Crashed { status, stderr }) => {
                assert_eq!(status, "signal: 11");
                assert_eq!(stderr, "panic: boom");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_bad_result() {
        assert!(matches!(
            interpret(&Exit::Success, b"hello", b""),
            Err(ExecError::BadResult { .. })
        ));
        assert!(matches!(
            interpret(&Exit::Success, b"[1]", b""),
            Err(ExecError::BadResult { .. })
        ));
    }

    #[test]
    fn the_pod_address_is_the_sandbox_interfaces() {
        let v: Value = serde_json::from_str(BRIDGE_RESULT).unwrap();
        let a = pod_address(&v, "eth0").unwrap();
        assert_eq!(a.address, "10.99.0.2/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(a.gateway, Some(Ipv4Addr::new(10, 99, 0, 1)));
        assert_eq!(a.mac.as_deref(), Some("0e:47:0e:5c:71:4a"));
        // The host side of the veth has the same name nowhere in the sandbox.
        assert!(pod_address(&v, "eth1").is_none());
        // IPv6 and interface-less addresses.
        let v = json!({"ips": [{"address": "fd00::2/64"}, {"address": "10.1.0.5/16"}]});
        assert_eq!(
            pod_address(&v, "eth0").unwrap().address,
            "10.1.0.5/16".parse::<Ipv4Net>().unwrap()
        );
    }
}
