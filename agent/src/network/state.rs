//! What was set up for each Pod, saved as `<state_dir>/<uid>.json` before and after CNI
//! ADD, so that DEL can be called with the exact configuration and result of the ADD
//! after an agent crash, even when the Pod's spec is gone.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::NetworkError;

/// Bumped when the file's meaning changes.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPod {
    pub version: u32,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `CNI_CONTAINERID`: the uid, with `-<n>` after the n-th re-ADD. A new id per ADD
    /// keeps a DEL that could not find the old interface (so left bridge's NAT chain
    /// behind) from making the next DEL of this Pod fail on that chain.
    pub container_id: String,
    pub attempt: u32,
    pub netns: PathBuf,
    pub ifname: String,
    /// The configuration list as given to ADD.
    pub conflist: Value,
    /// The capability arguments (portMappings) given to ADD.
    pub runtime_config: Value,
    pub loopback: Value,
    /// The chain's final ADD result; `None` while ADD runs (a crash then leaves a record
    /// that teardown can DEL from).
    pub result: Option<Value>,
    pub loopback_result: Option<Value>,
}

impl SavedPod {
    pub fn label(&self) -> String {
        format!("{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

pub fn path(dir: &Path, uid: &str) -> PathBuf {
    dir.join(format!("{uid}.json"))
}

pub fn read(dir: &Path, uid: &str, pod: &str) -> Result<Option<SavedPod>, NetworkError> {
    let path = path(dir, uid);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(NetworkError::State {
                pod: pod.to_string(),
                action: "read",
                path,
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| NetworkError::CorruptState { path, source })
}

/// Replaces the file atomically: a crash leaves the old or the new one, never half.
pub fn write(dir: &Path, saved: &SavedPod) -> Result<(), NetworkError> {
    let path = path(dir, &saved.uid);
    let tmp = dir.join(format!(".{}.json.tmp", saved.uid));
    let err = |action, source| NetworkError::State {
        pod: saved.label(),
        action,
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(saved).map_err(|e| err("encode", e.into()))?;
    let mut f = fs::File::create(&tmp).map_err(|e| err("write", e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| err("write", e))?;
    fs::rename(&tmp, &path).map_err(|e| err("write", e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err("write", e))
}

pub fn remove(dir: &Path, uid: &str, pod: &str) -> Result<(), NetworkError> {
    let path = path(dir, uid);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetworkError::State {
            pod: pod.to_string(),
            action: "remove",
            path,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The uids with a state file.
pub fn list(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let uid = name.strip_suffix(".json")?;
            super::config::check_uid(uid).ok()?;
            Some(uid.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn saved(uid: &str) -> SavedPod {
        SavedPod {
            version: STATE_VERSION,
            uid: uid.into(),
            namespace: "default".into(),
            name: "web".into(),
            container_id: uid.into(),
            attempt: 0,
            netns: PathBuf::from("/run/punnet/netns").join(uid),
            ifname: "eth0".into(),
            conflist: json!({"name": "punnet", "plugins": []}),
            runtime_config: json!({"portMappings": []}),
            loopback: json!({"type": "loopback"}),
            result: None,
            loopback_result: None,
        }
    }

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), "u1", "p").unwrap(), None);
        let mut s = saved("u1");
        write(dir.path(), &s).unwrap();
        s.result = Some(json!({"ips": []}));
        write(dir.path(), &s).unwrap();
        write(dir.path(), &saved("u2")).unwrap();
        fs::write(dir.path().join("notes.txt"), "x").unwrap();
        fs::create_dir(dir.path().join("ipam")).unwrap();
        assert_eq!(read(dir.path(), "u1", "p").unwrap(), Some(s));
        let mut uids = list(dir.path());
        uids.sort();
        assert_eq!(uids, ["u1", "u2"]);
        remove(dir.path(), "u1", "p").unwrap();
        remove(dir.path(), "u1", "p").unwrap();
        assert_eq!(list(dir.path()), ["u2"]);
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("u1.json"), "{").unwrap();
        let e = read(dir.path(), "u1", "p").unwrap_err();
        assert!(e.to_string().contains("u1.json"), "{e}");
    }
}
