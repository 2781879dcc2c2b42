//! Linux capability names as a Pod spec writes them (`NET_ADMIN` or `CAP_NET_ADMIN`),
//! and the default set containers get (Docker's and containerd's).

/// Every capability the kernel defines, in the kernel's numbering order.
pub const ALL: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// What a container gets unless its `securityContext` says otherwise: the set Docker
/// and containerd give (no NET_ADMIN, no SYS_ADMIN, ...).
pub const DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The canonical `CAP_` name of a capability written either way, any case.
pub fn parse(name: &str) -> Option<&'static str> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL.iter().copied().find(|c| *c == full)
}

/// The capabilities of a container: the default set, minus `drop` (`ALL` drops all),
/// plus `add` (`ALL` adds all); everything for a privileged container.
pub fn effective(add: &[String], drop: &[String], privileged: bool) -> Vec<&'static str> {
    if privileged {
        return ALL.to_vec();
    }
    let mut set: Vec<&'static str> = if drop.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
        Vec::new()
    } else {
        DEFAULT
            .iter()
            .copied()
            .filter(|c| !drop.iter().any(|d| parse(d) == Some(*c)))
            .collect()
    };
    if add.iter().any(|a| a.eq_ignore_ascii_case("ALL")) {
        return ALL.to_vec();
    }
    for a in add {
        if let Some(c) = parse(a) {
            if !set.contains(&c) {
                set.push(c);
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_or_without_prefix() {
        assert_eq!(parse("net_admin"), Some("CAP_NET_ADMIN"));
        assert_eq!(parse("CAP_SYS_TIME"), Some("CAP_SYS_TIME"));
        assert_eq!(parse("NET_WIZARD"), None);
    }

    #[test]
    fn drop_all_then_add_keeps_only_the_added() {
        let caps = effective(&["NET_BIND_SERVICE".into()], &["ALL".into()], false);
        assert_eq!(caps, vec!["CAP_NET_BIND_SERVICE"]);
    }

    #[test]
    fn default_set_lacks_admin_capabilities_and_add_extends_it() {
        let d = effective(&[], &[], false);
        assert!(!d.contains(&"CAP_NET_ADMIN") && !d.contains(&"CAP_SYS_ADMIN"));
        assert_eq!(d.len(), DEFAULT.len());
        let more = effective(&["NET_ADMIN".into()], &["MKNOD".into()], false);
        assert!(more.contains(&"CAP_NET_ADMIN") && !more.contains(&"CAP_MKNOD"));
        assert_eq!(effective(&[], &["ALL".into()], true).len(), ALL.len());
    }
}
