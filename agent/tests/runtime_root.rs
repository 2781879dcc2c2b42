//! `ShimRuntime` running real busybox containers through the agent binary's shim mode
//! (`punnet-agent shim DIR`). Needs root, cgroups and overlayfs; it panics rather than
//! skipping when not run as root. Each test uses its own data dir and container ids, so
//! the tests run in parallel with each other and with other suites.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use punnet_agent::runtime::logfmt::{parse_log_line, Stream};
use punnet_agent::runtime::{ContainerInfo, ContainerState, ExitReason, Runtime, RuntimeError};

mod runtime_support;
use runtime_support::{runtime, Env};

fn running_pid(info: &ContainerInfo) -> i32 {
    match info.state {
        ContainerState::Running { pid, .. } => pid,
        ref other => panic!("{} is not running: {other:?}", info.config.id),
    }
}

fn process_exists(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = entry.path().join("punnet").join(id);
        if d.exists() {
            dirs.push(d);
        }
    }
    let v2 = Path::new("/sys/fs/cgroup/punnet").join(id);
    if v2.exists() {
        dirs.push(v2);
    }
    dirs
}

fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*path))
}

fn rootfs(env: &Env, id: &str) -> PathBuf {
    env.containers_root().join(id).join("bundle/rootfs")
}

fn shim_pid(env: &Env, id: &str) -> i32 {
    let text = fs::read_to_string(env.containers_root().join(id).join("shim.pid")).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_container_runs_logs_in_cri_format_and_stops_within_its_grace_period() {
    let env = Env::new();
    let id = env.id("echo");
    let script =
        "trap 'exit 0' TERM; echo $GREETING from $(hostname); echo oops >&2; sleep 1000 & wait";
    let info = env.rt.start(&env.config(&id, script)).unwrap();
    let pid = running_pid(&info);
    assert!(process_exists(pid));
    assert!(
        matches!(env.info(&env.rt, &id).state, ContainerState::Running { pid: p, .. } if p == pid)
    );

    let line = env.wait_for_log(&id, &format!("hello from {id}"));
    let parsed = parse_log_line(&line).unwrap();
    assert_eq!(parsed.stream, Stream::Stdout);
    assert!(!parsed.partial);
    let err = parse_log_line(&env.wait_for_log(&id, "oops")).unwrap();
    assert_eq!(err.stream, Stream::Stderr);
    assert!(
        !cgroup_dirs(&id).is_empty(),
        "no cgroup for a running container"
    );
    assert!(is_mounted(&rootfs(&env, &id)));

    let stopped = Instant::now();
    env.rt.stop(&id).unwrap();
    let (code, reason) = env.wait_exited(&env.rt, &id, Duration::from_secs(4));
    assert!(stopped.elapsed() < Duration::from_secs(4));
    assert_eq!((code, reason), (0, ExitReason::Completed));
    // The shim cleans up right after recording the exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (process_exists(pid) || !cgroup_dirs(&id).is_empty() || is_mounted(&rootfs(&env, &id)))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_exists(pid), "container process {pid} still there");
    assert_eq!(cgroup_dirs(&id), Vec::<PathBuf>::new());
    assert!(!is_mounted(&rootfs(&env, &id)));

    env.rt.remove(&id).unwrap();
    assert!(!env.containers_root().join(&id).exists());
    assert!(env.rt.list().unwrap().iter().all(|c| c.config.id != id));
    assert!(
        !env.log_lines(&id).is_empty(),
        "remove must keep the log file"
    );
}

#[test]
fn a_container_ignoring_sigterm_is_killed_after_the_grace_period() {
    let env = Env::new();
    let id = env.id("stubborn");
    let mut config = env.config(
        &id,
        "trap '' TERM; echo ready; while true; do sleep 1; done",
    );
    config.grace_period = Duration::from_secs(1);
    env.rt.start(&config).unwrap();
    env.wait_for_log(&id, "ready");
    let stopped = Instant::now();
    env.rt.stop(&id).unwrap();
    let (code, reason) = env.wait_exited(&env.rt, &id, Duration::from_secs(6));
    let took = stopped.elapsed();
    assert_eq!((code, reason), (137, ExitReason::Error));
    assert!(
        took >= Duration::from_millis(900),
        "killed before the grace period: {took:?}"
    );
    env.rt.remove(&id).unwrap();
}

/// A failed probe's own grace period replaces the container's for that stop.
#[test]
fn a_stop_may_ask_for_a_shorter_grace_period() {
    let env = Env::new();
    let id = env.id("short-grace");
    let mut config = env.config(
        &id,
        "trap '' TERM; echo ready; while true; do sleep 1; done",
    );
    config.grace_period = Duration::from_secs(600);
    env.rt.start(&config).unwrap();
    env.wait_for_log(&id, "ready");
    env.rt.stop_with_grace(&id, Duration::from_secs(1)).unwrap();
    let (code, _) = env.wait_exited(&env.rt, &id, Duration::from_secs(20));
    assert_eq!(
        code, 137,
        "SIGKILLed after the shorter grace, not 10 minutes"
    );
    env.rt.remove(&id).unwrap();
}

#[test]
fn exit_codes_are_recorded() {
    let env = Env::new();
    let failing = env.id("exit3");
    let ok = env.id("exit0");
    env.rt.start(&env.config(&failing, "exit 3")).unwrap();
    env.rt.start(&env.config(&ok, "true")).unwrap();
    assert_eq!(
        env.wait_exited(&env.rt, &failing, Duration::from_secs(10)),
        (3, ExitReason::Error)
    );
    assert_eq!(
        env.wait_exited(&env.rt, &ok, Duration::from_secs(10)),
        (0, ExitReason::Completed)
    );
    match env.info(&env.rt, &failing).state {
        ContainerState::Exited {
            started_at: Some(started),
            finished_at,
            ..
        } => assert!(finished_at >= started),
        other => panic!("{other:?}"),
    }
    env.rt.remove(&failing).unwrap();
    env.rt.remove(&ok).unwrap();
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    let env = Env::new();
    let id = env.id("oom");
    // Doubling a shell variable reaches 8 MiB in a few steps.
    let mut config = env.config(&id, "x=0123456789abcdef; while true; do x=$x$x; done");
    config.memory_limit_bytes = Some(8 << 20);
    env.rt.start(&config).unwrap();
    let (code, reason) = env.wait_exited(&env.rt, &id, Duration::from_secs(20));
    assert_eq!((code, reason), (137, ExitReason::OomKilled));
    assert_eq!(reason.as_k8s_reason(), "OOMKilled");
    env.rt.remove(&id).unwrap();
}

#[test]
fn a_restarted_agent_readopts_running_containers() {
    let env = Env::new();
    let id = env.id("adopt");
    let first = runtime(env.tmp.path(), &env.images);
    let mut config = env.config(&id, "sleep 1000");
    config.grace_period = Duration::from_secs(1);
    let pid = running_pid(&first.start(&config).unwrap());
    drop(first);

    // A new runtime over the same directory, as after an agent restart.
    let second = runtime(env.tmp.path(), &env.images);
    let info = env.info(&second, &id);
    assert_eq!(running_pid(&info), pid);
    assert_eq!(info.config.image, "busybox:test");
    second.stop(&id).unwrap();
    // `sleep` as pid 1 ignores SIGTERM: killed after the grace period.
    let (code, _) = env.wait_exited(&second, &id, Duration::from_secs(10));
    assert_eq!(code, 137);
    second.remove(&id).unwrap();
}

#[test]
fn a_dead_shim_is_reported_lost_and_its_container_killed() {
    let env = Env::new();
    let id = env.id("lost");
    let pid = running_pid(&env.rt.start(&env.config(&id, "sleep 1000")).unwrap());
    let shim = shim_pid(&env, &id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_exists(shim) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        punnet_agent::runtime::reap_children();
    }
    let (code, reason) = env.wait_exited(&env.rt, &id, Duration::from_secs(5));
    assert_eq!((code, reason), (137, ExitReason::Lost));
    assert_eq!(reason.as_k8s_reason(), "ContainerStatusUnknown");
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_exists(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !process_exists(pid),
        "container process {pid} survived its shim"
    );
    env.rt.remove(&id).unwrap();
    assert!(!is_mounted(&rootfs(&env, &id)));
    assert_eq!(cgroup_dirs(&id), Vec::<PathBuf>::new());
}

#[test]
fn containers_of_one_image_share_its_unpacked_layer() {
    let env = Env::new();
    let a = env.id("share-a");
    let b = env.id("share-b");
    let layer = env.images.resolve("busybox:test").unwrap().layers[0].clone();
    let host_inode = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(layer.join("bin/busybox")).unwrap().ino()
    };
    for id in [&a, &b] {
        let script = "ls -i /bin/busybox; echo private > /tmp/mine; ls /tmp; sleep 1000";
        env.rt.start(&env.config(id, script)).unwrap();
    }
    for id in [&a, &b] {
        let line = env.wait_for_log(id, "/bin/busybox");
        let inode: u64 = parse_log_line(&line)
            .unwrap()
            .content
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(inode, host_inode, "{id} does not run from the shared layer");
        // The container sees the file it wrote (`ls /tmp` logs it a moment later).
        env.wait_for_log(id, " mine");
    }
    assert!(
        !layer.join("tmp/mine").exists(),
        "a container wrote into the shared layer"
    );
    assert_eq!(fs::read_dir(layer.parent().unwrap()).unwrap().count(), 1);
    env.rt.remove(&a).unwrap();
    env.rt.remove(&b).unwrap();
}

#[test]
fn host_network_containers_see_the_hosts_name_and_limits_apply() {
    let env = Env::new();
    let id = env.id("hostnet");
    let mut config = env.config(
        &id,
        "hostname; cat /etc/resolv.conf >/dev/null && echo resolv-ok; sleep 1000",
    );
    config.host_network = true;
    config.cpu_limit_millis = Some(500);
    env.rt.start(&config).unwrap();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    env.wait_for_log(&id, &host);
    env.wait_for_log(&id, "resolv-ok");
    let quota = fs::read_to_string(
        Path::new("/sys/fs/cgroup/cpu/punnet")
            .join(&id)
            .join("cpu.cfs_quota_us"),
    )
    .or_else(|_| fs::read_to_string(Path::new("/sys/fs/cgroup/punnet").join(&id).join("cpu.max")))
    .unwrap();
    assert!(quota.starts_with("50000"), "cpu quota {quota:?}");
    env.rt.remove(&id).unwrap();
}

#[test]
fn start_failures_are_errors_and_listed_as_start_errors() {
    let env = Env::new();
    let id = env.id("nocmd");
    let mut config = env.config(&id, "");
    config.command = vec!["/does/not/exist".into()];
    let err = env.rt.start(&config).unwrap_err();
    assert!(matches!(err, RuntimeError::Start { .. }), "{err}");
    assert!(err.to_string().contains(&id), "{err}");
    let (code, reason) = env.wait_exited(&env.rt, &id, Duration::from_secs(5));
    assert_eq!((code, reason), (128, ExitReason::StartError));
    env.rt.remove(&id).unwrap();
    assert_eq!(cgroup_dirs(&id), Vec::<PathBuf>::new());

    let missing = env.id("noimage");
    let mut config = env.config(&missing, "true");
    config.image = "busybox:not-loaded".into();
    let err = env.rt.start(&config).unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotPresent { .. }), "{err}");
    assert!(!env.containers_root().join(&missing).exists());
}

/// Prints the figures the runtime is judged by; asserts only loose bounds. Run with
/// `--release --nocapture` for the numbers of a production build.
#[test]
fn start_latency_and_shim_memory() {
    let env = Env::new();
    let mut latencies = Vec::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = env.id(&format!("lat{i}"));
        let mut config = env.config(&id, "sleep 1000");
        config.grace_period = Duration::ZERO;
        let t = Instant::now();
        env.rt.start(&config).unwrap();
        latencies.push(t.elapsed());
        ids.push(id);
    }
    // Let every shim reach its steady state (it trims itself after reporting).
    std::thread::sleep(Duration::from_millis(300));
    let mut rss_kib: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let status =
                fs::read_to_string(format!("/proc/{}/status", shim_pid(&env, id))).unwrap();
            let field = |name: &str| -> u64 {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap()
            };
            (field("VmRSS:"), field("RssAnon:"))
        })
        .collect();
    for id in &ids {
        env.rt.remove(id).unwrap();
    }
    latencies.sort();
    rss_kib.sort();
    let median = latencies[latencies.len() / 2];
    let (rss, anon) = rss_kib[rss_kib.len() / 2];
    println!(
        "start→running over 20 runs: median {median:?} (min {:?}, max {:?}); \
         shim while its container runs: VmRSS median {rss} KiB (RssAnon {anon} KiB), max {} KiB",
        latencies[0],
        latencies[latencies.len() - 1],
        rss_kib[rss_kib.len() - 1].0,
    );
    assert!(median < Duration::from_secs(2), "median start {median:?}");
}
