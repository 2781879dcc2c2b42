//! `punnet image build`: turns a Raspberry Pi OS image into one that boots straight
//! into the fleet. It copies the base (never touching it), then edits only the copy's
//! FAT boot partition, in process: the agent binary for the image's architecture
//! (`arch`), its config and CA, the first-boot setup for cloud-init or `systemd.run=`
//! (`firstboot`), preloaded OCI archives, and the kernel command line (`cmdline`).
//! `disk` does the file and partition I/O; this module checks the inputs, decides and
//! reports.

pub mod arch;
pub mod cmdline;
pub mod disk;
pub mod firstboot;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

use arch::{Flavour, ImageArch};
use disk::Partition;
use firstboot::{AgentYaml, Board, Wifi};

/// Which first-boot mechanism the image gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `user-data`/`network-config`/`meta-data` (Raspberry Pi OS from Trixie on).
    CloudInit,
    /// `firstrun.sh` through `systemd.run=` on cmdline.txt (Bookworm-era releases).
    Firstrun,
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mechanism::CloudInit => "cloud-init (user-data, meta-data)",
            Mechanism::Firstrun => "firstrun.sh (systemd.run= on cmdline.txt)",
        })
    }
}

/// The cloud-init seed files Raspberry Pi OS images ship on their boot partition from
/// Trixie on: their presence says the image runs cloud-init.
const CLOUD_INIT_FILES: [&str; 3] = ["user-data", "meta-data", "network-config"];

/// `Some(m)` forces a mechanism; `None` picks by the image: cloud-init when its boot
/// partition carries cloud-init's seed files, firstrun.sh otherwise.
pub fn choose_mechanism(forced: Option<Mechanism>, boot_files: &[String]) -> Mechanism {
    forced.unwrap_or_else(|| {
        let cloud = boot_files
            .iter()
            .any(|f| CLOUD_INIT_FILES.iter().any(|c| f.eq_ignore_ascii_case(c)));
        if cloud {
            Mechanism::CloudInit
        } else {
            Mechanism::Firstrun
        }
    })
}

/// Where the running system mounts the boot partition: `/boot/firmware` since Bookworm
/// (and so for every cloud-init image); `/boot` on older images, whose config.txt
/// points at `/boot/overlays`.
pub fn boot_mount(config_txt: &str, mechanism: Mechanism) -> &'static str {
    if mechanism == Mechanism::Firstrun
        && config_txt.contains("/boot/overlays")
        && !config_txt.contains("/boot/firmware")
    {
        "/boot"
    } else {
        "/boot/firmware"
    }
}

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub base: PathBuf,
    pub out: PathBuf,
    /// The broker the boards connect to: `mqtts://HOST[:8883]`.
    pub controller: String,
    pub token: Option<String>,
    pub ca: Option<PathBuf>,
    pub allow_plaintext: bool,
    pub hostname_prefix: String,
    pub labels: Vec<String>,
    pub wifi_ssid: Option<String>,
    pub wifi_psk: Option<String>,
    pub wifi_country: Option<String>,
    pub ssh_key: Option<PathBuf>,
    pub preload: Vec<PathBuf>,
    /// An agent binary to use instead of looking in the dist directories.
    pub agent: Option<PathBuf>,
    /// Where `cross/build` put its binaries (`<dir>/<triple>/punnet-agent`).
    pub dist: Vec<PathBuf>,
    pub mechanism: Option<Mechanism>,
    /// Names the instance id in meta-data (the build time in milliseconds).
    pub instance: String,
}

/// What a build did, for the report.
#[derive(Debug, Clone)]
pub struct Built {
    pub arch: ImageArch,
    pub partition: Partition,
    pub agents: Vec<(Flavour, PathBuf, u64)>,
    pub mechanism: Mechanism,
    pub boot_mount: &'static str,
    pub preloaded: u64,
    pub payload: u64,
    pub free_after: u64,
    pub decompressed: bool,
    pub image_bytes: u64,
    pub cmdline: String,
}

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("--token is required: boards enrol with a bootstrap token; make one with `punnet token create --uses N` (it is never taken from $PUNNET_TOKEN or the config file, which hold your own token)")]
    MissingToken,
    #[error("--token: not a bootstrap token (expected <12 hex>.<secret> as printed by `punnet token create`)")]
    BadToken,
    #[error("--controller {url:?}: {reason}")]
    Controller { url: String, reason: String },
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--out {0} is the base image: the base is never changed, write the new image to another file")]
    SameFile(PathBuf),
    #[error("{path}: not a Raspberry Pi OS image: {reason}")]
    NotRaspberryPi { path: PathBuf, reason: String },
    #[error("{path}: the boot partition (partition {partition}) cannot be written: {source}")]
    Fat {
        path: PathBuf,
        partition: usize,
        source: std::io::Error,
    },
    #[error("{path}: the boot partition (partition {partition}, {}) has {} free, but the payload needs {} ({detail}); preload fewer images, or grow the boot partition", human(*size), human(*free), human(*needed))]
    TooSmall {
        path: PathBuf,
        partition: usize,
        size: u64,
        free: u64,
        needed: u64,
        detail: String,
    },
    #[error("no punnet-agent for this {arch} image: looked for {wanted} in {looked}; build it with `cross/build {triple}`, or give one with --agent FILE")]
    NoAgent {
        arch: ImageArch,
        wanted: String,
        looked: String,
        triple: &'static str,
    },
    #[error("agent {path}: it is a {found} program, but this image is {arch}")]
    AgentArch {
        path: PathBuf,
        found: String,
        arch: ImageArch,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The inputs, checked before anything is copied.
struct Inputs {
    agent_yaml: String,
    ca_pem: Option<Vec<u8>>,
    board: Board,
    wifi_country: Option<String>,
    preload: Vec<(String, PathBuf, u64)>,
}

fn check_inputs(o: &BuildOptions) -> Result<Inputs, ImageError> {
    let token = o.token.as_deref().ok_or(ImageError::MissingToken)?;
    let token = punnet_api::enrol::TokenString::parse(token).ok_or(ImageError::BadToken)?;
    check_controller(&o.controller, o.allow_plaintext)?;
    check_prefix(&o.hostname_prefix)?;
    let mut labels = BTreeMap::new();
    for label in &o.labels {
        match label.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                labels.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                return Err(ImageError::Input(format!(
                    "--label {label:?}: expected KEY=VALUE"
                )))
            }
        }
    }
    let wifi_country = match &o.wifi_country {
        Some(cc) if cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(cc.to_ascii_uppercase())
        }
        Some(cc) => {
            return Err(ImageError::Input(format!(
                "--wifi-country {cc:?}: expected a two-letter country code such as GB or DE"
            )))
        }
        None => None,
    };
    let wifi = match (&o.wifi_ssid, &o.wifi_psk) {
        (Some(ssid), Some(psk)) => {
            let country = wifi_country.clone().ok_or_else(|| {
                ImageError::Input("--wifi-ssid: also give --wifi-country (Raspberry Pi OS keeps Wi-Fi off until its country is set)".into())
            })?;
            if ssid.is_empty() || ssid.len() > 32 {
                return Err(ImageError::Input(format!(
                    "--wifi-ssid {ssid:?}: an SSID is 1 to 32 bytes"
                )));
            }
            let psk = firstboot::wpa_psk(ssid, psk).map_err(ImageError::Input)?;
            Some(Wifi {
                ssid: ssid.clone(),
                psk,
                country,
            })
        }
        (None, None) => None,
        _ => {
            return Err(ImageError::Input(
                "--wifi-ssid and --wifi-psk go together".into(),
            ))
        }
    };
    let ssh_key = match &o.ssh_key {
        Some(path) => Some(read_ssh_key(path)?),
        None => None,
    };
    let ca_pem = match &o.ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(io_err(path))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(ImageError::Input(format!(
                    "--ca {}: not a PEM certificate (the controller's ca.pem)",
                    path.display()
                )));
            }
            Some(pem)
        }
        None => None,
    };
    let mut preload = Vec::new();
    for path in &o.preload {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|_| meta.is_file())
            .ok_or_else(|| {
                ImageError::Input(format!(
                    "--preload {}: not a file (an OCI archive from `skopeo copy ... oci-archive:FILE`)",
                    path.display()
                ))
            })?;
        if name.contains(['"', '*', ':', '<', '>', '?', '\\', '|']) {
            return Err(ImageError::Input(format!(
                "--preload {}: FAT file names cannot hold any of \" * : < > ? \\ |; rename the archive",
                path.display()
            )));
        }
        if preload
            .iter()
            .any(|(n, _, _): &(String, _, _)| n.eq_ignore_ascii_case(&name))
        {
            return Err(ImageError::Input(format!(
                "--preload: two archives are named {name}; rename one"
            )));
        }
        preload.push((name, path.clone(), meta.len()));
    }
    let agent_yaml = firstboot::agent_yaml(&AgentYaml {
        broker: o.controller.clone(),
        token: token.to_string(),
        ca: ca_pem.as_ref().map(|_| "/etc/punnet/ca.pem".to_string()),
        labels,
        allow_plaintext: o.allow_plaintext,
    });
    Ok(Inputs {
        agent_yaml,
        ca_pem,
        board: Board {
            boot_mount: String::new(),
            hostname_prefix: o.hostname_prefix.clone(),
            ssh_key,
            wifi,
        },
        wifi_country,
        preload,
    })
}

/// The broker URL as the agent reads it (`mqtts://`, `ssl://`, `mqtt://`, `tcp://`
/// or a bare `host[:port]`).
pub fn check_controller(url: &str, allow_plaintext: bool) -> Result<(), ImageError> {
    let bad = |reason: &str| ImageError::Controller {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let Some((tls, _)) = punnet_api::tls::mqtt_scheme(url) else {
        return Err(bad("boards connect to the controller's MQTT broker: use mqtts://HOST[:8883] (not the REST API's https:// URL)"));
    };
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .map_or(rest, |(h, _)| h);
    if host.is_empty() || rest.contains('/') {
        return Err(bad("expected mqtts://HOST[:PORT]"));
    }
    if !tls && !allow_plaintext {
        return Err(bad("mqtt:// is MQTT without TLS: boards would send their token in the clear; use mqtts:// (and --ca), or add --allow-plaintext on a trusted network"));
    }
    Ok(())
}

/// A hostname prefix: the serial number follows, so the whole stays a valid hostname.
pub fn check_prefix(prefix: &str) -> Result<(), ImageError> {
    let ok = prefix.len() <= 40
        && !prefix.starts_with('-')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ImageError::Input(format!(
            "--hostname-prefix {prefix:?}: up to 40 lowercase letters, digits and '-', not starting with '-'"
        )))
    }
}

fn read_ssh_key(path: &Path) -> Result<String, ImageError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    if text.contains("PRIVATE KEY") {
        return Err(ImageError::Input(format!(
            "--ssh-key {}: this is a private key; give the public one ({}.pub)",
            path.display(),
            path.display()
        )));
    }
    let key = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let known = ["ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-"];
    if !known.iter().any(|p| key.starts_with(p)) {
        return Err(ImageError::Input(format!(
            "--ssh-key {}: not an OpenSSH public key (ssh-ed25519 AAAA... as in ~/.ssh/id_ed25519.pub)",
            path.display()
        )));
    }
    Ok(key.to_string())
}

/// Where agent binaries are looked for when `--dist` is not given: `./dist`, and a
/// `dist` beside the directories this program lives in (a checkout's
/// `target/release/punnet` finds the checkout's `dist`).
pub fn default_dist_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("dist")];
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            let d = dir.join("dist");
            if d.is_dir() && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    dirs
}

fn elf_machine_of(path: &Path) -> Result<arch::ElfMachine, ImageError> {
    let mut header = [0u8; 20];
    let mut f = File::open(path).map_err(io_err(path))?;
    f.read_exact(&mut header).ok();
    arch::elf_machine(&header)
        .ok_or_else(|| ImageError::Input(format!("{}: not an ELF program", path.display())))
}

/// The agent binaries for `arch`: `--agent`, else from the dist directories.
fn pick_agents(o: &BuildOptions, arch: ImageArch) -> Result<Vec<(Flavour, PathBuf)>, ImageError> {
    if let Some(path) = &o.agent {
        let machine = elf_machine_of(path)?;
        let flavour = match (arch, machine) {
            (ImageArch::Arm64, arch::ElfMachine::Aarch64) => Flavour::Arm64,
            (ImageArch::Armhf { .. }, arch::ElfMachine::Arm32) => Flavour::Arm32,
            _ => {
                return Err(ImageError::AgentArch {
                    path: path.clone(),
                    found: machine.to_string(),
                    arch,
                })
            }
        };
        return Ok(vec![(flavour, path.clone())]);
    }
    let dirs = if o.dist.is_empty() {
        default_dist_dirs()
    } else {
        o.dist.clone()
    };
    let find = |triple: &str| {
        dirs.iter()
            .map(|d| d.join(triple).join("punnet-agent"))
            .find(|p| p.is_file())
    };
    let chosen = arch::select(arch, find).map_err(|missing| ImageError::NoAgent {
        arch,
        wanted: missing
            .triples
            .iter()
            .map(|t| format!("{t}/punnet-agent"))
            .collect::<Vec<_>>()
            .join(" or "),
        looked: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        triple: missing.triples[0],
    })?;
    // A binary in the wrong directory would only fail on the board.
    for (flavour, path) in &chosen {
        let machine = elf_machine_of(path)?;
        if !arch::fits(*flavour, machine) {
            return Err(ImageError::AgentArch {
                path: path.clone(),
                found: machine.to_string(),
                arch,
            });
        }
    }
    Ok(chosen)
}

/// Builds the image; on failure the half-made output is removed.
pub fn build(o: &BuildOptions) -> Result<Built, ImageError> {
    let mut inputs = check_inputs(o)?;
    let base = std::fs::canonicalize(&o.base).map_err(io_err(&o.base))?;
    if let Ok(out) = std::fs::canonicalize(&o.out) {
        if out == base {
            return Err(ImageError::SameFile(o.out.clone()));
        }
    }
    let (image_bytes, decompressed) = disk::copy_base(&base, &o.out).map_err(|source| {
        let _ = std::fs::remove_file(&o.out);
        ImageError::Io {
            path: o.base.clone(),
            source,
        }
    })?;
    match edit(o, &mut inputs) {
        Ok(mut built) => {
            built.decompressed = decompressed;
            built.image_bytes = image_bytes;
            Ok(built)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&o.out);
            Err(e)
        }
    }
}

/// Finds the Raspberry Pi boot partition: the first FAT partition holding config.txt,
/// cmdline.txt and a kernel this tool can tell the architecture from.
fn find_boot(
    path: &Path,
    file: &File,
) -> Result<(Partition, disk::Fs, Vec<String>, String, ImageArch), ImageError> {
    let not_pi = |reason: String| ImageError::NotRaspberryPi {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = file.try_clone().map_err(io_err(path))?;
    let parts = disk::partitions(&mut f).map_err(not_pi)?;
    let mut seen = Vec::new();
    for p in parts.iter().filter(|p| disk::is_fat_type(p.kind)) {
        let Ok(fs) = disk::open_fat(file, p) else {
            seen.push(format!(
                "partition {} is not a readable FAT file system",
                p.number
            ));
            continue;
        };
        let root = fs.root_dir();
        let files = disk::list(&root).map_err(io_err(path))?;
        let has = |n: &str| files.iter().any(|f| f.eq_ignore_ascii_case(n));
        if !has("config.txt") || !has("cmdline.txt") {
            seen.push(format!(
                "partition {} (FAT) has no config.txt and cmdline.txt",
                p.number
            ));
            continue;
        }
        let config = disk::read_file(&root, "config.txt")
            .map_err(io_err(path))?
            .unwrap_or_default();
        let config = String::from_utf8_lossy(&config).into_owned();
        let Some(arch) = arch::detect(&files, &config) else {
            seen.push(format!("partition {} (FAT) has no Raspberry Pi kernel (kernel.img, kernel7.img, kernel7l.img, kernel8.img, kernel_2712.img)", p.number));
            continue;
        };
        drop(root);
        return Ok((*p, fs, files, config, arch));
    }
    if seen.is_empty() {
        let kinds: Vec<String> = parts
            .iter()
            .map(|p| format!("{} (type {:#04x})", p.number, p.kind))
            .collect();
        seen.push(if kinds.is_empty() {
            "its partition table is empty".to_string()
        } else {
            format!("no FAT partition among partitions {}", kinds.join(", "))
        });
    }
    Err(not_pi(format!(
        "no Raspberry Pi boot partition: {}",
        seen.join("; ")
    )))
}

/// A size for people: `39.4 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} bytes")
}

/// Rounded up to whole clusters.
fn on_disk(len: u64, cluster: u64) -> u64 {
    len.div_ceil(cluster).max(1) * cluster
}

fn edit(o: &BuildOptions, inputs: &mut Inputs) -> Result<Built, ImageError> {
    let path = &o.out;
    let file = disk::open_rw(path).map_err(io_err(path))?;
    let (partition, fs, files, config, arch) = find_boot(path, &file)?;
    let fat = |source| ImageError::Fat {
        path: path.clone(),
        partition: partition.number,
        source,
    };
    let agents = pick_agents(o, arch)?;
    let mechanism = choose_mechanism(o.mechanism, &files);
    let mount = boot_mount(&config, mechanism);
    inputs.board.boot_mount = mount.to_string();
    let board = &inputs.board;

    // The text files, then everything by size, to check the space first.
    let mut texts: Vec<(&str, String)> = vec![
        (firstboot::SETUP, firstboot::setup_sh(board)),
        (firstboot::AGENT_CONFIG, inputs.agent_yaml.clone()),
        (firstboot::UNIT, firstboot::AGENT_UNIT.to_string()),
    ];
    let mut root_texts: Vec<(&str, String)> = match mechanism {
        Mechanism::Firstrun => vec![("firstrun.sh", firstboot::firstrun_sh(board))],
        Mechanism::CloudInit => {
            let mut v = vec![
                ("user-data", firstboot::user_data(board)),
                ("meta-data", firstboot::meta_data(&o.instance)),
            ];
            if let Some(w) = &board.wifi {
                v.push(("network-config", firstboot::network_config(w)));
            }
            v
        }
    };
    if let Some(pem) = &inputs.ca_pem {
        texts.push((firstboot::CA, String::from_utf8_lossy(pem).into_owned()));
    }
    let mut agent_sizes = Vec::new();
    for (flavour, p) in &agents {
        let len = std::fs::metadata(p).map_err(io_err(p))?.len();
        agent_sizes.push((*flavour, p.clone(), len));
    }

    let root = fs.root_dir();
    // A second build over a built image replaces the payload rather than adding to it.
    for name in files.iter().filter(|f| firstboot::is_payload(f)) {
        root.remove(name).map_err(fat)?;
    }
    let stats = fs.stats().map_err(fat)?;
    let cluster = u64::from(stats.cluster_size());
    let free = u64::from(stats.free_clusters()) * cluster;
    let agents_len: u64 = agent_sizes.iter().map(|a| on_disk(a.2, cluster)).sum();
    let images_len: u64 = inputs.preload.iter().map(|p| on_disk(p.2, cluster)).sum();
    let texts_len: u64 = texts
        .iter()
        .chain(root_texts.iter())
        .map(|t| on_disk(t.1.len() as u64, cluster))
        .sum::<u64>()
        // Directory entries (long names) may need another cluster of the root directory.
        + cluster;
    let needed = agents_len + images_len + texts_len;
    if needed > free {
        return Err(ImageError::TooSmall {
            path: path.clone(),
            partition: partition.number,
            size: partition.len,
            free,
            needed,
            detail: format!(
                "agent {}, preloaded images {}, setup files {}",
                human(agents_len),
                human(images_len),
                human(texts_len)
            ),
        });
    }

    for (name, text) in &texts {
        disk::write_file(&root, name, &mut text.as_bytes()).map_err(fat)?;
    }
    for (flavour, p, _) in &agent_sizes {
        let mut src = File::open(p).map_err(io_err(p))?;
        disk::write_file(&root, &firstboot::agent_file(flavour.name()), &mut src).map_err(fat)?;
    }
    let mut preloaded = 0;
    for (name, p, _) in &inputs.preload {
        let mut src = File::open(p).map_err(io_err(p))?;
        preloaded +=
            disk::write_file(&root, &firstboot::preload_file(name), &mut src).map_err(fat)?;
    }
    if mechanism == Mechanism::CloudInit {
        // A firstrun.sh of an earlier build or of Imager would otherwise lie around
        // with the token's setup gone from the command line.
        match root.remove("firstrun.sh") {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fat(e)),
            _ => {}
        }
    }
    for (name, text) in root_texts.drain(..) {
        disk::write_file(&root, name, &mut text.as_bytes()).map_err(fat)?;
    }
    let old = disk::read_file(&root, "cmdline.txt")
        .map_err(fat)?
        .unwrap_or_default();
    let first_run_script = format!("{mount}/firstrun.sh");
    let line = cmdline::edit(
        &String::from_utf8_lossy(&old),
        &cmdline::Edit {
            first_run: (mechanism == Mechanism::Firstrun).then_some(first_run_script.as_str()),
            wifi_country: inputs.wifi_country.as_deref(),
        },
    );
    disk::write_file(&root, "cmdline.txt", &mut line.as_bytes()).map_err(fat)?;
    let stats = fs.stats().map_err(fat)?;
    let free_after = u64::from(stats.free_clusters()) * u64::from(stats.cluster_size());
    drop(root);
    fs.unmount().map_err(fat)?;
    file.sync_all().map_err(io_err(path))?;
    Ok(Built {
        arch,
        partition,
        agents: agent_sizes,
        mechanism,
        boot_mount: mount,
        preloaded,
        payload: needed,
        free_after,
        decompressed: false,
        image_bytes: 0,
        cmdline: line.trim_end().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(41_269_760), "39.4 MiB");
        assert_eq!(human(5 << 30), "5.0 GiB");
        assert_eq!(human(100), "100 bytes");
    }

    #[test]
    fn mechanism_follows_the_image() {
        let bookworm = vec!["config.txt".to_string(), "cmdline.txt".to_string()];
        let trixie = vec!["config.txt".to_string(), "user-data".to_string()];
        assert_eq!(choose_mechanism(None, &bookworm), Mechanism::Firstrun);
        assert_eq!(choose_mechanism(None, &trixie), Mechanism::CloudInit);
        assert_eq!(
            choose_mechanism(Some(Mechanism::Firstrun), &trixie),
            Mechanism::Firstrun
        );
        assert_eq!(
            boot_mount("# /boot/overlays/README\n", Mechanism::Firstrun),
            "/boot"
        );
        assert_eq!(
            boot_mount("# /boot/firmware/overlays/README\n", Mechanism::Firstrun),
            "/boot/firmware"
        );
        assert_eq!(boot_mount("", Mechanism::Firstrun), "/boot/firmware");
    }

    #[test]
    fn controller_urls_and_prefixes() {
        assert!(check_controller("mqtts://fleet.lan:8883", false).is_ok());
        assert!(check_controller("fleet.lan", false).is_ok());
        let e = check_controller("https://fleet.lan:6443", false).unwrap_err();
        assert!(e.to_string().contains("mqtts://HOST"), "{e}");
        assert!(check_controller("mqtt://fleet.lan:1883", false).is_err());
        assert!(check_controller("mqtt://fleet.lan:1883", true).is_ok());
        assert!(check_controller("mqtts://", false).is_err());
        assert!(check_prefix("pi-").is_ok() && check_prefix("").is_ok());
        assert!(check_prefix("Pi_").is_err() && check_prefix("-x").is_err());
    }

    #[test]
    fn missing_token_is_refused_before_anything_is_copied() {
        let o = BuildOptions {
            base: "/nonexistent/base.img".into(),
            out: "/nonexistent/out.img".into(),
            controller: "mqtts://fleet.lan".into(),
            ..Default::default()
        };
        let e = build(&o).unwrap_err().to_string();
        assert!(e.contains("--token is required"), "{e}");
    }
}
