//! `PodNetwork` with the real CNI plugins (Debian's containernetworking-plugins) and real
//! namespaces, bridges and iptables rules. Needs root; panics rather than skipping when
//! not root. Each test has its own bridge, Pod CIDR, CNI network name and data dir
//! (network_support::Lab), so they run in parallel and never touch a real punnet0.

mod network_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use network_support::{tcp_exchange, udp_exchange, Lab};
use punnet_agent::network::{HostPort, NetworkError, PodNetSpec, PodNetwork, Protocol};

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn any(port: u16) -> SocketAddr {
    sock(Ipv4Addr::UNSPECIFIED, port)
}

/// A host port no other test (or earlier run) maps: below the ephemeral range, spread by
/// test and process.
fn host_port(n: u8, k: u16) -> u16 {
    20000 + ((std::process::id() % 500) as u16) * 20 + u16::from(n) + k * 10
}

/// hostPorts of lab `n` are published only on the node's address towards its outside
/// host (10.124.<n>.1), so the DNAT rules cannot catch other programs' connections to
/// the same port on 127.0.0.1 while the tests run.
fn lab_host_ip(n: u8) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::new(10, 124, n, 1))
}

#[tokio::test]
async fn two_pods_get_distinct_addresses_and_reach_each_other() {
    let lab = Lab::new(1);
    let net = lab.network();
    let a = net.setup(&lab.pod("a", vec![])).await.unwrap();
    let b = net.setup(&lab.pod("b", vec![])).await.unwrap();

    let cidr: ipnet::Ipv4Net = "10.123.1.0/24".parse().unwrap();
    assert_ne!(a.ip, b.ip);
    for s in [&a, &b] {
        assert!(cidr.contains(&s.ip), "{} not in {cidr}", s.ip);
        assert_eq!(s.prefix_len, 24);
        assert_eq!(s.gateway, Ipv4Addr::new(10, 123, 1, 1));
        assert_eq!(s.interface, "eth0");
        assert!(s.new_namespace);
        assert!(s.netns_path.starts_with(&lab.cfg.netns_dir));
    }
    assert_ne!(a.ip, a.gateway);

    // Pod to Pod on the bridge: no NAT, the server sees the other Pod's own address.
    let peer = tcp_exchange(&b.netns_path, any(8080), &a.netns_path, sock(b.ip, 8080));
    assert_eq!(peer.ip(), a.ip);
    let peer = tcp_exchange(&a.netns_path, any(9090), &b.netns_path, sock(a.ip, 9090));
    assert_eq!(peer.ip(), b.ip);
    // loopback is up inside the Pod.
    let peer = tcp_exchange(
        &a.netns_path,
        any(7070),
        &a.netns_path,
        sock(Ipv4Addr::LOCALHOST, 7070),
    );
    assert_eq!(peer.ip(), Ipv4Addr::LOCALHOST);
}

#[tokio::test]
async fn pods_set_up_at_once_share_the_bridge_with_distinct_addresses() {
    let lab = Lab::new(11);
    let net = lab.network();
    let specs: Vec<_> = (0..5).map(|i| lab.pod(&format!("p{i}"), vec![])).collect();
    let results = futures_util::future::join_all(specs.iter().map(|s| net.setup(s))).await;
    let mut ips: Vec<Ipv4Addr> = results.into_iter().map(|r| r.unwrap().ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 5);
    assert_eq!(lab.reservations().len(), 5);
    let results = futures_util::future::join_all(specs.iter().map(|s| net.teardown(&s.uid))).await;
    for r in results {
        r.unwrap();
    }
    assert_eq!(lab.reservations(), Vec::<String>::new());
    assert_eq!(lab.rules(), Vec::<String>::new());
}

#[tokio::test]
async fn a_pod_reaches_the_outside_through_nat() {
    let mut lab = Lab::new(2);
    let net = lab.network();
    let pod = net.setup(&lab.pod("client", vec![])).await.unwrap();
    let (outside_path, outside_ip, host_ip) = {
        let o = lab.add_outside();
        (o.path.clone(), o.ip, o.host_ip)
    };
    let peer = tcp_exchange(
        &outside_path,
        any(8000),
        &pod.netns_path,
        sock(outside_ip, 8000),
    );
    // Masqueraded: the outside host sees the node's address on its link, not the Pod's.
    assert_eq!(peer.ip(), host_ip);
}

#[tokio::test]
async fn a_host_port_is_reachable_from_another_namespace_through_the_nodes_address() {
    let mut lab = Lab::new(3);
    let net = lab.network();
    let (tcp_port, udp_port) = (host_port(3, 0), host_port(3, 1));
    let spec = lab.pod(
        "server",
        vec![
            HostPort {
                host_port: tcp_port,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: lab_host_ip(3),
            },
            HostPort {
                host_port: udp_port,
                container_port: 53,
                protocol: Protocol::Udp,
                host_ip: lab_host_ip(3),
            },
        ],
    );
    let pod = net.setup(&spec).await.unwrap();
    let (outside_path, outside_ip, host_ip) = {
        let o = lab.add_outside();
        (o.path.clone(), o.ip, o.host_ip)
    };
    let peer = tcp_exchange(
        &pod.netns_path,
        any(80),
        &outside_path,
        sock(host_ip, tcp_port),
    );
    assert_eq!(
        peer.ip(),
        outside_ip,
        "DNAT only: the Pod sees the real client"
    );
    let peer = udp_exchange(
        &pod.netns_path,
        any(53),
        &outside_path,
        sock(host_ip, udp_port),
    );
    assert_eq!(peer.ip(), outside_ip);
}

/// What a set-up Pod leaves on the node, to compare before/after teardown.
struct Footprint {
    rules: Vec<String>,
    chains: Vec<String>,
}

fn assert_all_released(lab: &Lab, net: &PodNetwork, uid: &str, netns: &Path, fp: &Footprint) {
    assert!(!netns.exists(), "namespace {} still there", netns.display());
    assert_eq!(lab.reservations(), Vec::<String>::new(), "IP not released");
    assert_eq!(lab.rules(), Vec::<String>::new(), "iptables rules left");
    assert_eq!(
        Lab::existing_chains(&fp.chains),
        Vec::<String>::new(),
        "per-Pod chains left (had rules {:#?})",
        fp.rules
    );
    assert!(!net.list().contains(&uid.to_string()));
    assert!(!lab.cfg.state_dir.join(format!("{uid}.json")).exists());
}

fn web(lab: &Lab) -> PodNetSpec {
    lab.pod(
        "web",
        vec![HostPort {
            host_port: host_port(lab.n, 0),
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: lab_host_ip(lab.n),
        }],
    )
}

async fn set_up_with_a_host_port(lab: &Lab, net: &PodNetwork) -> (String, Footprint) {
    assert_eq!(lab.rules(), Vec::<String>::new());
    let spec = web(lab);
    let status = net.setup(&spec).await.unwrap();
    assert!(status.netns_path.exists());
    assert_eq!(lab.reservations(), vec![status.ip.to_string()]);
    let rules = lab.rules();
    let chains = Lab::chains_of(&rules);
    // bridge's NAT chain and portmap's DNAT chain, both named for this Pod.
    assert!(chains.len() >= 2, "expected per-Pod chains in {rules:#?}");
    assert!(rules.iter().any(|r| r.contains("MASQUERADE")), "{rules:#?}");
    assert!(rules.iter().any(|r| r.contains("DNAT")), "{rules:#?}");
    assert_eq!(net.list(), vec![spec.uid.clone()]);
    (spec.uid, Footprint { rules, chains })
}

#[tokio::test]
async fn teardown_releases_the_address_the_rules_and_the_namespace() {
    let lab = Lab::new(4);
    let net = lab.network();
    let (uid, fp) = set_up_with_a_host_port(&lab, &net).await;
    let netns = net.netns_path(&uid);
    net.teardown(&uid).await.unwrap();
    assert_all_released(&lab, &net, &uid, &netns, &fp);
    // Again: nothing left is fine.
    net.teardown(&uid).await.unwrap();
}

#[tokio::test]
async fn teardown_works_after_an_agent_crash_from_saved_state_alone() {
    let lab = Lab::new(5);
    let (uid, fp, ip) = {
        let net = lab.network();
        let (uid, fp) = set_up_with_a_host_port(&lab, &net).await;
        let ip = net.saved_status(&uid).unwrap().ip;
        (uid, fp, ip)
        // The agent "crashes": this PodNetwork and the Pod's spec are gone.
    };
    // The agent restarts offline: no Pod CIDR until the controller is back. The Pod
    // keeps its network.
    let mut cfg = lab.cfg.clone();
    cfg.pod_cidr = None;
    let net = PodNetwork::new(cfg).unwrap();
    assert_eq!(net.list(), vec![uid.clone()]);
    let saved = net.saved_status(&uid).unwrap();
    assert_eq!(saved.ip, ip);
    assert!(
        saved.netns_path.exists(),
        "the namespace outlived the agent"
    );
    let again = net.setup(&web(&lab)).await.unwrap();
    assert_eq!((again.ip, again.new_namespace), (ip, false));
    // The Pod's spec is gone too: teardown needs only the uid.
    net.teardown(&uid).await.unwrap();
    assert_all_released(&lab, &net, &uid, &saved.netns_path, &fp);
}

#[tokio::test]
async fn setup_is_idempotent_and_repairs_a_broken_pod_network() {
    let lab = Lab::new(6);
    let net = lab.network();
    let spec = lab.pod("web", vec![]);
    let first = net.setup(&spec).await.unwrap();
    let rules = lab.rules();

    let again = net.setup(&spec).await.unwrap();
    assert_eq!(again.ip, first.ip);
    assert_eq!(again.mac, first.mac);
    assert!(!again.new_namespace);
    assert_eq!(lab.rules(), rules, "a second setup added rules");
    assert_eq!(lab.reservations(), vec![first.ip.to_string()]);

    // Break it: the Pod's interface disappears. CHECK fails, setup adds it again in the
    // same namespace, so containers already in it get their network back.
    network_support::run(
        "nsenter",
        &[
            &format!("--net={}", first.netns_path.display()),
            "ip",
            "link",
            "del",
            "eth0",
        ],
    );
    let repaired = net.setup(&spec).await.unwrap();
    assert!(!repaired.new_namespace);
    assert_eq!(repaired.netns_path, first.netns_path);
    let other = net.setup(&lab.pod("other", vec![])).await.unwrap();
    let peer = tcp_exchange(
        &repaired.netns_path,
        any(8080),
        &other.netns_path,
        sock(repaired.ip, 8080),
    );
    assert_eq!(peer.ip(), other.ip);
    assert_eq!(
        lab.reservations().len(),
        2,
        "the broken attempt's address was not released"
    );

    net.teardown(&spec.uid).await.unwrap();
    net.teardown(&lab.pod("other", vec![]).uid).await.unwrap();
    assert_eq!(lab.reservations(), Vec::<String>::new());
    assert!(net.list().is_empty());
    // Including the NAT rules of the broken attempt, which bridge's DEL could not find
    // without the interface.
    assert_eq!(lab.rules(), Vec::<String>::new());
}

#[tokio::test]
async fn setup_after_the_namespace_was_lost_makes_a_new_one_and_cleans_the_old() {
    let lab = Lab::new(10);
    let net = lab.network();
    let (uid, fp) = set_up_with_a_host_port(&lab, &net).await;
    let netns = net.netns_path(&uid);
    // As after a reboot clears /run (or someone removes it): the namespace and the Pod's
    // veth go away, the saved state, the address reservation and the rules stay.
    nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_file(&netns).unwrap();

    let status = net.setup(&web(&lab)).await.unwrap();
    assert!(status.new_namespace, "containers must learn to restart");
    assert_eq!(lab.reservations(), vec![status.ip.to_string()]);
    let other = net.setup(&lab.pod("other", vec![])).await.unwrap();
    tcp_exchange(
        &status.netns_path,
        any(8080),
        &other.netns_path,
        sock(status.ip, 8080),
    );
    net.teardown(&lab.pod("other", vec![]).uid).await.unwrap();
    net.teardown(&uid).await.unwrap();
    assert_all_released(&lab, &net, &uid, &netns, &fp);
}

#[tokio::test]
async fn a_full_range_gives_a_clear_error_and_leaves_nothing_behind() {
    let mut lab = Lab::new(7);
    // A /30 holds the gateway and one Pod.
    lab.cfg.pod_cidr = Some("10.123.7.0/30".into());
    let net = lab.network();
    let first = lab.pod("first", vec![]);
    net.setup(&first).await.unwrap();
    let second = lab.pod("second", vec![]);
    let err = net.setup(&second).await.unwrap_err();
    assert!(
        matches!(err, NetworkError::AddressesExhausted { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("default/second"), "{text}");
    assert!(text.contains("10.123.7.0/30"), "{text}");
    assert_eq!(
        net.list(),
        vec![first.uid.clone()],
        "the failed Pod left state"
    );
    net.teardown(&first.uid).await.unwrap();
}

#[tokio::test]
async fn a_plugin_error_is_surfaced_with_its_msg_and_details() {
    let mut lab = Lab::new(8);
    let plugins = lab.tmp.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for p in ["host-local", "portmap", "loopback"] {
        std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(p), plugins.join(p)).unwrap();
    }
    let fake = plugins.join("bridge");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"bridge is on strike\",\"details\":\"try again later\"}'\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    lab.cfg.plugin_dirs = vec![plugins];
    let net = lab.network();
    let spec = lab.pod("web", vec![]);
    let err = net.setup(&spec).await.unwrap_err();
    match &err {
        NetworkError::Plugin {
            command,
            plugin,
            code,
            msg,
            details,
            ..
        } => {
            assert_eq!((*command, plugin.as_str(), *code), ("ADD", "bridge", 7));
            assert_eq!(msg, "bridge is on strike");
            assert_eq!(details.as_deref(), Some("try again later"));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("default/web"), "{err}");
    // The fake bridge "fails" its DEL as well, so the state stays for a teardown retry.
    assert_eq!(net.list(), vec![spec.uid.clone()]);

    // Plugins missing altogether.
    lab.cfg.plugin_dirs = vec![lab.tmp.path().join("nowhere")];
    let net = lab.network();
    let err = net.setup(&lab.pod("x", vec![])).await.unwrap_err();
    assert!(
        err.to_string().contains("CNI plugin bridge not found in "),
        "{err}"
    );
}

/// Figures for the benchmark notes: `cargo test -p punnet-agent --test network_root --
/// --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn measure_setup_and_teardown() {
    let lab = Lab::new(9);
    let net = lab.network();
    let (mut setups, mut teardowns) = (vec![], vec![]);
    for i in 0..11 {
        let spec = lab.pod(
            &format!("m{i}"),
            vec![HostPort {
                host_port: host_port(9, 0),
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: lab_host_ip(9),
            }],
        );
        let t = Instant::now();
        net.setup(&spec).await.unwrap();
        setups.push(t.elapsed());
        let t = Instant::now();
        net.teardown(&spec.uid).await.unwrap();
        teardowns.push(t.elapsed());
    }
    // The first run also creates the bridge.
    let median = |v: &mut Vec<Duration>| {
        v.remove(0);
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "pod network setup (netns + loopback + bridge + portmap ADD): median {:?}; teardown (DEL + netns removal): median {:?}",
        median(&mut setups),
        median(&mut teardowns)
    );
}
