//! Security defaults and `securityContext` on real containers: the default seccomp
//! profile refuses what Docker's refuses and `privileged: true` lifts it; capabilities,
//! users, read-only roots; host devices passed in by path (GPIO, I2C, camera) are usable
//! without privileged, while others stay refused by the device cgroup. Needs root.

mod runtime_support;

use std::time::Duration;

use punnet_agent::runtime::{BindMount, ContainerConfig, ExitReason, Runtime, SecuritySettings};
use runtime_support::Env;

/// Runs `script` to completion and returns its exit code and output.
fn run(
    env: &Env,
    name: &str,
    script: &str,
    tweak: impl FnOnce(&mut ContainerConfig),
) -> (i32, String) {
    let id = env.id(name);
    let mut config = env.config(&id, script);
    tweak(&mut config);
    env.rt.start(&config).unwrap();
    let (code, reason) = env.wait_exited(&env.rt, &id, Duration::from_secs(20));
    assert_ne!(reason, ExitReason::StartError, "{:?}", env.log_lines(&id));
    let out: Vec<String> = env
        .log_lines(&id)
        .iter()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect();
    (code, out.join("\n"))
}

#[test]
fn the_default_seccomp_profile_refuses_new_namespaces_and_privileged_lifts_it() {
    let env = Env::new();
    // unshare(CLONE_NEWUSER) needs no capability: only the seccomp profile stops it.
    let script = "unshare -U true && echo allowed || echo refused";
    let (_, out) = run(&env, "seccomp-default", script, |_| {});
    assert!(out.contains("refused"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");

    let (_, out) = run(&env, "seccomp-unconfined", script, |c| {
        c.security.seccomp = punnet_agent::runtime::Seccomp::Unconfined;
    });
    assert!(out.ends_with("allowed"), "{out}");

    let (_, out) = run(&env, "seccomp-privileged", script, |c| {
        c.security.privileged = true;
    });
    assert!(out.ends_with("allowed"), "{out}");
}

#[test]
fn capabilities_users_and_read_only_roots_follow_the_security_context() {
    let env = Env::new();
    let caps = "grep CapEff /proc/self/status";
    let (_, default) = run(&env, "caps-default", caps, |_| {});
    // Docker's default set: 0x00000000a80425fb.
    assert!(default.contains("00000000a80425fb"), "{default}");
    let (_, dropped) = run(&env, "caps-drop", caps, |c| {
        c.security.capabilities = vec!["CAP_NET_BIND_SERVICE".into()];
    });
    assert!(dropped.contains("0000000000000400"), "{dropped}");

    let (_, ids) = run(&env, "run-as", "id -u; id -g; id -G", |c| {
        c.security.run_as_user = Some(1234);
        c.security.run_as_group = Some(2345);
        c.security.supplemental_groups = vec![3456];
    });
    assert_eq!(
        ids.lines().collect::<Vec<_>>()[..2],
        ["1234", "2345"],
        "{ids}"
    );
    assert!(ids.contains("3456"), "{ids}");

    let (code, out) = run(
        &env,
        "read-only",
        "touch /x 2>&1; touch /tmp/y 2>&1; echo done",
        |c| {
            c.security.read_only_root = true;
        },
    );
    assert_eq!(code, 0);
    assert!(out.contains("Read-only file system"), "{out}");

    // runAsNonRoot with an image that runs as root: a start error naming the fix.
    let id = env.id("non-root");
    let mut config = env.config(&id, "true");
    config.security = SecuritySettings {
        run_as_non_root: true,
        ..Default::default()
    };
    let err = env.rt.start(&config);
    let shown = match err {
        Err(e) => e.to_string(),
        Ok(_) => {
            env.wait_exited(&env.rt, &id, Duration::from_secs(20));
            env.log_lines(&id).join("\n")
        }
    };
    assert!(shown.contains("runAsNonRoot"), "{shown}");
}

#[test]
fn a_host_device_named_by_path_is_usable_and_others_stay_refused() {
    let env = Env::new();
    let devs = env.tmp.path().join("devs");
    std::fs::create_dir_all(&devs).unwrap();
    // The i2c-dev major with no adapter behind it: an allowed open fails with ENXIO
    // ("No such device or address"), one the device cgroup refuses with EPERM.
    let node = devs.join("i2c-1");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        nix::sys::stat::makedev(89, 1),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o660)).unwrap();
    let other = devs.join("i2c-2");
    nix::sys::stat::mknod(
        &other,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        nix::sys::stat::makedev(89, 2),
    )
    .unwrap();
    let probe = "cat /dev/i2c-1 2>&1; cat /devs/i2c-2 2>&1; ls -l /dev/i2c-1; true";
    let (_, out) = run(&env, "device", probe, |c| {
        c.mounts = vec![
            BindMount {
                host_path: node.clone(),
                container_path: "/dev/i2c-1".into(),
                read_only: false,
            },
            BindMount {
                host_path: devs.clone(),
                container_path: "/devs".into(),
                read_only: false,
            },
        ];
    });
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("No such device or address") || lines[0].contains("No such device"),
        "the named device is allowed: {out}"
    );
    assert!(
        lines[1].contains("Operation not permitted"),
        "a device reached through a directory mount stays refused: {out}"
    );
    assert!(
        lines[2].starts_with("crw-rw----"),
        "the host node's mode: {out}"
    );
    assert!(
        lines[2].contains("89,") && lines[2].contains(" 1 "),
        "{out}"
    );
}
