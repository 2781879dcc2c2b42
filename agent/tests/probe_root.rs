//! Exec, probes and lifecycle handlers against real busybox containers started by
//! `ShimRuntime` through the agent binary's shim mode. Needs root, cgroups and
//! overlayfs; panics rather than skipping when not run as root. Each test has its own
//! data dir, container ids and ports, so the tests run in parallel.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use punnet_agent::probe::{
    run_handler, run_probe, HookError, ProbeChange, ProbeKind, ProbeOutcome, ProbeTarget, Prober,
};
use punnet_agent::runtime::{ContainerState, Runtime, ShimRuntime};
use punnet_agent::shim::exec::{ContainerExec, ExecError};
use punnet_api::pod::{
    Container, ContainerPort, ExecAction, HttpGetAction, IntOrString, LifecycleHandler, Probe,
    SleepAction, TcpSocketAction,
};

mod runtime_support;

/// The runtime tests' environment (busybox image, unique ids, cleanup on drop) plus exec.
struct Env {
    base: runtime_support::Env,
    rt: ShimRuntime,
    tmp: PathBuf,
    exec: ContainerExec,
}

impl Env {
    fn new() -> Env {
        let base = runtime_support::Env::new();
        let agent = PathBuf::from(env!("CARGO_BIN_EXE_punnet-agent"));
        let exec = ContainerExec::new(agent, base.containers_root());
        let rt = runtime_support::runtime(base.tmp.path(), &base.images);
        let tmp = base.tmp.path().to_path_buf();
        Env {
            base,
            rt,
            tmp,
            exec,
        }
    }

    /// Starts a busybox container running `script`; host network, so its servers are
    /// reachable on 127.0.0.1.
    fn start(&self, name: &str, script: &str) -> String {
        let id = self.base.id(name);
        let mut config = self.base.config(&id, script);
        config.host_network = true;
        config.working_dir = Some("/tmp".into());
        config.grace_period = Duration::from_secs(2);
        self.rt.start(&config).unwrap();
        id
    }

    fn started_at(&self, id: &str) -> SystemTime {
        let info = self.rt.list().unwrap();
        match info.iter().find(|c| c.config.id == id).map(|c| &c.state) {
            Some(ContainerState::Running { started_at, .. }) => *started_at,
            other => panic!("{id} is not running: {other:?}"),
        }
    }

    fn target(&self, id: &str, spec: Container) -> ProbeTarget {
        ProbeTarget {
            key: format!("default/{id}/main"),
            container_id: id.to_string(),
            started_at: self.started_at(id),
            spec,
            pod_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    fn sh(
        &self,
        id: &str,
        script: &str,
        timeout: Duration,
    ) -> punnet_agent::shim::exec::ExecOutput {
        self.exec
            .exec(id, &argv(&["sh", "-c", script]), timeout)
            .unwrap_or_else(|e| panic!("exec {script:?} in {id}: {e}"))
    }
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A port below the ephemeral range that is free now.
/// A free loopback port below the ephemeral range; the counter gives tests running at
/// once in this process different ports (without it they raced for the same one).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12000) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

const IDLE: &str = "trap 'exit 0' TERM; sleep 1000 & wait";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn exec_runs_in_the_container_with_its_environment_user_and_cgroup() {
    let env = Env::new();
    let id = env.start("exec", IDLE);
    let t = Duration::from_secs(10);

    let out = env
        .exec
        .exec(&id, &argv(&["cat", "/etc/hostname"]), t)
        .unwrap();
    assert_eq!((out.exit_code, out.timed_out), (0, false));
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(out.output_lossy().trim(), host);

    let out = env.exec.exec(&id, &argv(&["id", "-u"]), t).unwrap();
    assert_eq!((out.exit_code, out.output_lossy().trim()), (0, "0"));

    let out = env.sh(&id, "echo $GREETING from $(pwd); echo oops >&2; exit 3", t);
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.output_lossy(), "hello from /tmp\noops\n");

    // Same mount namespace: a file the container wrote is there.
    env.sh(&id, "echo mine > /tmp/written", t);
    let out = env
        .exec
        .exec(&id, &argv(&["cat", "/tmp/written"]), t)
        .unwrap();
    assert_eq!(out.output_lossy(), "mine\n");
    assert!(
        !Path::new("/tmp/written").exists()
            || fs::read_to_string("/tmp/written").unwrap() != "mine\n"
    );

    // Same pid namespace (the container's sh is pid 1) and same cgroup: in the
    // container's cgroup namespace both sit at its root, an outsider shows "/..".
    let out = env.sh(&id, "tr '\\0' ' ' </proc/1/cmdline; echo", t);
    assert!(
        out.output_lossy().starts_with("sh -c trap"),
        "{}",
        out.output_lossy()
    );
    let cgroups = |pid: &str| {
        env.exec
            .exec(&id, &argv(&["cat", &format!("/proc/{pid}/cgroup")]), t)
            .unwrap()
            .output_lossy()
    };
    let (mine, init) = (cgroups("self"), cgroups("1"));
    assert_eq!(mine, init);
    assert!(!mine.contains(".."), "{mine}");

    let out = env.sh(&id, "yes | head -c 100000", t);
    assert_eq!(out.output.len(), 10 * 1024, "output is capped at 10 KiB");

    let err = env
        .exec
        .exec(&id, &argv(&["/does/not/exist"]), t)
        .unwrap_err();
    assert!(matches!(err, ExecError::Failed { .. }), "{err}");
    assert!(err.to_string().contains(&id), "{err}");
}

#[test]
fn an_exec_that_outlives_its_timeout_is_killed_with_its_children() {
    let env = Env::new();
    let id = env.start("timeout", IDLE);
    let started = Instant::now();
    let out = env.sh(
        &id,
        "echo begun; sleep 60; echo never",
        Duration::from_millis(700),
    );
    assert!(out.timed_out);
    assert_eq!(out.exit_code, 137);
    assert_eq!(out.output_lossy(), "begun\n");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let ps = env
        .exec
        .exec(&id, &argv(&["ps", "-o", "args"]), Duration::from_secs(10))
        .unwrap();
    let ps = ps.output_lossy();
    assert!(
        !ps.contains("sleep 60"),
        "the timed-out exec left processes behind:\n{ps}"
    );
}

#[test]
fn exec_in_an_exited_container_says_it_is_not_running() {
    let env = Env::new();
    let id = env.start("gone", "exit 0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        env.rt
            .list()
            .unwrap()
            .iter()
            .find(|c| c.config.id == id)
            .map(|c| &c.state),
        Some(ContainerState::Exited { .. })
    ) {
        assert!(Instant::now() < deadline, "{id} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = env
        .exec
        .exec(&id, &argv(&["true"]), Duration::from_secs(5))
        .unwrap_err();
    assert!(err.to_string().contains("not running"), "{err}");
}

/// Prints the exec round trip an exec probe pays; asserts only that it works.
#[test]
fn exec_round_trip_time() {
    let env = Env::new();
    let id = env.start("latency", IDLE);
    // PUNNET_EXEC_HELPER=target/release/punnet-agent measures a production build.
    let exec = match std::env::var_os("PUNNET_EXEC_HELPER") {
        Some(exe) => ContainerExec::new(exe.into(), env.tmp.join("containers")),
        None => env.exec.clone(),
    };
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = exec
            .exec(&id, &argv(&["true"]), Duration::from_secs(10))
            .unwrap();
        times.push(t.elapsed());
        assert_eq!(out.exit_code, 0);
    }
    times.sort();
    println!(
        "exec of `true` over 20 runs: median {:?} (min {:?}, max {:?})",
        times[10], times[0], times[19]
    );
}

/// Starts a container serving /www with busybox httpd on 127.0.0.1:`port`, and waits
/// until it accepts connections.
fn start_httpd(env: &Env, name: &str, port: u16) -> String {
    let script = format!(
        "trap 'exit 0' TERM; mkdir -p /www && echo ok > /www/index.html && \
         busybox httpd -f -p 127.0.0.1:{port} -h /www & wait"
    );
    let id = env.start(name, &script);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "httpd in {id} never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    id
}

fn web_spec(port: u16) -> Container {
    Container {
        name: "main".into(),
        ports: vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(port),
            ..ContainerPort::default()
        }],
        ..Container::default()
    }
}

fn http_probe(port: IntOrString, path: &str) -> Probe {
    Probe {
        http_get: Some(HttpGetAction {
            port,
            path: Some(path.into()),
            ..HttpGetAction::default()
        }),
        ..Probe::default()
    }
}

fn tcp_probe(port: u16) -> Probe {
    Probe {
        tcp_socket: Some(TcpSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        }),
        ..Probe::default()
    }
}

fn exec_probe(script: &str, timeout_seconds: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: argv(&["sh", "-c", script]),
        }),
        timeout_seconds: Some(timeout_seconds),
        ..Probe::default()
    }
}

#[test]
fn http_tcp_and_exec_probes_against_a_container() {
    let env = Env::new();
    let port = free_port();
    let id = start_httpd(&env, "httpd", port);
    let closed = free_port();
    let target = env.target(&id, web_spec(port));
    let rt = rt();
    let probe = |p: Probe| rt.block_on(run_probe(&p, &target, &env.exec));

    assert_eq!(
        probe(http_probe(IntOrString::String("http".into()), "/")),
        ProbeOutcome::Success
    );
    assert_eq!(
        probe(http_probe(IntOrString::Int(i32::from(port)), "/missing")),
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 404".into())
    );
    assert_eq!(
        probe(http_probe(IntOrString::Int(i32::from(closed)), "/")),
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{closed}/\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
    assert_eq!(
        probe(http_probe(IntOrString::String("metrics".into()), "/")),
        ProbeOutcome::Failure("container \"main\" has no port named \"metrics\"".into())
    );

    assert_eq!(probe(tcp_probe(port)), ProbeOutcome::Success);
    assert_eq!(
        probe(tcp_probe(closed)),
        ProbeOutcome::Failure(format!(
            "dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );

    assert_eq!(
        probe(exec_probe("cat /www/index.html", 5)),
        ProbeOutcome::Success
    );
    assert_eq!(
        probe(exec_probe("echo not yet; exit 3", 5)),
        ProbeOutcome::Failure("not yet".into())
    );
    assert_eq!(
        probe(exec_probe("sleep 30", 1)),
        ProbeOutcome::Failure("command \"sh -c sleep 30\" timed out".into())
    );
}

#[test]
fn the_prober_reports_readiness_and_asks_for_a_restart_on_liveness_failure() {
    let env = Env::new();
    let id = env.start("prober", IDLE);
    let closed = free_port();
    let mut spec = web_spec(closed);
    spec.readiness_probe = Some(Probe {
        period_seconds: Some(1),
        ..exec_probe("cat /tmp/ready", 5)
    });
    let target = env.target(&id, spec);
    let key = target.key.clone();
    let rt = rt();
    let mut prober = Prober::new(env.exec.clone());
    prober.update(std::slice::from_ref(&target), Instant::now());
    let status = prober.status(&key, &id).unwrap();
    assert!(status.started && !status.ready);

    // Not ready while /tmp/ready is missing: the failures show as Unhealthy.
    let events = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), prober.next_events()).await
    });
    let events = events.expect("no probe result within 30 s");
    assert!(
        events.iter().any(|e| matches!(&e.change,
            ProbeChange::Unhealthy { kind: ProbeKind::Readiness, message }
                if message.starts_with("Readiness probe failed: cat: can't open '/tmp/ready'"))),
        "{events:?}"
    );
    env.sh(&id, "touch /tmp/ready", Duration::from_secs(10));
    let ready = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let events = prober.next_events().await;
                if events.iter().any(|e| e.change == ProbeChange::Ready(true)) {
                    return events;
                }
            }
        })
        .await
    });
    assert!(ready.is_ok(), "never became ready");
    assert!(prober.status(&key, &id).unwrap().ready);

    // A liveness probe on a closed port fails twice: restart, and not ready any more.
    let mut spec = target.spec.clone();
    spec.liveness_probe = Some(Probe {
        period_seconds: Some(1),
        failure_threshold: Some(2),
        termination_grace_period_seconds: Some(3),
        ..tcp_probe(closed)
    });
    // A changed spec comes with a new container in the agent; here the same one is
    // re-registered under a new key to start afresh.
    let live = ProbeTarget {
        key: format!("{key}-live"),
        spec,
        ..target.clone()
    };
    prober.update(std::slice::from_ref(&live), Instant::now());
    let restart = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                for e in prober.next_events().await {
                    if let ProbeChange::Restart(reason) = e.change {
                        return reason;
                    }
                }
            }
        })
        .await
    });
    let restart = restart.expect("no restart within 30 s");
    assert_eq!(restart.kind, ProbeKind::Liveness);
    assert_eq!(
        restart.message,
        format!("Liveness probe failed: dial tcp 127.0.0.1:{closed}: connect: connection refused")
    );
    assert_eq!(restart.grace_period, Some(Duration::from_secs(3)));
    let status = prober.status(&live.key, &id).unwrap();
    assert!(!status.ready);
    assert_eq!(status.restart, Some(restart));
}

#[test]
fn lifecycle_handlers_run_in_the_container_within_their_deadline() {
    let env = Env::new();
    let port = free_port();
    let id = start_httpd(&env, "hooks", port);
    let target = env.target(&id, web_spec(port));
    let rt = rt();
    let run = |h: LifecycleHandler, within: Duration| {
        rt.block_on(run_handler(&h, &target, &env.exec, Instant::now() + within))
    };
    let exec = |script: &str| LifecycleHandler {
        exec: Some(ExecAction {
            command: argv(&["sh", "-c", script]),
        }),
        ..LifecycleHandler::default()
    };
    let t = Duration::from_secs(10);

    run(exec("echo draining > /tmp/prestop"), t).unwrap();
    assert_eq!(
        env.sh(&id, "cat /tmp/prestop", t).output_lossy(),
        "draining\n"
    );

    match run(exec("echo cannot stop; exit 2"), t) {
        Err(HookError::ExecFailed {
            exit_code, output, ..
        }) => {
            assert_eq!((exit_code, output.as_str()), (2, "cannot stop"))
        }
        other => panic!("{other:?}"),
    }
    match run(exec("sleep 30"), Duration::from_millis(800)) {
        Err(e @ HookError::DeadlinePassed { .. }) => {
            assert!(e.to_string().contains("grace period"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    let get = |path: &str| LifecycleHandler {
        http_get: Some(HttpGetAction {
            port: IntOrString::String("http".into()),
            path: Some(path.into()),
            ..HttpGetAction::default()
        }),
        ..LifecycleHandler::default()
    };
    run(get("/"), t).unwrap();
    match run(get("/missing"), t) {
        Err(e @ HookError::HttpFailed { .. }) => {
            assert!(e.to_string().contains("statuscode: 404"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    // A sleep cut short by the deadline is fine.
    let sleep = LifecycleHandler {
        sleep: Some(SleepAction { seconds: 60 }),
        ..LifecycleHandler::default()
    };
    run(sleep, Duration::from_millis(200)).unwrap();
}
