//! A recording `Runtime` for tests: containers "run" until stopped or until a test
//! makes them exit, nothing is executed, and every start, stop and remove is recorded.
//! One fake can outlive an agent, which is how tests check re-adoption.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::SystemTime;

use super::{ContainerConfig, ContainerInfo, ContainerState, ExitReason, Runtime, RuntimeError};

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Start(Box<ContainerConfig>),
    Stop(String),
    Remove(String),
}

#[derive(Default)]
struct Inner {
    containers: BTreeMap<String, ContainerInfo>,
    calls: Vec<Call>,
    missing_images: BTreeSet<String>,
    next_pid: i32,
}

#[derive(Default)]
pub struct FakeRuntime {
    inner: Mutex<Inner>,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the fake from the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The configs of every `start` call, in order.
    pub fn starts(&self) -> Vec<ContainerConfig> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Start(config) => Some((**config).clone()),
                _ => None,
            })
            .collect()
    }

    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.lock().containers.values().cloned().collect()
    }

    pub fn running(&self) -> Vec<ContainerInfo> {
        self.containers()
            .into_iter()
            .filter(|c| matches!(c.state, ContainerState::Running { .. }))
            .collect()
    }

    /// Starts of `image` fail with `ImageNotPresent` until `set_image_present`.
    pub fn set_image_missing(&self, image: &str) {
        self.lock().missing_images.insert(image.to_string());
    }

    pub fn set_image_present(&self, image: &str) {
        self.lock().missing_images.remove(image);
    }

    /// Makes a running container exit with `code` now. False when it does not run.
    pub fn exit(&self, id: &str, code: i32) -> bool {
        let reason = match code {
            0 => ExitReason::Completed,
            137 => ExitReason::OomKilled,
            _ => ExitReason::Error,
        };
        self.exit_with(id, code, reason)
    }

    pub fn exit_with(&self, id: &str, code: i32, reason: ExitReason) -> bool {
        let mut inner = self.lock();
        let Some(c) = inner.containers.get_mut(id) else {
            return false;
        };
        let ContainerState::Running { started_at, .. } = c.state else {
            return false;
        };
        c.state = ContainerState::Exited {
            exit_code: code,
            reason,
            started_at: Some(started_at),
            finished_at: SystemTime::now(),
        };
        true
    }

    /// Adds a container as if it had been found on disk (a leftover of an earlier agent).
    pub fn insert(&self, info: ContainerInfo) {
        self.lock().containers.insert(info.config.id.clone(), info);
    }
}

impl Runtime for FakeRuntime {
    fn start(&self, config: &ContainerConfig) -> Result<ContainerInfo, RuntimeError> {
        let mut inner = self.lock();
        inner.calls.push(Call::Start(Box::new(config.clone())));
        if inner.missing_images.contains(&config.image) {
            return Err(RuntimeError::ImageNotPresent {
                image: config.image.clone(),
                hint: "load it with `punnet-agent image load FILE`".to_string(),
            });
        }
        if inner.containers.contains_key(&config.id) {
            return Err(RuntimeError::Start {
                id: config.id.clone(),
                message: "a container with this id exists".to_string(),
            });
        }
        inner.next_pid += 1;
        let info = ContainerInfo {
            config: config.clone(),
            state: ContainerState::Running {
                pid: 1000 + inner.next_pid,
                started_at: SystemTime::now(),
            },
        };
        inner.containers.insert(config.id.clone(), info.clone());
        Ok(info)
    }

    fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        self.lock().calls.push(Call::Stop(id.to_string()));
        if !self.lock().containers.contains_key(id) {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        }
        // Killed by SIGTERM.
        self.exit_with(id, 143, ExitReason::Error);
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut inner = self.lock();
        inner.calls.push(Call::Remove(id.to_string()));
        match inner.containers.remove(id) {
            Some(_) => Ok(()),
            None => Err(RuntimeError::NotFound { id: id.to_string() }),
        }
    }

    fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        Ok(self.containers())
    }
}
