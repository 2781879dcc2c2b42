//! The container's root filesystem and the files bound into it: an overlayfs of the
//! image's shared read-only layers with a per-container upper dir, plus per-container
//! copies of /etc/hosts, /etc/hostname and /etc/resolv.conf.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::runtime::layout::{ContainerDir, ShimSpec};

/// Mount options must fit in one page.
const MAX_MOUNT_DATA: usize = 4000;
/// Passwd and group files bigger than this are not an image's.
const MAX_ETC_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("image has {layers} layers; their paths do not fit in overlayfs mount options (max {MAX_MOUNT_DATA} bytes)")]
    TooManyLayers { layers: usize },
    #[error("image has no layers")]
    NoLayers,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RootfsError {
    let what = what.into();
    move |source| RootfsError::Io { what, source }
}

/// Creates the overlay's dirs and mounts it on `bundle/rootfs`.
pub fn mount_overlay(dir: &ContainerDir, layers: &[PathBuf]) -> Result<(), RootfsError> {
    if layers.is_empty() {
        return Err(RootfsError::NoLayers);
    }
    for d in [dir.rootfs(), dir.upper(), dir.work()] {
        fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
    }
    // Layers share one parent in the image store; naming them relative to it (after a
    // chdir, harmless in this single-threaded process) fits ~60 layers in one page.
    let parent = layers[0].parent().map(Path::to_path_buf);
    let shared_parent = parent
        .as_ref()
        .filter(|p| layers.iter().all(|l| l.parent() == Some(p.as_path())));
    let lower: Vec<String> = layers
        .iter()
        .rev() // overlayfs lists the top layer first
        .map(|l| match shared_parent {
            Some(_) => l
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            None => l.to_string_lossy().into_owned(),
        })
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.upper().display(),
        dir.work().display()
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(RootfsError::TooManyLayers {
            layers: layers.len(),
        });
    }
    if let Some(p) = shared_parent {
        std::env::set_current_dir(p).map_err(io_err(format!("chdir {}", p.display())))?;
    }
    let result = mount(
        Some("overlay"),
        &dir.rootfs(),
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    );
    let _ = std::env::set_current_dir("/");
    result.map_err(|e| {
        io_err(format!(
            "mounting overlayfs on {} ({data})",
            dir.rootfs().display()
        ))(e.into())
    })
}

/// Writes the container's /etc/hosts, /etc/hostname and /etc/resolv.conf; returns the
/// hostname the container gets (`None`: it shares the host's UTS namespace).
pub fn write_etc_files(dir: &ContainerDir, spec: &ShimSpec) -> Result<Option<String>, RootfsError> {
    let etc = dir.etc();
    fs::create_dir_all(&etc).map_err(io_err(format!("creating {}", etc.display())))?;
    let config = &spec.config;
    let (hostname, hosts) = if config.host_network {
        let name = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let hosts = fs::read_to_string("/etc/hosts").unwrap_or_else(|_| default_hosts(&name));
        (name, hosts)
    } else {
        let name = pod_hostname(&config.pod_name);
        let hosts = default_hosts(&name);
        (name, hosts)
    };
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = if config.host_network {
        host_resolv
    } else {
        pod_resolv_conf(
            &host_resolv,
            fs::read_to_string("/run/systemd/resolve/resolv.conf")
                .ok()
                .as_deref(),
        )
    };
    for (file, content) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ] {
        let path = etc.join(file);
        fs::write(&path, content).map_err(io_err(format!("writing {}", path.display())))?;
    }
    Ok((!config.host_network).then_some(hostname))
}

/// The resolv.conf of a container in its own network namespace. A nameserver on the
/// host's loopback (systemd-resolved's 127.0.0.53, a local dnsmasq) is not reachable
/// from there: use resolved's list of upstream servers when there is one, else drop the
/// loopback entries, as the kubelet does.
pub fn pod_resolv_conf(host: &str, resolved_upstream: Option<&str>) -> String {
    let is_loopback_ns = |l: &str| {
        let mut words = l.split_whitespace();
        words.next() == Some("nameserver")
            && words
                .next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback())
    };
    let has_loopback = host.lines().any(is_loopback_ns);
    if !has_loopback {
        return host.to_string();
    }
    if let Some(up) = resolved_upstream {
        if up.lines().any(|l| l.trim_start().starts_with("nameserver"))
            && !up.lines().any(is_loopback_ns)
        {
            return up.to_string();
        }
    }
    host.lines()
        .filter(|l| !is_loopback_ns(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn default_hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// A Pod name as a hostname: at most 63 characters, not ending in '-' or '.'.
pub fn pod_hostname(pod_name: &str) -> String {
    let cut: String = pod_name.chars().take(63).collect();
    let trimmed = cut.trim_end_matches(['-', '.']);
    if trimmed.is_empty() {
        "localhost".into()
    } else {
        trimmed.to_string()
    }
}

/// Reads `etc/<name>` from the mounted rootfs, refusing symlinks (which would resolve
/// on the host, not in the container). `None` when the image has no such file.
pub fn read_image_etc_file(dir: &ContainerDir, name: &str) -> Option<String> {
    let etc = dir.rootfs().join("etc");
    let is_plain = |p: &Path, dir: bool| {
        fs::symlink_metadata(p)
            .map(|m| if dir { m.is_dir() } else { m.is_file() })
            .unwrap_or(false)
    };
    let path = etc.join(name);
    if !is_plain(&etc, true) || !is_plain(&path, false) {
        return None;
    }
    let mut text = String::new();
    fs::File::open(&path)
        .ok()?
        .take(MAX_ETC_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_become_valid_hostnames() {
        assert_eq!(pod_hostname("web-1"), "web-1");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(pod_hostname(&long), "a".repeat(62));
        assert_eq!(pod_hostname(""), "localhost");
    }

    #[test]
    fn pods_do_not_get_the_hosts_loopback_resolver() {
        let plain = "nameserver 192.168.1.1\nsearch lan\n";
        assert_eq!(pod_resolv_conf(plain, None), plain);
        let resolved = "nameserver 127.0.0.53\noptions edns0\nsearch lan\n";
        let upstream = "nameserver 192.168.1.1\nnameserver 9.9.9.9\n";
        assert_eq!(pod_resolv_conf(resolved, Some(upstream)), upstream);
        assert_eq!(
            pod_resolv_conf(resolved, None),
            "options edns0\nsearch lan\n"
        );
    }
}
