//! Turns a `ContainerConfig` and its image's defaults into the OCI runtime spec
//! (`bundle/config.json`) that libcontainer runs. Pure: the shim gathers the inputs
//! (user ids from the image's /etc/passwd, the /etc files it wrote) and calls this.
//!
//! Defaults follow Docker/runc: Docker's capability set, no new privileges, the runtime's
//! default seccomp profile, runc's masked and read-only /proc paths, a deny-all device
//! cgroup (libcgroups adds the standard allowed devices), a writable root filesystem.
//! A Pod's `securityContext` changes them through `ContainerConfig::security`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    get_default_maskedpaths, get_default_mounts, get_default_readonly_paths, Capabilities,
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, LinuxSeccomp, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use libcontainer::oci_spec::OciSpecError;

use super::{host, seccomp, ContainerConfig, Seccomp};
use crate::image::ImageConfig;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The CFS period Kubernetes uses; the quota is the limit's share of it.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas under 1 ms.
const MIN_CPU_QUOTA_US: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container {id}: neither the Pod nor image {image} gives a command to run; set `command` in the Pod spec")]
    NoCommand { id: String, image: String },
    #[error("container {id}: user {user:?}: {reason}")]
    User {
        id: String,
        user: String,
        reason: String,
    },
    #[error("container {id}: runAsNonRoot is set but the container would run as root (uid 0): set securityContext.runAsUser to a non-zero uid, or use an image with a non-root USER")]
    RunAsRoot { id: String },
    #[error("container {id}: seccomp profile {path}: {reason}")]
    SeccompProfile {
        id: String,
        path: PathBuf,
        reason: String,
    },
    #[error("container {id}: building the OCI spec: {source}")]
    Oci {
        id: String,
        #[source]
        source: OciSpecError,
    },
}

/// The ids the container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// What `build_spec` needs besides the config and the image's defaults.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    pub config: &'a ContainerConfig,
    pub image_ref: &'a str,
    pub image: &'a ImageConfig,
    pub user: ResolvedUser,
    /// `None` with host networking: the container shares the host's UTS namespace.
    pub hostname: Option<String>,
    /// Directory holding the `hosts`, `hostname` and `resolv.conf` bound into the container.
    pub etc_dir: &'a Path,
    /// The hard RLIMIT_NOFILE the shim may hand on: raising it needs CAP_SYS_RESOURCE,
    /// which not every host grants even to root. See [`nofile_hard_limit`].
    pub nofile_hard: u64,
    /// The profile a `Localhost` seccomp setting names, read by the caller.
    pub localhost_seccomp: Option<LinuxSeccomp>,
    /// The capabilities the caller holds (its bounding set, bit n = capability n): a
    /// container cannot be given more, so a privileged one gets what there is.
    pub bounding: u64,
}

/// This process's bounding capability set, from /proc (all bits when unreadable).
pub fn bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Containerd's default hard limit on open files (the soft one is 1024).
const NOFILE_HARD: u64 = 524_288;

/// The hard open-files limit for containers: containerd's default, or less when the
/// calling process's own hard limit is lower.
pub fn nofile_hard_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and keeps no pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return NOFILE_HARD;
    }
    // rlim_t is 32 bits on 32-bit glibc (armv7), u64 elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let max = limit.rlim_max as u64;
    NOFILE_HARD.min(max)
}

/// The process's argv with Kubernetes semantics: `command` replaces the image's
/// Entrypoint, `args` its Cmd; the image's Cmd is dropped when `command` is given.
pub fn process_args(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    let (entrypoint, cmd) = match (config.command.is_empty(), config.args.is_empty()) {
        (false, _) => (&config.command, &config.args),
        (true, false) => (&image.entrypoint, &config.args),
        (true, true) => (&image.entrypoint, &image.cmd),
    };
    entrypoint.iter().chain(cmd).cloned().collect()
}

/// The image's environment with the Pod's on top (same name: the Pod wins), PATH
/// defaulted, and HOSTNAME set as Docker does.
pub fn merged_env(config: &ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let mut set = |k: &str, v: &str| {
        if values.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    };
    set("PATH", &DEFAULT_PATH["PATH=".len()..]);
    set("HOSTNAME", hostname);
    for entry in &image.env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        set(k, v);
    }
    for (k, v) in &config.env {
        set(k, v);
    }
    order
        .into_iter()
        .map(|k| {
            let v = &values[&k];
            format!("{k}={v}")
        })
        .collect()
}

/// `CAP_*` names as libcontainer's type; a name it does not know (a capability newer
/// than it) is left out rather than failing the container.
fn capability_set(names: &[String]) -> Capabilities {
    names
        .iter()
        .filter_map(|n| serde_json::from_value(serde_json::Value::String(n.clone())).ok())
        .collect()
}

pub fn build_spec(input: &SpecInputs<'_>) -> Result<Spec, SpecError> {
    let config = input.config;
    let id = &config.id;
    let oci = |source| SpecError::Oci {
        id: id.clone(),
        source,
    };
    let args = process_args(config, input.image);
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            id: id.clone(),
            image: input.image_ref.to_string(),
        });
    }
    let cwd = config
        .working_dir
        .clone()
        .or_else(|| input.image.working_dir.clone())
        .map(|d| {
            if d.starts_with('/') {
                d
            } else {
                format!("/{d}")
            }
        })
        .unwrap_or_else(|| "/".into());
    let env_hostname = input.hostname.clone().unwrap_or_else(host_hostname);

    let security = &config.security;
    let names: Vec<String> = if security.privileged {
        punnet_api::capability::ALL
            .iter()
            .map(|c| c.to_string())
            .collect()
    } else {
        security.capabilities.clone()
    };
    let held = |name: &String| {
        punnet_api::capability::ALL
            .iter()
            .position(|c| c == name)
            .is_some_and(|bit| input.bounding & (1u64 << bit) != 0)
    };
    let caps: Capabilities = capability_set(&names.into_iter().filter(held).collect::<Vec<_>>());
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(oci)?;
    let uid = security.run_as_user.unwrap_or(input.user.uid);
    if security.run_as_non_root && uid == 0 {
        return Err(SpecError::RunAsRoot { id: id.clone() });
    }
    let mut additional_gids = input.user.additional_gids.clone();
    for g in &security.supplemental_groups {
        if !additional_gids.contains(g) {
            additional_gids.push(*g);
        }
    }
    let user = UserBuilder::default()
        .uid(uid)
        .gid(security.run_as_group.unwrap_or(input.user.gid))
        .additional_gids(additional_gids)
        .build()
        .map_err(oci)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(merged_env(config, input.image, &env_hostname))
        .cwd(cwd)
        .user(user)
        .no_new_privileges(security.no_new_privileges && !security.privileged)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(1024.min(input.nofile_hard))
            .hard(input.nofile_hard)
            .build()
            .map_err(oci)?])
        .build()
        .map_err(oci)?;

    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid).map_err(oci)?,
        namespace(LinuxNamespaceType::Ipc).map_err(oci)?,
        namespace(LinuxNamespaceType::Mount).map_err(oci)?,
        namespace(LinuxNamespaceType::Cgroup).map_err(oci)?,
    ];
    if !config.host_network {
        let mut net = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
        if let Some(path) = &config.netns_path {
            net = net.path(path.clone());
        }
        namespaces.push(net.build().map_err(oci)?);
        namespaces.push(namespace(LinuxNamespaceType::Uts).map_err(oci)?);
    }

    // Deny everything, then allow the devices the Pod names (libcgroups adds the
    // standard /dev/null, /dev/zero, ... rules itself); a privileged container gets all.
    let mut device_rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(security.privileged)
        .access("rwm")
        .build()
        .map_err(oci)?];
    let mut devices = Vec::new();
    for d in &config.devices {
        let typ = if d.kind == 'b' {
            LinuxDeviceType::B
        } else {
            LinuxDeviceType::C
        };
        device_rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .access(if d.read_only { "r" } else { "rw" })
                .build()
                .map_err(oci)?,
        );
        devices.push(
            LinuxDeviceBuilder::default()
                .path(PathBuf::from(&d.container_path))
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.mode)
                .uid(d.uid)
                .gid(d.gid)
                .build()
                .map_err(oci)?,
        );
    }
    let mut resources = LinuxResourcesBuilder::default().devices(device_rules);
    if let Some(limit) = config.memory_limit_bytes {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .map_err(oci)?,
        );
    }
    if let Some(millis) = config.cpu_limit_millis {
        let quota = (millis.saturating_mul(CPU_PERIOD_US) / 1000) as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota.max(MIN_CPU_QUOTA_US))
                .period(CPU_PERIOD_US)
                .build()
                .map_err(oci)?,
        );
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(host::cgroups_path(id)))
        .resources(resources.build().map_err(oci)?)
        .devices(devices);
    if !security.privileged {
        linux = linux
            .masked_paths(get_default_maskedpaths())
            .readonly_paths(get_default_readonly_paths());
        let cap_names: Vec<&str> = security.capabilities.iter().map(String::as_str).collect();
        match &security.seccomp {
            Seccomp::RuntimeDefault => {
                linux = linux.seccomp(seccomp::runtime_default(&cap_names).map_err(oci)?);
            }
            Seccomp::Unconfined => {}
            Seccomp::Localhost(path) => {
                let profile =
                    input
                        .localhost_seccomp
                        .clone()
                        .ok_or_else(|| SpecError::SeccompProfile {
                            id: id.clone(),
                            path: path.clone(),
                            reason: "was not read".into(),
                        })?;
                linux = linux.seccomp(profile);
            }
        }
    }
    let linux = linux.build().map_err(oci)?;

    let annotations: HashMap<String, String> = [
        ("io.kubernetes.pod.namespace", &config.pod_namespace),
        ("io.kubernetes.pod.name", &config.pod_name),
        ("io.kubernetes.pod.uid", &config.pod_uid),
        ("io.kubernetes.container.name", &config.container_name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();

    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(security.read_only_root && !security.privileged)
                .build()
                .map_err(oci)?,
        )
        .process(process)
        .mounts(mounts(input).map_err(oci)?)
        .linux(linux)
        .annotations(annotations)
        .build()
        .map_err(oci)?;
    spec.set_hostname(input.hostname.clone());
    Ok(spec)
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace, OciSpecError> {
    LinuxNamespaceBuilder::default().typ(typ).build()
}

fn mounts(input: &SpecInputs<'_>) -> Result<Vec<Mount>, OciSpecError> {
    let mut mounts = get_default_mounts();
    for file in ["hosts", "hostname", "resolv.conf"] {
        mounts.push(bind(
            &input.etc_dir.join(file),
            &format!("/etc/{file}"),
            false,
        )?);
    }
    for m in &input.config.mounts {
        mounts.push(bind(&m.host_path, &m.container_path, m.read_only)?);
    }
    Ok(mounts)
}

fn bind(source: &Path, destination: &str, read_only: bool) -> Result<Mount, OciSpecError> {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if read_only {
        options.push("ro".into());
    }
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
}

/// The host's hostname, for HOSTNAME in a host-network container.
fn host_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Resolves an image's `User` (`name`, `uid`, `name:group`, `uid:gid`; `None` is root)
/// against the contents of its /etc/passwd and /etc/group (`None` when the image has none).
pub fn resolve_user(
    id: &str,
    user: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let Some(spec) = user.filter(|u| !u.is_empty()) else {
        return Ok(ResolvedUser::default());
    };
    let err = |reason: String| SpecError::User {
        id: id.to_string(),
        user: spec.to_string(),
        reason,
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd_entries: Vec<Vec<&str>> = passwd
        .unwrap_or("")
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let group_entries: Vec<Vec<&str>> = group
        .unwrap_or("")
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();

    let (uid, default_gid, name) = match user_part.parse::<u32>() {
        Ok(uid) => {
            let entry = passwd_entries.iter().find(|f| f[2] == user_part);
            let gid = entry.and_then(|f| f[3].parse().ok()).unwrap_or(0);
            (uid, gid, entry.map(|f| f[0]))
        }
        Err(_) => {
            let entry = passwd_entries
                .iter()
                .find(|f| f[0] == user_part)
                .ok_or_else(|| err(format!("no user {user_part:?} in the image's /etc/passwd")))?;
            let uid = entry[2]
                .parse()
                .map_err(|_| err(format!("bad uid {:?} in /etc/passwd", entry[2])))?;
            let gid = entry[3]
                .parse()
                .map_err(|_| err(format!("bad gid {:?} in /etc/passwd", entry[3])))?;
            (uid, gid, Some(entry[0]))
        }
    };
    let gid = match group_part {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| err(format!("no group {g:?} in the image's /etc/group")))?,
        },
    };
    // Supplementary groups only when the group was not forced, as Docker does.
    let mut additional_gids: Vec<u32> = match (name, group_part) {
        (Some(name), None) => group_entries
            .iter()
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::BindMount;
    use std::time::Duration;

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "c1".into(),
            pod_uid: "uid".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            container_name: "app".into(),
            restart_count: 0,
            image: "busybox".into(),
            command: vec![],
            args: vec![],
            env: vec![],
            working_dir: None,
            memory_limit_bytes: None,
            cpu_limit_millis: None,
            mounts: vec![],
            host_network: false,
            netns_path: None,
            devices: vec![],
            security: Default::default(),
            hooks: Default::default(),
            grace_period: Duration::from_secs(1),
            log_path: "/tmp/log".into(),
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["cmd-arg".into()],
            env: vec!["PATH=/image/bin".into(), "A=image".into()],
            working_dir: Some("/work".into()),
            user: None,
        }
    }

    #[test]
    fn kubernetes_command_and_args_semantics() {
        let mut c = config();
        assert_eq!(process_args(&c, &image()), ["/entry", "cmd-arg"]);
        c.args = vec!["x".into()];
        assert_eq!(process_args(&c, &image()), ["/entry", "x"]);
        c.command = vec!["sh".into()];
        assert_eq!(process_args(&c, &image()), ["sh", "x"]);
        c.args.clear();
        assert_eq!(process_args(&c, &image()), ["sh"]);
    }

    #[test]
    fn pod_env_overrides_image_env_and_path_is_kept() {
        let mut c = config();
        c.env = vec![("A".into(), "pod".into()), ("B".into(), "b=c".into())];
        let env = merged_env(&c, &image(), "web");
        assert_eq!(env, ["PATH=/image/bin", "HOSTNAME=web", "A=pod", "B=b=c"]);
        let env = merged_env(&config(), &ImageConfig::default(), "web");
        assert_eq!(env[0], DEFAULT_PATH);
    }

    #[test]
    fn spec_has_limits_namespaces_and_mounts() {
        let mut c = config();
        c.memory_limit_bytes = Some(8 << 20);
        c.cpu_limit_millis = Some(250);
        c.mounts = vec![BindMount {
            host_path: "/data".into(),
            container_path: "/data".into(),
            read_only: true,
        }];
        let img = image();
        let etc = PathBuf::from("/run/c1/etc");
        let spec = build_spec(&SpecInputs {
            config: &c,
            image_ref: "busybox",
            image: &img,
            user: ResolvedUser::default(),
            hostname: Some("web".into()),
            etc_dir: &etc,
            nofile_hard: NOFILE_HARD,
            localhost_seccomp: None,
            bounding: u64::MAX,
        })
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/punnet/c1"))
        );
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().unwrap().limit(), Some(8 << 20));
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(25_000));
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(ns.contains(&LinuxNamespaceType::Network));
        let mounts = spec.mounts().as_ref().unwrap();
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert!(data.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new("/etc/resolv.conf")));
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.cwd(), Path::new("/work"));
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(spec.hostname().as_deref(), Some("web"));
        assert!(!spec.root().as_ref().unwrap().readonly().unwrap());
    }

    #[test]
    fn host_network_has_no_net_or_uts_namespace_and_no_command_is_an_error() {
        let mut c = config();
        c.host_network = true;
        let etc = PathBuf::from("/e");
        let img = image();
        let spec = build_spec(&SpecInputs {
            config: &c,
            image_ref: "busybox",
            image: &img,
            user: ResolvedUser::default(),
            hostname: None,
            etc_dir: &etc,
            nofile_hard: NOFILE_HARD,
            localhost_seccomp: None,
            bounding: u64::MAX,
        })
        .unwrap();
        let ns: Vec<_> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(!ns.contains(&LinuxNamespaceType::Network));
        assert!(!ns.contains(&LinuxNamespaceType::Uts));
        assert_eq!(spec.hostname(), &None);

        let empty = ImageConfig::default();
        let err = build_spec(&SpecInputs {
            config: &c,
            image_ref: "busybox",
            image: &empty,
            user: ResolvedUser::default(),
            hostname: None,
            etc_dir: &etc,
            nofile_hard: NOFILE_HARD,
            localhost_seccomp: None,
            bounding: u64::MAX,
        })
        .unwrap_err();
        assert!(matches!(err, SpecError::NoCommand { .. }), "{err}");
    }

    #[test]
    fn users_resolve_by_name_or_number() {
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n";
        let group = "root:x:0:\nwww:x:33:\nvideo:x:44:www,bob\n";
        let r = |u: Option<&str>| resolve_user("c", u, Some(passwd), Some(group));
        assert_eq!(r(None).unwrap(), ResolvedUser::default());
        assert_eq!(
            r(Some("www")).unwrap(),
            ResolvedUser {
                uid: 33,
                gid: 33,
                additional_gids: vec![44]
            }
        );
        assert_eq!(r(Some("1000")).unwrap().uid, 1000);
        assert_eq!(r(Some("33:video")).unwrap().gid, 44);
        assert_eq!(r(Some("1000:7")).unwrap().gid, 7);
        assert!(r(Some("nobody")).is_err());
        assert!(r(Some("www:nogroup")).is_err());
    }
}
