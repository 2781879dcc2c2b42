//! The runtime's default seccomp profile (`RuntimeDefault`): everything is allowed except
//! the syscalls Docker's and containerd's default profiles keep from containers — kernel
//! modules, kexec, reboot, clock setting, keyrings, new namespaces, mounts, raw I/O,
//! io_uring... — and a syscall whose capability the container was given (`NET_ADMIN`,
//! `SYS_TIME`, `SYS_ADMIN` via `securityContext.capabilities.add`) is allowed again, as
//! in those profiles.
//!
//! A deny list rather than Docker's allow list: the same profile then holds on arm64,
//! arm and x86_64 without a per-architecture syscall table, and a syscall a newer
//! kernel adds works at once. Syscalls from a foreign ABI (32-bit calls on a 64-bit
//! kernel) are refused by libseccomp's default bad-architecture action.

use libcontainer::oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use libcontainer::oci_spec::OciSpecError;

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

/// Syscalls refused unless the container holds the capability (an empty capability:
/// always refused).
const DENIED: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "mount",
            "umount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "swapon",
            "swapoff",
            "fanotify_init",
            "name_to_handle_at",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot", "kexec_load", "kexec_file_load"]),
    (
        "CAP_SYS_MODULE",
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "query_module",
            "get_kernel_syms",
        ],
    ),
    (
        "CAP_SYS_TIME",
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    (
        "CAP_SYS_PTRACE",
        &[
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
        ],
    ),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_BPF", &["bpf"]),
    (
        "",
        &[
            "add_key",
            "keyctl",
            "request_key",
            "nfsservctl",
            "uselib",
            "userfaultfd",
            "ustat",
            "sysfs",
            "_sysctl",
            "vm86",
            "vm86old",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
    ),
];

/// CLONE_NEW* flags: `clone` asking for any of them is refused without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// `perf_event_open` and `bpf` were CAP_SYS_ADMIN's before CAP_PERFMON and CAP_BPF.
fn granted(cap: &str, caps: &[&str]) -> bool {
    caps.contains(&cap)
        || (matches!(cap, "CAP_PERFMON" | "CAP_BPF") && caps.contains(&"CAP_SYS_ADMIN"))
}

/// The default profile for a container holding `caps` (canonical `CAP_*` names).
pub fn runtime_default(caps: &[&str]) -> Result<LinuxSeccomp, OciSpecError> {
    let mut denied: Vec<String> = Vec::new();
    for (cap, syscalls) in DENIED {
        if cap.is_empty() || !granted(cap, caps) {
            denied.extend(syscalls.iter().map(|s| s.to_string()));
        }
    }
    let mut syscalls: Vec<LinuxSyscall> = vec![LinuxSyscallBuilder::default()
        .names(denied)
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(EPERM)
        .build()?];
    if !caps.contains(&"CAP_SYS_ADMIN") {
        // One argument compared several times: libcontainer adds one rule per comparison,
        // so any of the flags refuses the call.
        let args = CLONE_NAMESPACE_FLAGS
            .iter()
            .map(|flag| {
                LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(*flag)
                    .value_two(*flag)
                    .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(EPERM)
                .args(args)
                .build()?,
        );
        // clone3 passes its flags in memory a filter cannot read: make the C library
        // fall back to clone, as Docker does.
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(ENOSYS)
                .build()?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.errno_ret() == Some(EPERM) && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_capabilities_keep_admin_syscalls_out() {
        let caps = punnet_api::capability::DEFAULT;
        let p = runtime_default(caps).unwrap();
        let d = denied(&p);
        for s in [
            "mount",
            "unshare",
            "reboot",
            "keyctl",
            "clock_settime",
            "init_module",
        ] {
            assert!(d.iter().any(|x| x == s), "{s} should be denied");
        }
        assert!(!d.iter().any(|x| x == "read" || x == "ptrace"));
        let clone = p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .find(|s| s.names() == &["clone"]);
        assert_eq!(clone.unwrap().args().as_ref().unwrap().len(), 7);
    }

    #[test]
    fn an_added_capability_allows_its_syscalls_again() {
        let mut caps = punnet_api::capability::DEFAULT.to_vec();
        caps.push("CAP_SYS_TIME");
        let d = denied(&runtime_default(&caps).unwrap());
        assert!(!d.iter().any(|x| x == "clock_settime"));
        assert!(d.iter().any(|x| x == "mount"));

        caps.push("CAP_SYS_ADMIN");
        let p = runtime_default(&caps).unwrap();
        let d = denied(&p);
        assert!(!d.iter().any(|x| x == "mount" || x == "bpf"));
        assert!(d.iter().any(|x| x == "keyctl"), "keyrings stay closed");
        assert!(!p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|s| s.names() == &["clone"]));
    }
}
