//! Real busybox containers through `ShimRuntime` for the root-only runtime tests: a
//! data dir with the busybox test image loaded, unique ids, and cleanup on drop.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use punnet_agent::image::ImageStore;
use punnet_agent::runtime::{
    ContainerConfig, ContainerInfo, ContainerState, ExitReason, Runtime, ShimRuntime,
};

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub images: Arc<ImageStore>,
    pub rt: ShimRuntime,
    /// Containers to stop and remove when the test ends, pass or fail.
    ids: std::sync::Mutex<Vec<String>>,
}

impl Env {
    pub fn new() -> Env {
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
        let rt = runtime(tmp.path(), &images);
        Env {
            tmp,
            images,
            rt,
            ids: Default::default(),
        }
    }

    pub fn containers_root(&self) -> PathBuf {
        self.tmp.path().join("containers")
    }

    /// A unique id per test run, so parallel runs never collide on cgroups.
    pub fn id(&self, name: &str) -> String {
        let id = format!("rt-{name}-{}", std::process::id());
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    pub fn config(&self, id: &str, script: &str) -> ContainerConfig {
        ContainerConfig {
            id: id.to_string(),
            pod_uid: format!("uid-{id}"),
            pod_namespace: "default".into(),
            pod_name: id.to_string(),
            container_name: "main".into(),
            restart_count: 0,
            image: "busybox:test".into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            args: vec![],
            env: vec![("GREETING".into(), "hello".into())],
            working_dir: None,
            memory_limit_bytes: None,
            cpu_limit_millis: None,
            mounts: vec![],
            host_network: false,
            netns_path: None,
            devices: vec![],
            security: Default::default(),
            hooks: Default::default(),
            grace_period: Duration::from_secs(5),
            log_path: self.tmp.path().join("logs").join(format!("{id}.log")),
        }
    }

    pub fn info(&self, rt: &ShimRuntime, id: &str) -> ContainerInfo {
        rt.list()
            .unwrap()
            .into_iter()
            .find(|c| c.config.id == id)
            .unwrap_or_else(|| panic!("container {id} not listed"))
    }

    /// Polls `list` until the container has exited.
    pub fn wait_exited(&self, rt: &ShimRuntime, id: &str, timeout: Duration) -> (i32, ExitReason) {
        let deadline = Instant::now() + timeout;
        loop {
            if let ContainerState::Exited {
                exit_code, reason, ..
            } = self.info(rt, id).state
            {
                return (exit_code, reason);
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_lines(&self, id: &str) -> Vec<String> {
        let path = self.tmp.path().join("logs").join(format!("{id}.log"));
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn wait_for_log(&self, id: &str, content: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .log_lines(id)
                .into_iter()
                .find(|l| l.ends_with(content))
            {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {content:?}: {:?}",
                self.log_lines(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let _ = self.rt.remove(id);
        }
    }
}

pub fn runtime(data: &Path, images: &Arc<ImageStore>) -> ShimRuntime {
    ShimRuntime::new(
        data.join("containers"),
        images.clone(),
        PathBuf::from(env!("CARGO_BIN_EXE_punnet-agent")),
        vec!["shim".into()],
    )
}
