//! `PodNetwork`: sets a Pod's network up (namespace, CNI ADD, saved state), checks it
//! when asked again, and tears it down from what was saved. CNI is called as the spec's
//! conventions for configuration lists say: ADD in order with each result passed on as
//! the next plugin's `prevResult`, CHECK in order and DEL in reverse with the cached
//! final result.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{json, Value};

use super::cni::{self, Call, CniCommand, ExecError};
use super::config::{check_uid, NetworkConfig, PodCidr};
use super::conflist::{self, loopback_config, pod_conflist, runtime_config};
use super::state::{self, SavedPod, STATE_VERSION};
use super::{leftovers, netns, NetworkError, PodNetSpec, PodNetStatus};

/// The Pod's interface, as in Kubernetes.
const IFNAME: &str = "eth0";
const LOOPBACK_IFNAME: &str = "lo";
/// Every executable the configurations use (bridge runs host-local itself).
const PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];

pub struct PodNetwork {
    cfg: NetworkConfig,
    /// Changes when the controller assigns (or reassigns) the node's podCIDR.
    cidr: RwLock<Option<PodCidr>>,
    /// One operation per Pod at a time; different Pods proceed in parallel (host-local
    /// and iptables take their own locks).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Which configuration of a saved Pod a call is about.
#[derive(Clone, Copy)]
enum Part {
    Chain,
    Loopback,
}

impl PodNetwork {
    /// Checks the settings and creates the state directories. Missing plugins are not an
    /// error here (a node running only hostNetwork Pods needs none): see
    /// [`PodNetwork::check_plugins`].
    pub fn new(cfg: NetworkConfig) -> Result<PodNetwork, NetworkError> {
        cfg.validate()?;
        let cidr = cfg.pod_cidr.as_deref().map(PodCidr::parse).transpose()?;
        for dir in [&cfg.state_dir, &cfg.ipam_dir] {
            std::fs::create_dir_all(dir).map_err(|source| NetworkError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(PodNetwork {
            cfg,
            cidr: RwLock::new(cidr),
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// Sets the node's Pod CIDR (from the desired state's `pod_cidr`); returns whether it
    /// changed. Pods set up later get addresses from the new range. A Pod set up from an
    /// older range is moved to the new one by its next [`PodNetwork::setup`] (DEL, then
    /// ADD in the same namespace: its IP changes under its running containers), and the
    /// bridge's gateway address is replaced by the first ADD from the new range, which
    /// cuts Pods still on the old range off from their gateway until then.
    pub fn set_pod_cidr(&self, cidr: Option<&str>) -> Result<bool, NetworkError> {
        let new = cidr.map(PodCidr::parse).transpose()?;
        let mut cur = self.cidr.write().unwrap_or_else(|e| e.into_inner());
        let changed = *cur != new;
        *cur = new;
        Ok(changed)
    }

    pub fn pod_cidr(&self) -> Option<String> {
        self.current_cidr().map(|c| c.to_string())
    }

    fn current_cidr(&self) -> Option<PodCidr> {
        *self.cidr.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the Pod's namespace is (or will be) mounted.
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        self.cfg.netns_dir.join(uid)
    }

    /// Fails with the first plugin missing from the plugin dirs.
    pub fn check_plugins(&self) -> Result<(), NetworkError> {
        PLUGINS
            .iter()
            .try_for_each(|p| self.find_plugin(p, None).map(drop))
    }

    fn find_plugin(&self, name: &str, pod: Option<&str>) -> Result<PathBuf, NetworkError> {
        self.cfg
            .plugin_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| NetworkError::PluginMissing {
                pod: pod.map(str::to_string),
                plugin: name.to_string(),
                dirs: self.cfg.plugin_dirs_text(),
            })
    }

    /// The uids that have network state: a state file or a namespace. Tear down those
    /// that are not desired any more (after a crash, a restart, a missed delete).
    pub fn list(&self) -> Vec<String> {
        let mut uids = state::list(&self.cfg.state_dir);
        if let Ok(entries) = std::fs::read_dir(&self.cfg.netns_dir) {
            uids.extend(entries.filter_map(Result::ok).filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                check_uid(&name).ok().map(|()| name)
            }));
        }
        uids.sort();
        uids.dedup();
        uids
    }

    /// The saved result of a set-up Pod, without calling CNI (e.g. for `status.podIP`
    /// after an agent restart).
    pub fn saved_status(&self, uid: &str) -> Option<PodNetStatus> {
        check_uid(uid).ok()?;
        let saved = state::read(&self.cfg.state_dir, uid, uid).ok()??;
        status_of(&saved, false).ok()
    }

    fn lock_for(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(uid.to_string()).or_default().clone()
    }

    fn forget_lock(&self, uid: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Only when nobody else holds or waits for it.
        if locks.get(uid).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(uid);
        }
    }

    /// Gives the Pod its network, or returns the one it has. Idempotent: for a Pod already
    /// set up with the same configuration it runs CNI CHECK and returns the saved result;
    /// when CHECK fails, or the namespace or configuration changed, it DELs what was
    /// there and ADDs again. Async: the plugins run as child processes.
    pub async fn setup(&self, pod: &PodNetSpec) -> Result<PodNetStatus, NetworkError> {
        let label = pod.label();
        check_uid(&pod.uid)?;
        let lock = self.lock_for(&pod.uid);
        let _guard = lock.lock().await;

        for p in PLUGINS {
            self.find_plugin(p, Some(&label))?;
        }
        let cidr = self.current_cidr();
        let netns_path = self.netns_path(&pod.uid);
        let runtime = runtime_config(&pod.host_ports);
        let loopback = loopback_config(&self.cfg);
        let saved = state::read(&self.cfg.state_dir, &pod.uid, &label)?;

        if let Some(saved) = &saved {
            // Without a CIDR (an agent started offline before the controller told it
            // again) a Pod set up earlier keeps the range it was set up with.
            let same_range = cidr.is_none_or(|c| {
                saved.conflist == pod_conflist(&self.cfg, &c, !pod.host_ports.is_empty())
            });
            let unchanged = same_range
                && saved.runtime_config == runtime
                && saved.loopback == loopback
                && saved.netns == netns_path
                && saved.ifname == IFNAME;
            let complete = saved.result.is_some() && saved.loopback_result.is_some();
            if unchanged && complete && netns::is_netns(&saved.netns).unwrap_or(false) {
                match self.check(saved).await {
                    Ok(()) => return status_of(saved, false),
                    Err(e) => {
                        tracing::warn!(pod = %label, error = %e, "CNI CHECK failed; setting the Pod's network up again")
                    }
                }
            }
        }
        let cidr = cidr.ok_or_else(|| NetworkError::NoPodCidr { pod: label.clone() })?;
        let conflist = pod_conflist(&self.cfg, &cidr, !pod.host_ports.is_empty());

        let mut attempt = 0;
        if let Some(saved) = saved {
            self.del(&saved).await?;
            if saved.netns != netns_path {
                netns::remove(&saved.netns)
                    .await
                    .map_err(|source| NetworkError::Netns {
                        pod: label.clone(),
                        action: "remove",
                        path: saved.netns.clone(),
                        source,
                    })?;
            }
            attempt = saved.attempt + 1;
        }

        let new_namespace =
            netns::create(&netns_path)
                .await
                .map_err(|source| NetworkError::Netns {
                    pod: label.clone(),
                    action: "create",
                    path: netns_path.clone(),
                    source,
                })?;
        let mut saved = SavedPod {
            version: STATE_VERSION,
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            container_id: if attempt == 0 {
                pod.uid.clone()
            } else {
                format!("{}-{attempt}", pod.uid)
            },
            attempt,
            netns: netns_path,
            ifname: IFNAME.into(),
            conflist,
            runtime_config: runtime,
            loopback,
            result: None,
            loopback_result: None,
        };
        // Saved before ADD: a crash during ADD leaves a record that teardown DELs.
        state::write(&self.cfg.state_dir, &saved)?;
        let added = self.add(&mut saved, &cidr).await;
        let status = added.and_then(|()| status_of(&saved, new_namespace));
        match status {
            Ok(status) => {
                state::write(&self.cfg.state_dir, &saved)?;
                Ok(status)
            }
            Err(e) => {
                // Undo the half-done ADD now (it leaves a veth and maybe an address);
                // if that fails too the state stays for teardown to retry.
                match self.del(&saved).await {
                    Ok(()) => {
                        if new_namespace {
                            let _ = netns::remove(&saved.netns).await;
                        }
                        let _ = state::remove(&self.cfg.state_dir, &saved.uid, &label);
                    }
                    Err(del) => {
                        tracing::warn!(pod = %label, error = %del, "undoing a failed CNI ADD failed; teardown will retry")
                    }
                }
                Err(e)
            }
        }
    }

    /// Releases the Pod's network from its saved state alone: CNI DEL (in reverse, with
    /// the saved configuration and result), then the namespace and the state file. Works
    /// after an agent restart and for a Pod whose spec is gone; nothing saved is fine.
    /// On error everything stays in place for a retry.
    pub async fn teardown(&self, uid: &str) -> Result<(), NetworkError> {
        check_uid(uid)?;
        let lock = self.lock_for(uid);
        let guard = lock.lock().await;
        let label = format!("uid {uid}");
        let default_netns = self.netns_path(uid);
        let saved = state::read(&self.cfg.state_dir, uid, &label)?;
        if let Some(saved) = &saved {
            self.del(saved).await?;
        }
        let mut namespaces = vec![default_netns];
        if let Some(saved) = &saved {
            if saved.netns != namespaces[0] {
                namespaces.push(saved.netns.clone());
            }
        }
        for path in namespaces {
            netns::remove(&path)
                .await
                .map_err(|source| NetworkError::Netns {
                    pod: saved.as_ref().map_or(label.clone(), SavedPod::label),
                    action: "remove",
                    path,
                    source,
                })?;
        }
        state::remove(&self.cfg.state_dir, uid, &label)?;
        drop(guard);
        drop(lock);
        self.forget_lock(uid);
        Ok(())
    }

    async fn add(&self, saved: &mut SavedPod, cidr: &PodCidr) -> Result<(), NetworkError> {
        let lo = self
            .run(saved, Part::Loopback, CniCommand::Add, Some(cidr))
            .await?;
        saved.loopback_result = lo;
        let result = self
            .run(saved, Part::Chain, CniCommand::Add, Some(cidr))
            .await?;
        saved.result = result;
        Ok(())
    }

    async fn check(&self, saved: &SavedPod) -> Result<(), NetworkError> {
        self.run(saved, Part::Loopback, CniCommand::Check, None)
            .await?;
        self.run(saved, Part::Chain, CniCommand::Check, None)
            .await?;
        Ok(())
    }

    async fn del(&self, saved: &SavedPod) -> Result<(), NetworkError> {
        self.run(saved, Part::Chain, CniCommand::Del, None).await?;
        match leftovers::remove(
            &self.cfg.network_name,
            &saved.container_id,
            self.cfg.plugin_timeout,
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(pod = %saved.label(), rules = n, "removed NAT rules CNI DEL left behind (the Pod's interface was already gone)")
            }
            Err(e) => {
                tracing::warn!(pod = %saved.label(), error = %e, "could not look for NAT rules CNI DEL left behind")
            }
        }
        self.run(saved, Part::Loopback, CniCommand::Del, None)
            .await?;
        Ok(())
    }

    /// Runs one command over the plugins of one saved configuration. ADD returns the
    /// final result.
    async fn run(
        &self,
        saved: &SavedPod,
        part: Part,
        command: CniCommand,
        cidr: Option<&PodCidr>,
    ) -> Result<Option<Value>, NetworkError> {
        let (list, cached, ifname, runtime) = match part {
            Part::Chain => (
                &saved.conflist,
                saved.result.as_ref(),
                saved.ifname.as_str(),
                saved.runtime_config.clone(),
            ),
            Part::Loopback => (
                &saved.loopback,
                saved.loopback_result.as_ref(),
                LOOPBACK_IFNAME,
                json!({}),
            ),
        };
        // The spec lets DEL run without a namespace; plugins then release what lives
        // outside it (addresses, port mappings). A path that is no namespace any more
        // (unmounted by hand) would make them fail instead.
        let netns = match command {
            CniCommand::Del if !netns::is_netns(&saved.netns).unwrap_or(false) => None,
            _ => Some(saved.netns.as_path()),
        };
        let cni_path = std::env::join_paths(&self.cfg.plugin_dirs)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cni_args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            saved.namespace, saved.name, saved.container_id, saved.uid
        );
        let call = Call {
            command,
            container_id: &saved.container_id,
            netns,
            ifname,
            cni_path: &cni_path,
            cni_args: &cni_args,
        };

        let mut plugins = conflist::plugins(list);
        if command == CniCommand::Del {
            plugins.reverse();
        }
        let mut prev: Option<Value> = None;
        for plugin in &plugins {
            let name = conflist::plugin_type(plugin);
            let prev_result = match command {
                CniCommand::Add => prev.as_ref(),
                CniCommand::Check | CniCommand::Del => cached,
            };
            let stdin = conflist::plugin_stdin(list, plugin, &runtime, prev_result);
            let exe = self.find_plugin(name, Some(&saved.label()))?;
            let started = std::time::Instant::now();
            let out = cni::exec(
                &exe,
                &call,
                stdin.to_string().as_bytes(),
                self.cfg.plugin_timeout,
            )
            .await;
            tracing::debug!(pod = %saved.label(), plugin = name, command = command.as_str(), elapsed = ?started.elapsed(), "CNI call");
            match out {
                Ok(result) => {
                    if command == CniCommand::Add {
                        if result.is_none() {
                            return Err(NetworkError::BadResult {
                                pod: saved.label(),
                                command: command.as_str(),
                                plugin: name.to_string(),
                                reason: "ADD printed no result".into(),
                                output: String::new(),
                            });
                        }
                        prev = result;
                    }
                }
                Err(ExecError::Cni { ref msg, .. })
                    if command == CniCommand::Check
                        && portmap_ipv6_check_bug(name, msg, cached) =>
                {
                    // containernetworking-plugins before 1.2 (Debian 12 has 1.1.1) look for
                    // IPv6 rules in CHECK even for an IPv4-only Pod, after the IPv4 rules
                    // checked out (containernetworking/plugins#819).
                }
                Err(e) => {
                    return Err(exec_error(
                        saved,
                        name,
                        command,
                        cidr,
                        self.cfg.plugin_timeout,
                        e,
                    ))
                }
            }
        }
        Ok(prev)
    }
}

fn portmap_ipv6_check_bug(plugin: &str, msg: &str, result: Option<&Value>) -> bool {
    let has_ipv6 = result
        .and_then(|r| r.get("ips"))
        .and_then(Value::as_array)
        .is_some_and(|ips| {
            ips.iter().any(|ip| {
                ip.get("address")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.contains(':'))
            })
        });
    plugin == "portmap" && msg.starts_with("could not check ipv6 dnat") && !has_ipv6
}

fn exec_error(
    saved: &SavedPod,
    plugin: &str,
    command: CniCommand,
    cidr: Option<&PodCidr>,
    timeout: std::time::Duration,
    e: ExecError,
) -> NetworkError {
    let pod = saved.label();
    let plugin = plugin.to_string();
    let command = command.as_str();
    match e {
        ExecError::Spawn(source) => NetworkError::PluginSpawn {
            pod,
            command,
            plugin,
            source,
        },
        ExecError::Timeout => NetworkError::PluginTimeout {
            pod,
            command,
            plugin,
            timeout,
        },
        // host-local's only way of saying so (error code 999, generic).
        ExecError::Cni { msg, .. } if msg.contains("no IP addresses available") => {
            NetworkError::AddressesExhausted {
                pod,
                cidr: cidr.map(|c| c.to_string()).unwrap_or_default(),
                plugin,
                msg,
            }
        }
        ExecError::Cni { code, msg, details } => NetworkError::Plugin {
            pod,
            command,
            plugin,
            code,
            msg,
            details,
        },
        ExecError::Crashed { status, stderr } => NetworkError::PluginCrashed {
            pod,
            command,
            plugin,
            status,
            stderr,
        },
        ExecError::BadResult { reason, output } => NetworkError::BadResult {
            pod,
            command,
            plugin,
            reason,
            output,
        },
    }
}

/// The Pod's address from a saved ADD result.
fn status_of(saved: &SavedPod, new_namespace: bool) -> Result<PodNetStatus, NetworkError> {
    let no_address = || NetworkError::NoAddress {
        pod: saved.label(),
        ifname: saved.ifname.clone(),
        result: saved
            .result
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_else(|| "none".into()),
    };
    let result = saved.result.as_ref().ok_or_else(no_address)?;
    let addr = cni::pod_address(result, &saved.ifname).ok_or_else(no_address)?;
    let gateway = addr
        .gateway
        .unwrap_or_else(|| Ipv4Addr::from(u32::from(addr.address.network()) + 1));
    Ok(PodNetStatus {
        netns_path: saved.netns.clone(),
        ip: addr.address.addr(),
        prefix_len: addr.address.prefix_len(),
        gateway,
        interface: saved.ifname.clone(),
        mac: addr.mac,
        new_namespace,
    })
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("cfg", &self.cfg)
            .field("cidr", &self.current_cidr())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pod_network_can_be_shared_between_tasks() {
        fn is<T: Send + Sync>() {}
        is::<PodNetwork>();
    }

    #[test]
    fn only_portmaps_ipv6_check_of_an_ipv4_pod_is_forgiven() {
        let v4 = json!({"ips": [{"address": "10.42.0.2/24"}]});
        let v6 = json!({"ips": [{"address": "fd00::2/64"}]});
        let msg = "could not check ipv6 dnat: chain CNI-DN-x not found in iptables table nat";
        assert!(portmap_ipv6_check_bug("portmap", msg, Some(&v4)));
        assert!(!portmap_ipv6_check_bug("portmap", msg, Some(&v6)));
        assert!(!portmap_ipv6_check_bug("bridge", msg, Some(&v4)));
        assert!(!portmap_ipv6_check_bug(
            "portmap",
            "could not check ipv4 dnat: x",
            Some(&v4)
        ));
    }

    #[test]
    fn cidr_changes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let net = PodNetwork::new(NetworkConfig::new(dir.path())).unwrap();
        assert_eq!(net.pod_cidr(), None);
        assert!(net.set_pod_cidr(Some("10.42.1.0/24")).unwrap());
        assert!(!net.set_pod_cidr(Some("10.42.1.0/24")).unwrap());
        assert_eq!(net.pod_cidr().as_deref(), Some("10.42.1.0/24"));
        assert!(net.set_pod_cidr(Some("nonsense")).is_err());
        assert_eq!(net.pod_cidr().as_deref(), Some("10.42.1.0/24"));
        assert!(dir.path().join("network/ipam").is_dir());
    }

    #[test]
    fn missing_plugins_are_named_with_the_dirs_searched() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NetworkConfig::new(dir.path());
        cfg.plugin_dirs = vec![dir.path().join("none")];
        let net = PodNetwork::new(cfg).unwrap();
        let e = net.check_plugins().unwrap_err().to_string();
        assert!(e.starts_with("CNI plugin bridge not found in "), "{e}");
        assert!(e.contains("install containernetworking-plugins"), "{e}");
    }

    #[tokio::test]
    async fn setup_without_a_pod_cidr_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NetworkConfig::new(dir.path());
        // Stand-ins: this test must not depend on the plugins being installed.
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for p in PLUGINS {
            std::fs::write(plugins.join(p), "").unwrap();
        }
        cfg.plugin_dirs = vec![plugins];
        let net = PodNetwork::new(cfg).unwrap();
        let pod = PodNetSpec {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            host_ports: vec![],
        };
        let e = net.setup(&pod).await.unwrap_err();
        assert!(matches!(e, NetworkError::NoPodCidr { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("pod default/web (uid u1): this node has no Pod CIDR yet"));
    }
}
