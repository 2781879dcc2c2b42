//! Exec, probes and lifecycle handlers against real busybox containers started by
//! `ShimRuntime` through the agent binary's shim mode. Needs root, cgroups and
//! overlayfs; panics rather than skipping when not run as root. Each test has its own
//! data dir, container ids and ports, so the tests run in parallel.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use punnet_agent::image::ImageStore;
use punnet_agent::runtime::{ContainerConfig, ContainerState, Runtime, ShimRuntime};
use punnet_agent::shim::exec::{ContainerExec, ExecError};

struct Env {
    tmp: tempfile::TempDir,
    rt: ShimRuntime,
    exec: ContainerExec,
    /// Containers to remove when the test ends, pass or fail.
    ids: std::sync::Mutex<Vec<String>>,
}

impl Env {
    fn new() -> Env {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root");
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("busybox.tar");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-busybox-image.sh");
        let status = Command::new(&script)
            .arg(&archive)
            .arg("busybox:test")
            .status()
            .unwrap();
        assert!(status.success(), "make-busybox-image.sh: {status}");
        let images = Arc::new(ImageStore::open(&tmp.path().join("images")).unwrap());
        images.load_archive(&archive).unwrap();
        let agent = PathBuf::from(env!("CARGO_BIN_EXE_punnet-agent"));
        let containers = tmp.path().join("containers");
        let rt = ShimRuntime::new(
            containers.clone(),
            images,
            agent.clone(),
            vec!["shim".into()],
        );
        Env {
            tmp,
            rt,
            exec: ContainerExec::new(agent, containers),
            ids: Default::default(),
        }
    }

    /// Starts a busybox container running `script`; host network, so its servers are
    /// reachable on 127.0.0.1.
    fn start(&self, name: &str, script: &str) -> String {
        let id = format!("pr-{name}-{}", std::process::id());
        self.ids.lock().unwrap().push(id.clone());
        let config = ContainerConfig {
            id: id.clone(),
            pod_uid: format!("uid-{id}"),
            pod_namespace: "default".into(),
            pod_name: id.clone(),
            container_name: "main".into(),
            restart_count: 0,
            image: "busybox:test".into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            args: vec![],
            env: vec![("GREETING".into(), "hello".into())],
            working_dir: Some("/tmp".into()),
            memory_limit_bytes: None,
            cpu_limit_millis: None,
            mounts: vec![],
            host_network: true,
            grace_period: Duration::from_secs(2),
            log_path: self.tmp.path().join("logs").join(format!("{id}.log")),
        };
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

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let _ = self.rt.remove(id);
        }
    }
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A port below the ephemeral range that is free now.
fn free_port() -> u16 {
    let base = 20_000 + (std::process::id() % 5_000) as u16 * 2;
    (0..2_000u16)
        .map(|i| base.wrapping_add(i * 7) % 30_000 + 2_000)
        .find(|&p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
        .expect("no free port")
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

/// Prints the exec round trip the exec probe pays; asserts only that it works.
#[test]
fn exec_round_trip_time() {
    let env = Env::new();
    let id = env.start("latency", IDLE);
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = env
            .exec
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
