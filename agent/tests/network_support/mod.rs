//! Helpers for network_root.rs: a lab per test (its own bridge, Pod CIDR, CNI network
//! name and data dir, so tests run in parallel and never touch a real punnet0), an
//! "outside" host made with `ip netns` on a veth, code run inside a namespace from a
//! thread of its own, iptables and IPAM snapshots, and cleanup that runs when a test
//! fails too.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use punnet_agent::network::leftovers;
use punnet_agent::network::{HostPort, NetworkConfig, PodNetSpec, PodNetwork};

/// Long enough for a slow board; only a bound against hanging, never a measurement.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Lab {
    /// Distinct per test: picks the subnets and names.
    pub n: u8,
    pub tmp: tempfile::TempDir,
    pub cfg: NetworkConfig,
    pub outside: Option<Outside>,
}

/// A second "host" on the LAN: a namespace joined to the root namespace by a veth.
pub struct Outside {
    pub name: String,
    pub path: PathBuf,
    pub host_veth: String,
    /// The node's address on that link.
    pub host_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
}

impl Lab {
    pub fn new(n: u8) -> Lab {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root");
        let pid = std::process::id() % 100_000;
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = NetworkConfig::new(&tmp.path().join("data"));
        cfg.network_name = format!("punnet-test{n}-{pid}");
        cfg.bridge = format!("ptb{n}-{pid}");
        cfg.netns_dir = tmp.path().join("netns");
        cfg.pod_cidr = Some(format!("10.123.{n}.0/24"));
        Lab {
            n,
            tmp,
            cfg,
            outside: None,
        }
    }

    pub fn network(&self) -> PodNetwork {
        PodNetwork::new(self.cfg.clone()).unwrap()
    }

    pub fn pod(&self, name: &str, host_ports: Vec<HostPort>) -> PodNetSpec {
        PodNetSpec {
            uid: format!("{name}-{}-{}", self.n, std::process::id()),
            namespace: "default".into(),
            name: name.into(),
            host_ports,
        }
    }

    /// Makes the outside host (10.124.<n>.2, the node being 10.124.<n>.1 on that link).
    pub fn add_outside(&mut self) -> &Outside {
        let pid = std::process::id() % 100_000;
        let name = format!("punnet-test-out{}-{pid}", self.n);
        let host_veth = format!("pto{}-{pid}", self.n);
        let host_ip = Ipv4Addr::new(10, 124, self.n, 1);
        let ip = Ipv4Addr::new(10, 124, self.n, 2);
        run("ip", &["netns", "add", &name]);
        // Registered before the rest, so Drop removes it whatever fails next.
        self.outside = Some(Outside {
            path: PathBuf::from("/run/netns").join(&name),
            name: name.clone(),
            host_veth: host_veth.clone(),
            host_ip,
            ip,
        });
        run(
            "ip",
            &[
                "link", "add", &host_veth, "type", "veth", "peer", "name", "veth0", "netns", &name,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/24"), "dev", &host_veth],
        );
        run("ip", &["link", "set", &host_veth, "up"]);
        run(
            "ip",
            &[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "veth0",
            ],
        );
        run("ip", &["-n", &name, "link", "set", "veth0", "up"]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        self.outside.as_ref().unwrap()
    }

    /// The iptables rules (all tables) that belong to this lab's CNI network.
    pub fn rules(&self) -> Vec<String> {
        let needle = format!("\\\"{}\\\"", self.cfg.network_name);
        iptables_save()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Per-Pod chains the given rules jump to (not portmap's shared CNI-HOSTPORT-*).
    pub fn chains_of(rules: &[String]) -> Vec<String> {
        leftovers::chains_of(rules)
    }

    /// Which of `chains` still exist.
    pub fn existing_chains(chains: &[String]) -> Vec<String> {
        let saved = iptables_save();
        chains
            .iter()
            .filter(|c| saved.lines().any(|l| l.starts_with(&format!(":{c} "))))
            .cloned()
            .collect()
    }

    /// host-local's reserved addresses for this lab's network.
    pub fn reservations(&self) -> Vec<String> {
        let dir = self.cfg.ipam_dir.join(&self.cfg.network_name);
        let Ok(entries) = fs::read_dir(dir) else {
            return vec![];
        };
        let mut ips: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect();
        ips.sort();
        ips
    }

    fn cleanup(&mut self) {
        // First the code under test, from what it saved; then by hand whatever is left.
        let cfg = self.cfg.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            if let Ok(net) = PodNetwork::new(cfg) {
                for uid in net.list() {
                    let _ = rt.block_on(net.teardown(&uid));
                }
            }
        })
        .join();
        if let Ok(entries) = fs::read_dir(&self.cfg.netns_dir) {
            for e in entries.filter_map(Result::ok) {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = fs::remove_file(e.path());
            }
        }
        let rules = self.rules();
        if !rules.is_empty() {
            remove_rules(&rules);
        }
        let _ = quiet("ip", &["link", "del", &self.cfg.bridge]);
        if let Some(o) = &self.outside {
            let _ = quiet("ip", &["link", "del", &o.host_veth]);
            let _ = quiet("ip", &["netns", "del", &o.name]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Deletes leftover rules and their per-Pod chains in one iptables-restore batch, which
/// reads the quoting iptables-save writes.
fn remove_rules(rules: &[String]) {
    let script = leftovers::restore_script(rules, &Lab::chains_of(rules));
    if let Ok(mut child) = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .spawn()
    {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let _ = child.wait();
    }
}

pub fn iptables_save() -> String {
    let out = Command::new("iptables-save").output().unwrap();
    assert!(out.status.success(), "iptables-save: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quiet(cmd: &str, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// Runs `f` on a new thread inside the network namespace at `path`; sockets made there
/// stay in that namespace wherever they are used afterwards.
pub fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// Listens on TCP `listen` inside `server_ns`, connects from `client_ns` to `target`,
/// exchanges a line and returns the client's address as the server saw it.
pub fn tcp_exchange(
    server_ns: &Path,
    listen: SocketAddr,
    client_ns: &Path,
    target: SocketAddr,
) -> SocketAddr {
    let listener = in_netns(server_ns, move || TcpListener::bind(listen).unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        conn.write_all(b"pong").unwrap();
        peer
    });
    let reply = in_netns(client_ns, move || {
        let mut s = TcpStream::connect_timeout(&target, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {target}: {e}"));
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&reply, b"pong");
    server.join().unwrap()
}

/// Sends UDP datagrams from `client_ns` to `target` until the socket bound on `listen`
/// in `server_ns` gets one; returns the sender's address as the server saw it.
pub fn udp_exchange(
    server_ns: &Path,
    listen: SocketAddr,
    client_ns: &Path,
    target: SocketAddr,
) -> SocketAddr {
    let server = in_netns(server_ns, move || UdpSocket::bind(listen).unwrap());
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let client = in_netns(client_ns, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap()
    });
    let mut buf = [0u8; 16];
    for _ in 0..40 {
        client.send_to(b"ping", target).unwrap();
        if let Ok((n, peer)) = server.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"ping");
            return peer;
        }
    }
    panic!("no UDP datagram from {target} reached {listen}");
}
