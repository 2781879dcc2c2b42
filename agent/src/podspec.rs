//! From a Pod's container spec to what the runtime runs: the `ContainerConfig` of one
//! run, and the host-side preparations its volumes need first (hostPath checks, emptyDir
//! directories or tmpfs, ConfigMap and Secret files). Pure: the ConfigMaps, Secrets and
//! the Pod's network come in through `PodContext`, the agent carries out `Prepare`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use punnet_api::pod::{Container, Pod};
use punnet_api::{capability, quantity, ConfigMap, Secret};

use crate::runtime::{BindMount, ContainerConfig, Seccomp, SecuritySettings};

/// What a Pod's containers draw on besides the Pod itself.
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    pub data_dir: &'a Path,
    /// The ConfigMaps and Secrets the desired state carried (any namespace).
    pub config_maps: &'a [ConfigMap],
    pub secrets: &'a [Secret],
    /// The Pod's own address once its network is set up; the node's with host network.
    pub pod_ip: Option<&'a str>,
    pub host_ip: Option<&'a str>,
    /// The Pod's network namespace (CNI), when it has one.
    pub netns: Option<&'a Path>,
    /// Where `Localhost` seccomp profiles live (`<data-dir>/seccomp`).
    pub seccomp_dir: Option<&'a Path>,
}

impl<'a> PodContext<'a> {
    /// No ConfigMaps, Secrets or network: enough for Pods that use none.
    pub fn bare(data_dir: &'a Path) -> PodContext<'a> {
        PodContext {
            data_dir,
            config_maps: &[],
            secrets: &[],
            pod_ip: None,
            host_ip: None,
            netns: None,
            seccomp_dir: None,
        }
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<&'a ConfigMap> {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name == name && c.metadata.namespace_or_default() == namespace)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.secrets
            .iter()
            .find(|s| s.metadata.name == name && s.metadata.namespace_or_default() == namespace)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// No check (`""`).
    Unchecked,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl HostPathType {
    pub fn parse(text: Option<&str>) -> Result<HostPathType, String> {
        Ok(match text.unwrap_or("") {
            "" => HostPathType::Unchecked,
            "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
            "Directory" => HostPathType::Directory,
            "FileOrCreate" => HostPathType::FileOrCreate,
            "File" => HostPathType::File,
            "Socket" => HostPathType::Socket,
            "CharDevice" => HostPathType::CharDevice,
            "BlockDevice" => HostPathType::BlockDevice,
            other => return Err(format!("unknown hostPath type {other:?}")),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostPathCheck {
    pub path: PathBuf,
    pub type_: HostPathType,
}

/// One file of a ConfigMap or Secret volume.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedFile {
    /// Relative to the volume's root (validated: no `..`, not absolute).
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Host-side work before a container can start, done by the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepare {
    HostPath(HostPathCheck),
    /// A directory under the Pod's directory, or a tmpfs of `size_limit` for `Memory`.
    EmptyDir {
        path: PathBuf,
        memory: bool,
        size_limit: Option<u64>,
        gid: Option<u32>,
    },
    /// ConfigMap or Secret contents as files, swapped in atomically.
    Files {
        path: PathBuf,
        files: Vec<ProjectedFile>,
        /// Secrets live on a tmpfs, never on the SD card.
        memory: bool,
        gid: Option<u32>,
    },
}

/// `<data-dir>/pods/<ns>_<name>_<uid>`: the Pod's logs and volumes.
pub fn pod_dir(data_dir: &Path, pod: &Pod) -> PathBuf {
    data_dir.join("pods").join(format!(
        "{}_{}_{}",
        pod.metadata.namespace_or_default(),
        pod.metadata.name,
        pod_uid(pod)
    ))
}

/// The uid the agent knows a Pod by (the controller always sets one; the fallback keeps
/// hand-written desired states working).
pub fn pod_uid(pod: &Pod) -> String {
    match &pod.metadata.uid {
        Some(uid) if !uid.is_empty() => uid.clone(),
        _ => format!(
            "{}-{}",
            pod.metadata.namespace_or_default(),
            pod.metadata.name
        ),
    }
}

/// The log file of one run of a container.
pub fn log_path(data_dir: &Path, pod: &Pod, container: &str, restart: u32) -> PathBuf {
    pod_dir(data_dir, pod)
        .join(container)
        .join(format!("{restart}.log"))
}

/// The runtime id of one run: `[a-z0-9-]`, at most 64 characters, unique per
/// (pod uid, container name, restart count).
pub fn container_id(pod_uid: &str, container: &str, restart: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let (uid, name) = (clean(pod_uid), clean(container));
    let plain = format!("{uid}-{name}-{restart}");
    // A lossless id when it fits; otherwise a hash stands in for what had to be cut.
    if plain.len() <= 64 && uid == pod_uid && name == container {
        return plain;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{pod_uid}/{container}").as_bytes());
    let hash = &hex::encode(digest)[..16];
    let tail = format!("-{restart}");
    let room = 64 - hash.len() - 1 - tail.len();
    let name: String = name.chars().take(room).collect();
    format!("{hash}-{name}{tail}")
}

/// Builds the `ContainerConfig` of one run from the Pod spec, and what must be prepared
/// on the host first. An error is a `CreateContainerConfigError` message.
pub fn container_config(
    ctx: &PodContext<'_>,
    pod: &Pod,
    container: &Container,
    restart: u32,
) -> Result<(ContainerConfig, Vec<Prepare>), String> {
    let uid = pod_uid(pod);
    let limit = |key: &str| container.resources.limits.get(key);
    let memory_limit_bytes = limit("memory")
        .map(|q| quantity::parse_bytes(q).map_err(|e| format!("resources.limits.memory: {e}")))
        .transpose()?;
    let cpu_limit_millis = limit("cpu")
        .map(|q| quantity::parse_cpu_millis(q).map_err(|e| format!("resources.limits.cpu: {e}")))
        .transpose()?;
    let fs_group = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .map(|g| g as u32);
    let (mounts, prepare) = volumes(ctx, pod, container, fs_group)?;
    let host_network = pod.spec.host_network.unwrap_or(false);
    let config = ContainerConfig {
        id: container_id(&uid, &container.name, restart),
        pod_uid: uid,
        pod_namespace: pod.metadata.namespace_or_default().to_string(),
        pod_name: pod.metadata.name.clone(),
        container_name: container.name.clone(),
        restart_count: restart,
        image: container.image.clone(),
        command: container.command.clone(),
        args: container.args.clone(),
        env: env(ctx, pod, container)?,
        working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
        memory_limit_bytes,
        cpu_limit_millis,
        mounts,
        // Without a Pod network set up (no CNI on this node), the host's is the one there is.
        host_network: host_network || ctx.netns.is_none(),
        netns_path: if host_network {
            None
        } else {
            ctx.netns.map(Path::to_path_buf)
        },
        devices: Vec::new(),
        security: security(ctx, pod, container)?,
        hooks: crate::runtime::Hooks {
            post_start: container
                .lifecycle
                .as_ref()
                .and_then(|l| l.post_start.clone()),
            pre_stop: container
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.clone()),
            ports: container.ports.clone(),
            pod_ip: ctx.pod_ip.map(str::to_string),
        },
        grace_period: Duration::from_secs(pod.spec.grace_period_seconds()),
        log_path: log_path(ctx.data_dir, pod, &container.name, restart),
    };
    Ok((config, prepare))
}

fn volumes(
    ctx: &PodContext<'_>,
    pod: &Pod,
    container: &Container,
    fs_group: Option<u32>,
) -> Result<(Vec<BindMount>, Vec<Prepare>), String> {
    let namespace = pod.metadata.namespace_or_default();
    let volumes_dir = pod_dir(ctx.data_dir, pod).join("volumes");
    let mut mounts = Vec::new();
    let mut prepare: Vec<Prepare> = Vec::new();
    for m in &container.volume_mounts {
        let volume = pod
            .spec
            .volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("volumeMount {:?}: no volume of that name", m.name))?;
        let mut read_only = m.read_only.unwrap_or(false);
        let (root, step) = if let Some(host) = &volume.host_path {
            let type_ = HostPathType::parse(host.type_.as_deref())
                .map_err(|e| format!("volume {:?}: {e}", volume.name))?;
            let path = PathBuf::from(&host.path);
            (
                path.clone(),
                Prepare::HostPath(HostPathCheck { path, type_ }),
            )
        } else if let Some(e) = &volume.empty_dir {
            let path = volumes_dir.join("empty-dir").join(&volume.name);
            let memory = e.medium.as_deref() == Some("Memory");
            let size_limit = e
                .size_limit
                .as_deref()
                .map(quantity::parse_bytes)
                .transpose()
                .map_err(|err| format!("volume {:?}: sizeLimit: {err}", volume.name))?;
            (
                path.clone(),
                Prepare::EmptyDir {
                    path,
                    memory,
                    size_limit,
                    gid: fs_group,
                },
            )
        } else if let Some(c) = &volume.config_map {
            read_only = true;
            let path = volumes_dir.join("configmap").join(&volume.name);
            let files = match ctx.config_map(namespace, &c.name) {
                Some(cm) => project(&cm.entries(), &c.items, c.default_mode, &volume.name)?,
                None if c.optional == Some(true) => Vec::new(),
                None => {
                    return Err(format!(
                    "configmap {:?} not found (volume {:?}): create it in namespace {namespace}",
                    c.name, volume.name
                ))
                }
            };
            (
                path.clone(),
                Prepare::Files {
                    path,
                    files,
                    memory: false,
                    gid: fs_group,
                },
            )
        } else if let Some(s) = &volume.secret {
            read_only = true;
            let path = volumes_dir.join("secret").join(&volume.name);
            let files = match ctx.secret(namespace, &s.secret_name) {
                Some(sec) => project(&sec.entries(), &s.items, s.default_mode, &volume.name)?,
                None if s.optional == Some(true) => Vec::new(),
                None => {
                    return Err(format!(
                        "secret {:?} not found (volume {:?}): create it in namespace {namespace}",
                        s.secret_name, volume.name
                    ))
                }
            };
            (
                path.clone(),
                Prepare::Files {
                    path,
                    files,
                    memory: true,
                    gid: fs_group,
                },
            )
        } else {
            return Err(format!(
                "volume {:?} has no source Punnet supports (hostPath, emptyDir, configMap, secret)",
                volume.name
            ));
        };
        let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => root.join(sub),
            None => root,
        };
        mounts.push(BindMount {
            host_path,
            container_path: m.mount_path.clone(),
            read_only,
        });
        if !prepare.contains(&step) {
            prepare.push(step);
        }
    }
    Ok((mounts, prepare))
}

/// The files of a ConfigMap or Secret volume: every key, or just `items` (a missing
/// key is an error, as in Kubernetes).
fn project(
    entries: &BTreeMap<String, Vec<u8>>,
    items: &[punnet_api::pod::KeyToPath],
    default_mode: Option<i32>,
    volume: &str,
) -> Result<Vec<ProjectedFile>, String> {
    let mode = default_mode.map(|m| m as u32 & 0o777).unwrap_or(0o644);
    if items.is_empty() {
        return Ok(entries
            .iter()
            .map(|(k, v)| ProjectedFile {
                path: k.clone(),
                data: v.clone(),
                mode,
            })
            .collect());
    }
    items
        .iter()
        .map(|it| {
            let data = entries.get(&it.key).ok_or_else(|| {
                format!("volume {volume:?}: key {:?} is not in its source", it.key)
            })?;
            Ok(ProjectedFile {
                path: it.path.clone(),
                data: data.clone(),
                mode: it.mode.map(|m| m as u32 & 0o777).unwrap_or(mode),
            })
        })
        .collect()
}

/// `env` with `valueFrom` resolved and `envFrom` expanded (explicit `env` wins).
fn env(
    ctx: &PodContext<'_>,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |k: String, v: String, out: &mut Vec<(String, String)>| {
        if let Some(slot) = out.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in &container.env_from {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (entries, what, name, optional) = if let Some(r) = &from.config_map_ref {
            (
                ctx.config_map(namespace, &r.name).map(ConfigMap::entries),
                "configmap",
                &r.name,
                r.optional,
            )
        } else if let Some(r) = &from.secret_ref {
            (
                ctx.secret(namespace, &r.name).map(Secret::entries),
                "secret",
                &r.name,
                r.optional,
            )
        } else {
            continue;
        };
        match entries {
            Some(entries) => {
                for (k, v) in entries {
                    let key = format!("{prefix}{k}");
                    // Kubernetes skips keys that are not valid variable names.
                    if is_env_name(&key) {
                        set(key, String::from_utf8_lossy(&v).into_owned(), &mut out);
                    }
                }
            }
            None if optional == Some(true) => {}
            None => {
                return Err(format!(
                    "{what} {name:?} not found (envFrom): create it in namespace {namespace}"
                ))
            }
        }
    }
    for e in &container.env {
        let value = match &e.value_from {
            None => e.value.clone().unwrap_or_default(),
            Some(src) => {
                if let Some(r) = &src.config_map_key_ref {
                    key_ref(
                        ctx.config_map(namespace, &r.name).map(ConfigMap::entries),
                        "configmap",
                        r,
                        &e.name,
                        namespace,
                    )?
                } else if let Some(r) = &src.secret_key_ref {
                    key_ref(
                        ctx.secret(namespace, &r.name).map(Secret::entries),
                        "secret",
                        r,
                        &e.name,
                        namespace,
                    )?
                } else if let Some(f) = &src.field_ref {
                    field_ref(ctx, pod, &f.field_path).ok_or_else(|| {
                        format!(
                            "env {:?}: fieldPath {:?} is not supported",
                            e.name, f.field_path
                        )
                    })?
                } else {
                    String::new()
                }
            }
        };
        set(e.name.clone(), value, &mut out);
    }
    Ok(out)
}

fn key_ref(
    entries: Option<BTreeMap<String, Vec<u8>>>,
    what: &str,
    r: &punnet_api::pod::KeySelector,
    env_name: &str,
    namespace: &str,
) -> Result<String, String> {
    let optional = r.optional == Some(true);
    match entries {
        None if optional => Ok(String::new()),
        None => Err(format!(
            "{what} {:?} not found (env {env_name:?}): create it in namespace {namespace}",
            r.name
        )),
        Some(entries) => match entries.get(&r.key) {
            Some(v) => Ok(String::from_utf8_lossy(v).into_owned()),
            None if optional => Ok(String::new()),
            None => Err(format!(
                "couldn't find key {:?} in {what} {namespace}/{} (env {env_name:?})",
                r.key, r.name
            )),
        },
    }
}

fn field_ref(ctx: &PodContext<'_>, pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let bracket = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Some(match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace_or_default().to_string(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => pod.spec.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => "default".to_string(),
        "status.podIP" => ctx.pod_ip.or(ctx.host_ip).unwrap_or_default().to_string(),
        "status.hostIP" => ctx.host_ip.unwrap_or_default().to_string(),
        _ => {
            if let Some(k) = bracket("metadata.labels['") {
                m.labels.get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = bracket("metadata.annotations['") {
                m.annotations.get(&k).cloned().unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The Pod's and the container's `securityContext`, the container's winning field by
/// field, on top of the runtime's defaults.
fn security(
    ctx: &PodContext<'_>,
    pod: &Pod,
    container: &Container,
) -> Result<SecuritySettings, String> {
    let pod_sc = pod.spec.security_context.clone().unwrap_or_default();
    let sc = container.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged == Some(true);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let capabilities: Vec<String> = capability::effective(&caps.add, &caps.drop, privileged)
        .into_iter()
        .map(str::to_string)
        .collect();
    let profile = sc.seccomp_profile.or(pod_sc.seccomp_profile);
    let seccomp = match profile.as_ref().map(|p| p.type_.as_str()) {
        None | Some("RuntimeDefault") => Seccomp::RuntimeDefault,
        Some("Unconfined") => Seccomp::Unconfined,
        Some("Localhost") => {
            let rel = profile
                .as_ref()
                .and_then(|p| p.localhost_profile.clone())
                .unwrap_or_default();
            let dir = ctx
                .seccomp_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| ctx.data_dir.join("seccomp"));
            Seccomp::Localhost(dir.join(rel))
        }
        Some(other) => return Err(format!("seccompProfile type {other:?} is not supported")),
    };
    let mut supplemental: Vec<u32> = pod_sc
        .supplemental_groups
        .iter()
        .map(|g| *g as u32)
        .collect();
    if let Some(g) = pod_sc.fs_group {
        supplemental.push(g as u32);
    }
    // Escalation is off unless asked for; CAP_SYS_ADMIN implies it, as in Kubernetes.
    let escalation = sc.allow_privilege_escalation.unwrap_or(false)
        || privileged
        || capabilities.iter().any(|c| c == "CAP_SYS_ADMIN");
    Ok(SecuritySettings {
        privileged,
        run_as_user: sc.run_as_user.or(pod_sc.run_as_user).map(|u| u as u32),
        run_as_group: sc.run_as_group.or(pod_sc.run_as_group).map(|g| g as u32),
        run_as_non_root: sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true),
        supplemental_groups: supplemental,
        read_only_root: sc.read_only_root_filesystem == Some(true),
        no_new_privileges: !escalation,
        capabilities,
        seccomp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::manifest::parse;
    use punnet_api::object::Object;

    fn objects(text: &str) -> Vec<Object> {
        parse(text).unwrap()
    }

    fn pod_of(objs: &[Object]) -> Pod {
        objs.iter()
            .find_map(|o| match o {
                Object::Pod(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap()
    }

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, uid: u-9, labels: {app: web}}
spec:
  securityContext: {runAsUser: 1000, fsGroup: 2000, supplementalGroups: [44]}
  volumes:
  - {name: cache, emptyDir: {medium: Memory, sizeLimit: 16Mi}}
  - {name: conf, configMap: {name: web-conf, items: [{key: app.ini, path: etc/app.ini, mode: 0600}]}}
  - {name: creds, secret: {secretName: web-creds}}
  - {name: i2c, hostPath: {path: /dev/i2c-1, type: CharDevice}}
  containers:
  - name: web
    image: busybox
    env:
    - {name: LEVEL, valueFrom: {configMapKeyRef: {name: web-conf, key: level}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: web-creds, key: password}}}
    - {name: MY_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    envFrom: [{configMapRef: {name: web-conf}, prefix: CFG_}]
    securityContext:
      runAsUser: 1001
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
    volumeMounts:
    - {name: cache, mountPath: /cache}
    - {name: conf, mountPath: /etc/web}
    - {name: creds, mountPath: /run/creds}
    - {name: i2c, mountPath: /dev/i2c-1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-conf, namespace: prod}
data: {level: debug, app.ini: "[main]\n", bad key: x}
---
apiVersion: v1
kind: Secret
metadata: {name: web-creds, namespace: prod}
stringData: {password: hunter2}
"#;

    fn ctx_parts(objs: &[Object]) -> (Vec<ConfigMap>, Vec<Secret>) {
        let cms = objs
            .iter()
            .filter_map(|o| match o {
                Object::ConfigMap(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let secrets = objs
            .iter()
            .filter_map(|o| match o {
                Object::Secret(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        (cms, secrets)
    }

    #[test]
    fn volumes_env_and_security_come_from_the_pod_and_its_sources() {
        let objs = objects(POD);
        let pod = pod_of(&objs);
        let (cms, secrets) = ctx_parts(&objs);
        let netns = PathBuf::from("/run/punnet/netns/u-9");
        let ctx = PodContext {
            config_maps: &cms,
            secrets: &secrets,
            pod_ip: Some("10.42.0.7"),
            host_ip: Some("192.168.1.5"),
            netns: Some(&netns),
            ..PodContext::bare(Path::new("/d"))
        };
        let (config, prepare) = container_config(&ctx, &pod, &pod.spec.containers[0], 0).unwrap();
        let env: BTreeMap<_, _> = config.env.iter().cloned().collect();
        assert_eq!(env["LEVEL"], "debug");
        assert_eq!(env["PASSWORD"], "hunter2");
        assert_eq!(env["MY_IP"], "10.42.0.7");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["CFG_level"], "debug");
        assert!(!env.contains_key("CFG_bad key"));

        assert!(!config.host_network);
        assert_eq!(config.netns_path.as_deref(), Some(netns.as_path()));
        let s = &config.security;
        assert_eq!(s.run_as_user, Some(1001), "the container's runAsUser wins");
        assert_eq!(s.supplemental_groups, vec![44, 2000]);
        assert!(s.read_only_root && s.no_new_privileges && !s.privileged);
        assert_eq!(s.capabilities, vec!["CAP_NET_BIND_SERVICE"]);
        assert_eq!(s.seccomp, Seccomp::RuntimeDefault);

        let dir = Path::new("/d/pods/prod_web_u-9/volumes");
        assert_eq!(
            prepare[0],
            Prepare::EmptyDir {
                path: dir.join("empty-dir/cache"),
                memory: true,
                size_limit: Some(16 << 20),
                gid: Some(2000)
            }
        );
        match &prepare[1] {
            Prepare::Files {
                path,
                files,
                memory,
                ..
            } => {
                assert_eq!(path, &dir.join("configmap/conf"));
                assert!(!memory);
                assert_eq!(files.len(), 1);
                assert_eq!(files[0].path, "etc/app.ini");
                assert_eq!(files[0].mode, 0o600);
            }
            other => panic!("{other:?}"),
        }
        match &prepare[2] {
            Prepare::Files { files, memory, .. } => {
                assert!(memory, "secrets stay off the disk");
                assert_eq!(files[0].data, b"hunter2");
            }
            other => panic!("{other:?}"),
        }
        assert!(config.mounts[1].read_only && config.mounts[2].read_only);
        assert_eq!(config.mounts[3].host_path, PathBuf::from("/dev/i2c-1"));
    }

    #[test]
    fn a_missing_configmap_names_itself_and_optional_ones_do_not_block() {
        let objs = objects(POD);
        let mut pod = pod_of(&objs);
        let err = container_config(
            &PodContext::bare(Path::new("/d")),
            &pod,
            &pod.spec.containers[0],
            0,
        )
        .unwrap_err();
        assert!(err.contains("configmap \"web-conf\" not found"), "{err}");

        let c = &mut pod.spec.containers[0];
        c.env.clear();
        c.env_from.clear();
        c.volume_mounts.retain(|m| m.name == "cache");
        let (config, _) = container_config(
            &PodContext::bare(Path::new("/d")),
            &pod,
            &pod.spec.containers[0],
            0,
        )
        .unwrap();
        assert!(config.host_network, "no Pod network set up: the host's");
    }

    #[test]
    fn privileged_gets_every_capability_and_escalation() {
        let objs = objects(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: p, uid: u}
spec:
  hostNetwork: true
  containers:
  - {name: c, image: busybox, securityContext: {privileged: true}}
"#,
        );
        let pod = pod_of(&objs);
        let (config, _) = container_config(
            &PodContext::bare(Path::new("/d")),
            &pod,
            &pod.spec.containers[0],
            0,
        )
        .unwrap();
        assert!(config.security.privileged && !config.security.no_new_privileges);
        assert_eq!(config.security.capabilities.len(), capability::ALL.len());
        assert!(config.host_network && config.netns_path.is_none());
    }
}
