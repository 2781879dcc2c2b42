//! Fleet benchmark (not a test): starts a release controller and agent on loopback and
//! prints medians of apply → Running latency (image present, with the Pod network and
//! with the host's), cold pull + start from a loopback registry (Debian's
//! docker-registry), idle memory of both, memory per shim, and the binaries' sizes.
//! Run through `scripts/bench.sh` (needs root and release builds).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const RUNS: usize = 20;
const SHIMS: usize = 5;

fn release_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    assert!(p.exists(), "{} missing: run scripts/bench.sh", p.display());
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pids_matching(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Api {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Api {
    fn send(&self, req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
        let resp = req.bearer_auth(&self.token).send().unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().unwrap_or(Value::Null))
    }

    fn apply_pod(&self, name: &str) {
        self.apply(name, "busybox:latest", false);
    }

    fn apply(&self, name: &str, image: &str, host_network: bool) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "hostNetwork": host_network,
                "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"],
                                "imagePullPolicy": "IfNotPresent"}]
            }
        });
        let url = format!(
            "{}/api/v1/namespaces/default/pods/{name}?fieldManager=bench",
            self.base
        );
        let (code, body) = self.send(
            self.http
                .patch(url)
                .header("Content-Type", "application/apply-patch+yaml")
                .body(pod.to_string()),
        );
        assert!(code < 300, "apply {name}: {code} {body}");
    }

    fn phase(&self, name: &str) -> Option<String> {
        let url = format!("{}/api/v1/namespaces/default/pods/{name}", self.base);
        let (code, body) = self.send(self.http.get(url));
        (code == 200).then(|| body["status"]["phase"].as_str().unwrap_or("").to_string())
    }

    fn delete_pod(&self, name: &str) {
        let url = format!("{}/api/v1/namespaces/default/pods/{name}", self.base);
        self.send(self.http.delete(url));
    }
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Debian's docker-registry on loopback, killed on drop.
fn start_registry(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let storage = dir.join("registry");
    std::fs::create_dir_all(&storage).unwrap();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry is installed (scripts/bench.sh installs it)");
    wait("the registry", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (Proc(child), port)
}

/// Pushes the busybox archive with `extra` more layers of 1 MiB of fresh random data
/// (so every tag's own layers are new to the node) as `127.0.0.1:PORT/bench/app:TAG`.
fn push_image(dir: &Path, archive: &Path, port: u16, tag: &str, extra: usize) {
    let layout = dir.join(format!("layout-{tag}"));
    let bundle = dir.join(format!("bundle-{tag}"));
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    };
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:app", layout.display())));
    for i in 0..extra {
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:app", layout.display()))
            .arg(&bundle));
        let data: Vec<u8> = (0..1 << 20).map(|_| rand_byte()).collect();
        std::fs::write(bundle.join(format!("rootfs/data-{i}")), data).unwrap();
        run(Command::new("umoci")
            .args(["repack", "--image"])
            .arg(format!("{}:app", layout.display()))
            .arg(&bundle));
        std::fs::remove_dir_all(&bundle).unwrap();
    }
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:app", layout.display()))
        .arg(format!("docker://127.0.0.1:{port}/bench/app:{tag}")));
}

/// A xorshift byte: incompressible enough for a layer gzip cannot shrink.
fn rand_byte() -> u8 {
    use std::cell::Cell;
    thread_local!(static X: Cell<u64> = Cell::new(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    ));
    X.with(|x| {
        let mut v = x.get();
        v ^= v << 13;
        v ^= v >> 7;
        v ^= v << 17;
        x.set(v);
        (v >> 24) as u8
    })
}

/// apply → Running of one Pod, deleted again afterwards; milliseconds.
fn start_once(api: &Api, name: &str, image: &str, host_network: bool) -> f64 {
    let start = Instant::now();
    api.apply(name, image, host_network);
    wait("Running", || api.phase(name).as_deref() == Some("Running"));
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    api.delete_pod(name);
    wait("deletion", || api.phase(name).is_none());
    ms
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the benchmark runs containers: run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
    let controller = Proc(
        Command::new(release_bin("punnet-controller"))
            .arg("--data-dir")
            .arg(dir.path().join("controller"))
            .args([
                "--http",
                &format!("127.0.0.1:{http}"),
                "--mqtt",
                &format!("127.0.0.1:{mqtt}"),
                // Plaintext: the figures compare with the earlier (pre-TLS) runs.
                "--allow-plaintext",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log("controller.log"))
            .spawn()
            .unwrap(),
    );
    let agent_dir = dir.path().join("agent");
    let archive = dir.path().join("busybox.tar");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fixtures/make-busybox-image.sh");
    assert!(Command::new("sh")
        .arg(script)
        .arg(&archive)
        .status()
        .unwrap()
        .success());
    assert!(Command::new(release_bin("punnet-agent"))
        .arg("--data-dir")
        .arg(&agent_dir)
        .args(["image", "load"])
        .arg(&archive)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    // What enrolment does: the agent trusts the controller's key, the controller the
    // agent's (registered below, once the agent has made it).
    let controller_pub = dir.path().join("controller/controller.pub");
    wait("the controller's key", || controller_pub.exists());
    std::fs::copy(&controller_pub, agent_dir.join("controller.pub")).unwrap();
    let (_registry, registry_port) = start_registry(dir.path());
    const PULLS: usize = 5;
    for i in 0..PULLS {
        push_image(dir.path(), &archive, registry_port, &format!("v{i}"), 2);
    }
    let agent = Proc(
        Command::new(release_bin("punnet-agent"))
            .args([
                "--name",
                "bench",
                "--broker",
                &format!("mqtt://127.0.0.1:{mqtt}"),
                "--allow-plaintext",
                "--insecure-registry",
                &format!("127.0.0.1:{registry_port}"),
            ])
            .arg("--data-dir")
            .arg(&agent_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log("agent.log"))
            .spawn()
            .unwrap(),
    );
    let token_file = dir.path().join("controller/admin.token");
    wait("the admin token", || token_file.exists());
    let api = Api {
        base: format!("http://127.0.0.1:{http}"),
        token: std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_string(),
        http: reqwest::blocking::Client::new(),
    };
    let node_pub = agent_dir.join("node.pub");
    wait("the agent's key", || node_pub.exists());
    let (code, body) = api.send(api.http.post(format!("{}/nodekeys", api.base)).json(&json!({
        "items": [{"node": "bench", "publicKey": std::fs::read_to_string(&node_pub).unwrap().trim()}]
    })));
    assert_eq!(code, 200, "registering the agent's key: {body}");
    wait("the node", || {
        let (code, body) = api.send(api.http.get(format!("{}/api/v1/nodes/bench", api.base)));
        code == 200 && body["status"]["conditions"][0]["status"] == "True"
    });
    std::thread::sleep(Duration::from_secs(2));
    let controller_idle = rss_kib(controller.0.id());
    let agent_idle = rss_kib(agent.0.id());

    let mut latencies = Vec::new();
    for i in 0..RUNS {
        let name = format!("lat-{i}");
        let start = Instant::now();
        api.apply_pod(&name);
        wait("Running", || api.phase(&name).as_deref() == Some("Running"));
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        api.delete_pod(&name);
        wait("deletion", || api.phase(&name).is_none());
    }
    let host_latencies: Vec<f64> = (0..RUNS)
        .map(|i| start_once(&api, &format!("host-{i}"), "busybox:latest", true))
        .collect();
    // The first pull fetches all three layers; later tags share the busybox layer and
    // bring two new 1 MiB layers each.
    let pulls: Vec<f64> = (0..PULLS)
        .map(|i| {
            let image = format!("127.0.0.1:{registry_port}/bench/app:v{i}");
            start_once(&api, &format!("pull-{i}"), &image, true)
        })
        .collect();
    wait("the latency pods' shims to exit", || {
        pids_matching(&format!("{}/containers", agent_dir.display())).is_empty()
    });

    for i in 0..SHIMS {
        api.apply_pod(&format!("shim-{i}"));
    }
    wait("shims Running", || {
        (0..SHIMS).all(|i| api.phase(&format!("shim-{i}")).as_deref() == Some("Running"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let shim_pids: Vec<u32> = pids_matching(" shim ")
        .into_iter()
        .filter(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(&*agent_dir.to_string_lossy())
        })
        .collect();
    let shim_rss: Vec<f64> = shim_pids.iter().map(|p| rss_kib(*p) as f64).collect();
    let agent_busy = rss_kib(agent.0.id());
    for i in 0..SHIMS {
        api.delete_pod(&format!("shim-{i}"));
    }
    wait("cleanup", || {
        pids_matching(&format!("{}/containers", agent_dir.display())).is_empty()
    });

    let size = |n: &str| {
        std::fs::metadata(release_bin(n))
            .map(|m| m.len())
            .unwrap_or(0) as f64
            / 1e6
    };
    println!("punnet fleet benchmark ({RUNS} runs, medians; one 2-core machine, noisy)");
    let spread = |v: &[f64]| {
        format!(
            "{:.1} ms median (min {:.1}, max {:.1})",
            median(v.to_vec()),
            v.iter().cloned().fold(f64::MAX, f64::min),
            v.iter().cloned().fold(0.0, f64::max)
        )
    };
    println!(
        "apply -> Running, warm (image present), Pod network (CNI bridge+portmap): {}",
        spread(&latencies)
    );
    println!(
        "apply -> Running, warm (image present), host network: {}",
        spread(&host_latencies)
    );
    println!(
        "apply -> Running, cold pull from a loopback registry: first image (3 layers, {:.1} MiB busybox + 2 x 1 MiB) {:.1} ms; next {} images (2 new 1 MiB layers each): {}",
        std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0,
        pulls[0],
        PULLS - 1,
        spread(&pulls[1..])
    );
    println!(
        "controller idle RSS (embedded broker, 1 node): {:.1} MiB",
        controller_idle as f64 / 1024.0
    );
    println!("agent idle RSS: {:.1} MiB", agent_idle as f64 / 1024.0);
    println!(
        "agent RSS with {SHIMS} Pods: {:.1} MiB",
        agent_busy as f64 / 1024.0
    );
    if !shim_rss.is_empty() {
        println!(
            "RSS per shim: {:.2} MiB median over {} shims",
            median(shim_rss) / 1024.0,
            shim_pids.len()
        );
    }
    println!(
        "stripped binaries: punnet-controller {:.1} MB, punnet-agent {:.1} MB, punnet {:.1} MB",
        size("punnet-controller"),
        size("punnet-agent"),
        size("punnet")
    );
    drop(agent);
    drop(controller);
}
