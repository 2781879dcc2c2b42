//! A real fleet for root tests: a controller process with its embedded broker and an
//! agent process running real busybox containers, on loopback ports in one temporary
//! directory, driven with the `punnet` CLI; everything is killed and cleaned up on
//! drop. Shared by `e2e_root` and `web_root`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn need_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root: it runs real containers"
    );
}

pub fn bin(name: &str) -> PathBuf {
    let controller = PathBuf::from(env!("CARGO_BIN_EXE_punnet-controller"));
    let path = controller.parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768+): a port a test binds again after a
    // restart must not be taken meanwhile as the local port of some client's outgoing
    // connection, which ports handed out by `bind(:0)` are exposed to.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A controller and an agent on loopback ports, in one temporary directory; both are
/// killed and every container they left is cleaned up on drop.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub http: u16,
    pub mqtt: u16,
    pub node: String,
    pub controller: Option<Child>,
    pub agent: Option<Child>,
}

impl Fleet {
    pub fn start(node: &str) -> Fleet {
        need_root();
        let dir = tempfile::tempdir().unwrap();
        let mut fleet = Fleet {
            dir,
            http: free_port(),
            mqtt: free_port(),
            node: node.to_string(),
            controller: None,
            agent: None,
        };
        fleet.start_controller();
        fleet.start_agent();
        fleet.load_busybox();
        let node = fleet.node.clone();
        eventually("the node to be Ready", Duration::from_secs(20), || {
            let out = fleet.punnet(&["get", "nodes", &node, "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let ready = v["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        });
        fleet
    }

    /// This fleet's own Pod range and bridge, from its (unique) API port, so parallel
    /// fleets never share addresses or a bridge.
    pub fn pod_range(&self) -> String {
        format!(
            "10.{}.{}.0/24",
            200 + (self.http >> 8) % 50,
            self.http & 0xff
        )
    }

    pub fn bridge(&self) -> String {
        format!("pe{}", self.http)
    }

    /// What a killed agent leaves of its Pods' networks (namespaces, addresses, NAT
    /// rules), released from its saved state as a restarted agent would.
    pub fn release_pod_networks(&self) {
        use punnet_agent::network::{NetworkConfig, PodNetwork};
        let mut cfg = NetworkConfig::new(&self.agent_dir());
        cfg.bridge = self.bridge();
        let mut agent = punnet_agent::config::AgentConfig::new(&self.node);
        agent.data_dir = self.agent_dir();
        cfg.netns_dir = agent.netns_dir();
        let Ok(net) = PodNetwork::new(cfg) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        for uid in net.list() {
            let _ = rt.block_on(net.teardown(&uid));
        }
    }

    pub fn controller_dir(&self) -> PathBuf {
        self.dir.path().join("controller")
    }

    pub fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    pub fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .unwrap()
    }

    pub fn start_controller(&mut self) {
        let child = Command::new(bin("punnet-controller"))
            .arg("--data-dir")
            .arg(self.controller_dir())
            .args(["--http", &format!("127.0.0.1:{}", self.http)])
            .args(["--mqtt", &format!("127.0.0.1:{}", self.mqtt)])
            .args(["--node-grace", "5s"])
            .args([
                "--cluster-cidr",
                &self.pod_range(),
                "--node-cidr-mask-size",
                "24",
            ])
            .env("RUST_LOG", "info,rumqttd=warn")
            .stdout(Stdio::null())
            .stderr(self.log("controller.log"))
            .spawn()
            .unwrap();
        self.controller = Some(child);
        let token_file = self.controller_dir().join("admin.token");
        eventually("the controller's API", Duration::from_secs(20), || {
            token_file.exists().then_some(())?;
            let out = self.punnet(&["get", "nodes"]);
            out.status.success().then_some(())
        });
    }

    pub fn start_agent(&mut self) {
        let mut agent = Command::new(bin("punnet-agent"));
        // The embedded broker admits enrolled nodes only: the first start enrols with a
        // one-use token, later ones log in with the credentials kept in the data dir.
        if !self.agent_dir().join("credentials.json").exists() {
            let out = self.punnet(&["token", "create", "--uses", "1"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            agent.args(["--token", text.lines().next().unwrap()]);
        }
        let child = agent
            .args(["--name", &self.node])
            .args(["--broker", &format!("mqtts://127.0.0.1:{}", self.mqtt)])
            .arg("--ca")
            .arg(self.controller_dir().join("ca.pem"))
            .arg("--data-dir")
            .arg(self.agent_dir())
            .args(["--restart-backoff", "1s", "--heartbeat", "1s"])
            .args(["--cni-bridge", &self.bridge()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log("agent.log"))
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    pub fn kill(child: &mut Option<Child>) {
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn load_busybox(&self) {
        let archive = self.dir.path().join("busybox.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../agent/tests/fixtures/make-busybox-image.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(&archive)
            .arg("busybox:latest")
            .output()
            .unwrap();
        assert!(out.status.success(), "building the image: {out:?}");
        let out = Command::new(bin("punnet-agent"))
            .arg("--data-dir")
            .arg(self.agent_dir())
            .args(["image", "load"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(out.status.success(), "image load: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("busybox:latest"));
    }

    pub fn punnet(&self, args: &[&str]) -> Output {
        let token =
            std::fs::read_to_string(self.controller_dir().join("admin.token")).unwrap_or_default();
        Command::new(bin("punnet"))
            .args(args)
            .env("PUNNET_SERVER", format!("https://127.0.0.1:{}", self.http))
            .env("PUNNET_CA", self.controller_dir().join("ca.pem"))
            .env("PUNNET_TOKEN", token.trim())
            .env("PUNNET_CONFIG", self.dir.path().join("no-config.yaml"))
            .output()
            .unwrap()
    }

    /// Runs `punnet` and returns its stdout, failing the test on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.punnet(args);
        assert!(
            out.status.success(),
            "punnet {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn apply(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap()])
    }

    pub fn pods(&self, selector: &str) -> Vec<Value> {
        let out = self.ok(&["get", "pods", "-l", selector, "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn running(&self, selector: &str) -> Vec<Value> {
        self.pods(selector)
            .into_iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .collect()
    }

    /// Processes whose command line contains `needle`.
    pub fn processes(needle: &str) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) && pid != std::process::id() {
                pids.push(pid);
            }
        }
        pids
    }

    pub fn container_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.agent_dir().join("containers"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        Fleet::kill(&mut self.agent);
        Fleet::kill(&mut self.controller);
        self.release_pod_networks();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .stderr(Stdio::null())
            .status();
        // Containers outlive the agent by design: clean up what the test left.
        let data = self.agent_dir();
        for pid in Fleet::processes(&data.to_string_lossy()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        if let Ok(runtime_root) = std::fs::read_dir(data.join("containers")) {
            for e in runtime_root.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                for ctl in [
                    "memory", "cpu", "cpuacct", "pids", "freezer", "devices", "blkio", "cpuset",
                ] {
                    let cg = Path::new("/sys/fs/cgroup")
                        .join(ctl)
                        .join("punnet")
                        .join(&id);
                    if let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) {
                        for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                            // SAFETY: as above.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            for line in mounts.lines() {
                if let Some(target) = line.split(' ').nth(1) {
                    if target.starts_with(&*data.to_string_lossy()) {
                        let _ = nix_umount(target);
                    }
                }
            }
        }
    }
}

pub fn nix_umount(target: &str) -> std::io::Result<()> {
    let c = std::ffi::CString::new(target).unwrap();
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
