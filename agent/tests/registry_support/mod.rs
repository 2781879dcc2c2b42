//! For the registry tests: Debian's `docker-registry` on a free loopback port (optionally
//! with htpasswd auth), a multi-platform busybox image written as OCI JSON and pushed
//! with oci-client, and a TCP proxy that cuts one blob download halfway.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it unpacks image layers with their owners)"
    );
}

pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768+), like the other tests' helpers.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let seed = std::process::id().wrapping_mul(7919) as usize;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A `docker-registry serve` with its own config and storage, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub credentials: Option<(String, String)>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_inner(None, false)
    }

    /// Serving HTTPS with a self-signed certificate (made with `openssl`) for 127.0.0.1.
    pub fn start_tls() -> Registry {
        Registry::start_inner(None, true)
    }

    /// With htpasswd (bcrypt, from `htpasswd -B`) auth for `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::start_inner(Some((user.to_string(), password.to_string())), false)
    }

    fn start_inner(credentials: Option<(String, String)>, tls: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some((user, password)) = &credentials {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd is installed (apt-get install apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: punnet-test\n    path: {}\n",
                file.display()
            ));
        }
        if tls {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            let status = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null())
                .status()
                .expect("openssl is installed");
            assert!(status.success(), "openssl req failed");
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed (apt-get install docker-registry)");
        let registry = Registry {
            child,
            port,
            dir,
            credentials,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = conn.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut head = [0u8; 12];
                if conn.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            let log = std::fs::read_to_string(self.dir.path().join("registry.log"));
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {}: {log:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps the bytes of blob `digest`.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes `image`'s blobs and manifests and tags its index (or, with one platform,
    /// its manifest) as `repo:tag`.
    pub async fn push(&self, repo: &str, tag: &str, image: &TestImage) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = oci_client::Client::try_from(ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        })
        .unwrap();
        let auth = match &self.credentials {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        let at = |reference: &str| {
            oci_client::Reference::with_tag(self.host(), repo.to_string(), reference.to_string())
        };
        let by_digest = |d: &str| {
            oci_client::Reference::with_digest(self.host(), repo.to_string(), d.to_string())
        };
        client
            .auth(&at(tag), &auth, RegistryOperation::Push)
            .await
            .unwrap();
        for (d, bytes) in &image.blobs {
            client.push_blob(&at(tag), bytes.clone(), d).await.unwrap();
        }
        let manifest_type =
            http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
        for m in &image.manifests {
            let target = if image.index.is_none() {
                at(tag)
            } else {
                by_digest(&m.digest)
            };
            client
                .push_manifest_raw(&target, m.bytes.clone(), manifest_type.clone())
                .await
                .unwrap();
        }
        if let Some((_, index)) = &image.index {
            client
                .push_manifest_raw(
                    &at(tag),
                    index.clone(),
                    http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
                )
                .await
                .unwrap();
        }
    }
}

/// One platform's manifest in a [`TestImage`].
pub struct PlatformManifest {
    pub platform: (String, Option<String>),
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// A busybox image for several platforms: a shared busybox layer, a shared 2 MiB
/// incompressible layer (so a download can be cut halfway), and a small layer per
/// platform whose `/etc/punnet-variant` names it.
pub struct TestImage {
    pub blobs: Vec<(String, Vec<u8>)>,
    pub manifests: Vec<PlatformManifest>,
    /// The index's digest and bytes; `None` for a single-platform image.
    pub index: Option<(String, Vec<u8>)>,
    pub data_layer: String,
}

pub const DATA_LAYER_BYTES: usize = 2 << 20;

fn tar_gz(files: &[(&str, Vec<u8>, u32)], symlinks: &[(&str, &str)]) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    let all: Vec<&str> = files
        .iter()
        .map(|f| f.0)
        .chain(symlinks.iter().map(|s| s.0))
        .collect();
    for path in &all {
        let mut parent = String::new();
        for comp in Path::new(path).parent().unwrap().components() {
            parent.push_str(&comp.as_os_str().to_string_lossy());
            parent.push('/');
            if !dirs.contains(&parent) {
                dirs.push(parent.clone());
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(1);
                h.set_uid(0);
                h.set_gid(0);
                b.append_data(&mut h, &parent, std::io::empty()).unwrap();
            }
        }
    }
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    for (path, target) in symlinks {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(1);
        h.set_uid(0);
        h.set_gid(0);
        b.append_link(&mut h, path, target).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let diff_id = digest(&tar);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Deterministic noise that gzip cannot shrink.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

impl TestImage {
    /// `platforms` as (architecture, variant); more than one makes an index.
    pub fn build(platforms: &[(&str, Option<&str>)]) -> TestImage {
        let busybox = std::fs::read("/bin/busybox")
            .expect("a static busybox at /bin/busybox (apt-get install busybox-static)");
        let (base, base_diff) = tar_gz(
            &[
                ("bin/busybox", busybox, 0o755),
                (
                    "etc/passwd",
                    b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
                    0o644,
                ),
            ],
            &[("bin/sh", "busybox"), ("bin/cat", "busybox")],
        );
        let (data, data_diff) = tar_gz(&[("data/noise", noise(DATA_LAYER_BYTES), 0o644)], &[]);
        let mut blobs = vec![(digest(&base), base.clone()), (digest(&data), data.clone())];
        let layer_desc = |bytes: &[u8]| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest(bytes),
                "size": bytes.len(),
            })
        };
        let mut manifests = Vec::new();
        for (arch, variant) in platforms {
            let name = match variant {
                Some(v) => format!("linux/{arch}/{v}"),
                None => format!("linux/{arch}"),
            };
            let (marker, marker_diff) = tar_gz(
                &[(
                    "etc/punnet-variant",
                    format!("{name}\n").into_bytes(),
                    0o644,
                )],
                &[],
            );
            let mut config = serde_json::json!({
                "architecture": arch,
                "os": "linux",
                "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [base_diff, data_diff, marker_diff]},
            });
            if let Some(v) = variant {
                config["variant"] = serde_json::json!(v);
            }
            let config = serde_json::to_vec(&config).unwrap();
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest(&config),
                    "size": config.len(),
                },
                "layers": [layer_desc(&base), layer_desc(&data), layer_desc(&marker)],
            }))
            .unwrap();
            blobs.push((digest(&marker), marker));
            blobs.push((digest(&config), config));
            manifests.push(PlatformManifest {
                platform: (arch.to_string(), variant.map(str::to_string)),
                digest: digest(&manifest),
                bytes: manifest,
            });
        }
        let index = (platforms.len() > 1).then(|| {
            let entries: Vec<serde_json::Value> = manifests
                .iter()
                .map(|m| {
                    let mut platform =
                        serde_json::json!({"architecture": m.platform.0, "os": "linux"});
                    if let Some(v) = &m.platform.1 {
                        platform["variant"] = serde_json::json!(v);
                    }
                    serde_json::json!({
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": m.digest,
                        "size": m.bytes.len(),
                        "platform": platform,
                    })
                })
                .collect();
            let bytes = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": entries,
            }))
            .unwrap();
            (digest(&bytes), bytes)
        });
        TestImage {
            blobs,
            manifests,
            index,
            data_layer: digest(&data),
        }
    }
}

/// A loopback TCP proxy to a registry that cuts the first response to a GET of one
/// blob after `cut_after` bytes, and records (lowercased) the Range headers sent for it.
pub struct CuttingProxy {
    pub port: u16,
    pub cuts: Arc<AtomicUsize>,
    pub ranges: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CuttingProxy {
    pub async fn start(upstream: u16, blob: &str, cut_after: usize) -> CuttingProxy {
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let cuts = Arc::new(AtomicUsize::new(0));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let needle = format!("/blobs/{blob}");
        let (task_cuts, task_ranges) = (cuts.clone(), ranges.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                tokio::spawn(relay(
                    client,
                    server,
                    needle.clone(),
                    cut_after,
                    task_cuts.clone(),
                    task_ranges.clone(),
                ));
            }
        });
        CuttingProxy {
            port,
            cuts,
            ranges,
            task,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    needle: String,
    cut_after: usize,
    cuts: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<String>>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let armed = Arc::new(AtomicBool::new(false));
    let upstream_armed = armed.clone();
    let upstream_cuts = cuts.clone();
    let requests = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.contains(&needle) {
                for line in text.lines() {
                    if line.to_ascii_lowercase().starts_with("range:") {
                        ranges
                            .lock()
                            .unwrap()
                            .push(line.trim().to_ascii_lowercase());
                    }
                }
                if upstream_cuts.load(Ordering::SeqCst) == 0 {
                    upstream_armed.store(true, Ordering::SeqCst);
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut relayed = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if armed.load(Ordering::SeqCst) {
            if relayed + n >= cut_after {
                let _ = client_write.write_all(&buf[..cut_after - relayed]).await;
                cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            relayed += n;
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    requests.abort();
}
