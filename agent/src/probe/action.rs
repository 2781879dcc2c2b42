//! What a probe or lifecycle handler asks for, resolved against its container into
//! plain values: named ports looked up in the container's `ports`, the host defaulted
//! to the Pod's IP, the URL built. Pure; the executors in `net` and `run` do the I/O.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use punnet_api::pod::{Container, HttpGetAction, IntOrString, LifecycleHandler, Probe};

/// One resolved action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    HttpGet(HttpRequest),
    TcpSocket { host: String, port: u16 },
    Sleep(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A probe's GET request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!(
            "{scheme}://{}{}",
            host_port(&self.host, self.port),
            self.path
        )
    }
}

/// `host:port`, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The host probes go to when the action names none: the Pod's IP, or loopback when
/// the caller has none (host network without a known node address).
pub fn default_host(pod_ip: Option<IpAddr>) -> String {
    pod_ip
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .to_string()
}

/// A port number, or the `containerPort` of the container port with that name.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<i32>() {
                n
            } else {
                container
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| p.container_port)
                    .ok_or_else(|| {
                        format!("container {:?} has no port named {name:?}", container.name)
                    })?
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("port {number} is out of range 1-65535"))
}

fn http_request(
    get: &HttpGetAction,
    container: &Container,
    pod_ip: Option<IpAddr>,
) -> Result<HttpRequest, String> {
    let scheme = match get
        .scheme
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("HTTP") => Scheme::Http,
        Some("HTTPS") => Scheme::Https,
        Some(other) => return Err(format!("unsupported scheme {other:?} (HTTP or HTTPS)")),
    };
    let path = match get.path.as_deref() {
        None | Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
    };
    Ok(HttpRequest {
        scheme,
        host: get
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| default_host(pod_ip)),
        port: resolve_port(&get.port, container)?,
        path,
        headers: get
            .http_headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
    })
}

/// The action of a probe; `Err` says why it cannot run (reported as a failed probe).
pub fn probe_action(
    probe: &Probe,
    container: &Container,
    pod_ip: Option<IpAddr>,
) -> Result<Action, String> {
    if let Some(exec) = &probe.exec {
        return exec_action(&exec.command);
    }
    if let Some(get) = &probe.http_get {
        return http_request(get, container, pod_ip).map(Action::HttpGet);
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Ok(Action::TcpSocket {
            host: tcp
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| default_host(pod_ip)),
            port: resolve_port(&tcp.port, container)?,
        });
    }
    Err("the probe has no action (set exec, httpGet or tcpSocket)".into())
}

/// The action of a lifecycle handler. Like the kubelet, `tcpSocket` is refused here.
pub fn handler_action(
    handler: &LifecycleHandler,
    container: &Container,
    pod_ip: Option<IpAddr>,
) -> Result<Action, String> {
    if let Some(exec) = &handler.exec {
        return exec_action(&exec.command);
    }
    if let Some(get) = &handler.http_get {
        return http_request(get, container, pod_ip).map(Action::HttpGet);
    }
    if let Some(sleep) = &handler.sleep {
        return Ok(Action::Sleep(Duration::from_secs(
            sleep.seconds.max(0) as u64
        )));
    }
    if handler.tcp_socket.is_some() {
        return Err(
            "tcpSocket is not supported in lifecycle handlers (use exec or httpGet)".into(),
        );
    }
    Err("the handler has no action (set exec, httpGet or sleep)".into())
}

fn exec_action(command: &[String]) -> Result<Action, String> {
    if command.is_empty() {
        return Err("exec needs a command".into());
    }
    Ok(Action::Exec(command.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::pod::{ContainerPort, ExecAction, HttpHeader, SleepAction, TcpSocketAction};

    fn web() -> Container {
        Container {
            name: "web".into(),
            ports: vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }],
            ..Container::default()
        }
    }

    #[test]
    fn named_ports_resolve_through_the_container_ports() {
        let c = web();
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert_eq!(resolve_port(&IntOrString::String("82".into()), &c), Ok(82));
        let err = resolve_port(&IntOrString::String("metrics".into()), &c).unwrap_err();
        assert_eq!(err, "container \"web\" has no port named \"metrics\"");
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }

    #[test]
    fn http_get_defaults_to_the_pod_ip_root_path_and_http() {
        let probe = Probe {
            http_get: Some(HttpGetAction {
                port: IntOrString::String("http".into()),
                http_headers: vec![HttpHeader {
                    name: "X-Probe".into(),
                    value: "1".into(),
                }],
                ..HttpGetAction::default()
            }),
            ..Probe::default()
        };
        let ip: IpAddr = "10.42.0.7".parse().unwrap();
        let Ok(Action::HttpGet(req)) = probe_action(&probe, &web(), Some(ip)) else {
            panic!("not an http action");
        };
        assert_eq!(req.url(), "http://10.42.0.7:8080/");
        assert_eq!(req.headers, vec![("X-Probe".to_string(), "1".to_string())]);

        let probe = Probe {
            http_get: Some(HttpGetAction {
                port: IntOrString::Int(8443),
                path: Some("healthz?full=1".into()),
                host: Some("fd00::1".into()),
                scheme: Some("HTTPS".into()),
                ..HttpGetAction::default()
            }),
            ..Probe::default()
        };
        let Ok(Action::HttpGet(req)) = probe_action(&probe, &web(), None) else {
            panic!("not an http action");
        };
        assert_eq!(req.url(), "https://[fd00::1]:8443/healthz?full=1");
    }

    #[test]
    fn tcp_and_exec_probes_resolve_and_empty_ones_are_refused() {
        let probe = Probe {
            tcp_socket: Some(TcpSocketAction {
                port: IntOrString::String("http".into()),
                host: None,
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_action(&probe, &web(), None),
            Ok(Action::TcpSocket {
                host: "127.0.0.1".into(),
                port: 8080
            })
        );
        let probe = Probe {
            exec: Some(ExecAction {
                command: vec!["cat".into(), "/ready".into()],
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_action(&probe, &web(), None),
            Ok(Action::Exec(vec!["cat".into(), "/ready".into()]))
        );
        assert!(probe_action(&Probe::default(), &web(), None).is_err());
        let empty_exec = Probe {
            exec: Some(ExecAction { command: vec![] }),
            ..Probe::default()
        };
        assert!(probe_action(&empty_exec, &web(), None).is_err());
    }

    #[test]
    fn handlers_take_sleep_and_refuse_tcp_socket() {
        let sleep = LifecycleHandler {
            sleep: Some(SleepAction { seconds: 3 }),
            ..LifecycleHandler::default()
        };
        assert_eq!(
            handler_action(&sleep, &web(), None),
            Ok(Action::Sleep(Duration::from_secs(3)))
        );
        let tcp = LifecycleHandler {
            tcp_socket: Some(TcpSocketAction {
                port: IntOrString::Int(80),
                host: None,
            }),
            ..LifecycleHandler::default()
        };
        assert!(handler_action(&tcp, &web(), None)
            .unwrap_err()
            .contains("not supported"));
        assert!(handler_action(&LifecycleHandler::default(), &web(), None).is_err());
    }
}
