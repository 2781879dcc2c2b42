//! The board's OCI platform (`linux/arm64/v8`, `linux/arm/v7`, `linux/arm/v6`,
//! `linux/amd64`), read from the kernel and /proc/cpuinfo rather than from how the agent
//! was built, and which image platforms it can run.
//!
//! How the CPU maps to a platform:
//! - `uname -m` `aarch64` → `linux/arm64/v8`.
//! - `armv7l` → `linux/arm/v7`; `armv6l` → `linux/arm/v6`; the lower of that and the CPU's
//!   level in /proc/cpuinfo wins. On a Pi Zero or Pi 1 the kernel prints `CPU
//!   architecture: 7` for the ARM1176 (it has the v7 CPUID scheme), so `model name :
//!   ARMv6-compatible` wins over that line.
//! - A 32-bit userland on a 64-bit kernel: a process with the 32-bit personality sees
//!   `armv8l` → `linux/arm/v7` (an ARMv8 core runs v7 code in AArch32). A 32-bit agent
//!   that sees `aarch64` (Raspberry Pi OS 32-bit boots a 64-bit kernel on a Pi 4) also
//!   gets `linux/arm/v7` from [`detect`]: its seccomp filters are built for the 32-bit
//!   ARM ABI only, so a 64-bit container would have every syscall refused.
//! - A kernel answer the running binary contradicts (an architecture the binary was not
//!   compiled for) loses to the compiled-in target ([`reconcile`]). Under qemu-user
//!   /proc/cpuinfo is the host's, but `uname -m` is the emulated CPU's (`armv6l` for
//!   `-cpu arm1176`), and the host's x86 cpuinfo names no ARM level, so the emulated
//!   board is reported as the real one would be.
//! - `x86_64` → `linux/amd64`.
//!
//! Fallbacks ([`Platform::accepts`]): arm/v7 runs arm/v6 and arm/v5 images, arm/v6 runs
//! arm/v5, never the reverse; an arm image without a variant counts as v7 (as Docker and
//! containerd read it); arm64 takes arm64 with variant v8 or none. arm64 does not fall
//! back to 32-bit arm images, which would need the 32-bit syscall ABI in the seccomp
//! profile.

use std::fmt;
use std::str::FromStr;

/// An OCI platform as image indexes name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// The Go/OCI architecture name: `arm64`, `arm`, `amd64`.
    pub architecture: String,
    /// `v8` for arm64, `v5`..`v8` for arm; `None` where the architecture has none.
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "platform {input:?} is not valid: {reason} (write it as OS/ARCH[/VARIANT], e.g. linux/arm/v7)"
)]
pub struct PlatformError {
    pub input: String,
    pub reason: String,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// How well an image built for `os`/`arch`/`variant` fits this board: `Some(0)` is a
    /// native match, higher numbers are fallbacks (an arm/v6 image on an arm/v7 board
    /// ranks 1), `None` means it cannot run here.
    pub fn accepts(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u32> {
        if os != self.os {
            return None;
        }
        let (arch, variant) = normalize_arch(arch, variant);
        if arch != self.architecture {
            return None;
        }
        match arch.as_str() {
            "arm" => {
                let mine = arm_level(self.variant.as_deref())?;
                let theirs = arm_level(variant.as_deref())?;
                (theirs <= mine).then(|| mine - theirs)
            }
            _ => (variant == self.variant).then_some(0),
        }
    }
}

/// `v7` → 7 for the 32-bit arm variants; an unknown variant runs nowhere.
fn arm_level(variant: Option<&str>) -> Option<u32> {
    match variant.unwrap_or("v7") {
        "v5" => Some(5),
        "v6" => Some(6),
        "v7" => Some(7),
        "v8" => Some(8),
        _ => None,
    }
}

/// Maps aliases to OCI names and fills in the variant an architecture implies, the way
/// containerd normalises platforms.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let variant = variant.filter(|v| !v.is_empty());
    let (arch, variant) = match (arch, variant) {
        ("aarch64" | "arm64", None | Some("v8" | "8")) => ("arm64", Some("v8")),
        ("aarch64", v) => ("arm64", v),
        ("x86_64" | "x86-64", v) => ("amd64", v),
        ("amd64", Some("v1")) => ("amd64", None),
        ("armhf", None) => ("arm", Some("v7")),
        ("armel", None) => ("arm", Some("v6")),
        ("arm", None) => ("arm", Some("v7")),
        ("arm", Some("5")) => ("arm", Some("v5")),
        ("arm", Some("6")) => ("arm", Some("v6")),
        ("arm", Some("7")) => ("arm", Some("v7")),
        ("arm", Some("8")) => ("arm", Some("v8")),
        (a, v) => (a, v),
    };
    (arch.to_string(), variant.map(str::to_string))
}

/// The platform of a board whose kernel reports `machine` (`uname -m`) and whose
/// /proc/cpuinfo reads `cpuinfo`. Pure: see the module docs for the rules.
pub fn from_cpu(machine: &str, cpuinfo: &str) -> Platform {
    let machine = machine.trim();
    match machine {
        "aarch64" | "arm64" => Platform::new("linux", "arm64", Some("v8")),
        "x86_64" | "amd64" => Platform::new("linux", "amd64", None),
        "i386" | "i486" | "i586" | "i686" => Platform::new("linux", "386", None),
        "armv8l" => Platform::new("linux", "arm", Some("v7")),
        m if m.starts_with("arm") => {
            // The lower of the two: an ARMv6 kernel on a v7 core may not save the NEON
            // registers v7 code uses, and a v6 core says `armv7l` nowhere.
            let level = [arm_level_from_cpuinfo(cpuinfo), arm_level_from_machine(m)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(7)
                .min(7);
            Platform::new("linux", "arm", Some(&format!("v{level}")))
        }
        other => Platform::new("linux", other, None),
    }
}

/// `armv6l` → 6.
fn arm_level_from_machine(machine: &str) -> Option<u32> {
    let digits: String = machine
        .strip_prefix("armv")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The ARM architecture level of the first CPU in /proc/cpuinfo. `model name :
/// ARMv6-compatible processor` comes first because ARM1176 cores also say
/// `CPU architecture: 7`.
fn arm_level_from_cpuinfo(cpuinfo: &str) -> Option<u32> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim())
        })
    };
    let from_model = field("model name").and_then(|model| {
        let rest = &model[model.find("ARMv")? + 4..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    from_model.or_else(|| {
        field("CPU architecture").and_then(|a| {
            let digits: String = a.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
    })
}

/// This board's platform, from `uname` and /proc/cpuinfo, checked against the target the
/// agent was compiled for (see [`reconcile`]).
pub fn detect() -> Platform {
    let machine = nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.to_string());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    reconcile(from_cpu(&machine, &cpuinfo), &built_for())
}

/// The platform this binary was compiled for: `linux/arm/v6` for the ARMv6 build
/// (`arm-unknown-linux-musleabihf`), `linux/arm/v7` for armv7, `linux/arm64/v8`, ...
pub fn built_for() -> Platform {
    let arm_variant = if cfg!(target_feature = "v7") {
        "v7"
    } else {
        "v6"
    };
    match std::env::consts::ARCH {
        "aarch64" => Platform::new("linux", "arm64", Some("v8")),
        "arm" => Platform::new("linux", "arm", Some(arm_variant)),
        "x86_64" => Platform::new("linux", "amd64", None),
        "x86" => Platform::new("linux", "386", None),
        other => Platform::new("linux", other, None),
    }
}

/// What the board reports, unless it contradicts the binary that is running:
/// - the same architecture: the CPU's own variant wins (an ARMv6 agent on a Pi 3 with a
///   32-bit kernel runs v7 images);
/// - a 32-bit ARM agent on a 64-bit kernel (Raspberry Pi OS 32-bit on a Pi 4 boots a
///   64-bit kernel, so `uname -m` says `aarch64`): `linux/arm/v7`, because its seccomp
///   filters cover the 32-bit ARM ABI only and a 64-bit container would have every
///   syscall refused;
/// - anything else (a `uname` this binary cannot be running under, e.g. unreadable or
///   an emulator that reports its host): the compiled-in target.
pub fn reconcile(detected: Platform, built: &Platform) -> Platform {
    match (detected.architecture.as_str(), built.architecture.as_str()) {
        (d, b) if d == b => detected,
        ("arm64", "arm") => Platform::new("linux", "arm", Some("v7")),
        _ => built.clone(),
    }
}

impl Platform {
    /// `arm/v6`, `arm/v7`, `arm64`, `amd64`: the platform without its OS (and without
    /// arm64's only variant), as node facts and the `punnet.io/platform` label carry it.
    pub fn arch_variant(&self) -> String {
        match self.variant.as_deref() {
            Some(v) if !(self.architecture == "arm64" && v == "v8") => {
                format!("{}/{v}", self.architecture)
            }
            _ => self.architecture.clone(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// `linux/arm/v7`, `linux/arm64`, `arm/v6`, `arm64`, `aarch64`, `armhf`; a missing OS
    /// is `linux`, a missing variant is the one the architecture implies.
    fn from_str(input: &str) -> Result<Platform, PlatformError> {
        let err = |reason: &str| PlatformError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = input.trim().split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err("it has an empty part"));
        }
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] if *os == "linux" => ("linux", *arch, None),
            [arch, variant] => ("linux", *arch, Some(*variant)),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(err("it has more than three parts")),
        };
        if os != "linux" {
            return Err(err("only linux is supported"));
        }
        let (arch, variant) = normalize_arch(arch, variant);
        let known = matches!(arch.as_str(), "arm" | "arm64" | "amd64" | "386");
        if !known {
            return Err(err("the architecture is not one of arm, arm64, amd64, 386"));
        }
        if arch == "arm" && arm_level(variant.as_deref()).is_none() {
            return Err(err("an arm variant is one of v5, v6, v7, v8"));
        }
        Ok(Platform {
            os: os.to_string(),
            architecture: arch,
            variant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Raspberry Pi Zero W running Raspberry Pi OS (armhf, ARMv6 kernel).
    const PI_ZERO: &str = "processor\t: 0
model name\t: ARMv6-compatible processor rev 7 (v6l)
BogoMIPS\t: 697.95
Features\t: half thumb fastmult vfp edsp java tls 
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xb76
CPU revision\t: 7

Hardware\t: BCM2835
Revision\t: 9000c1
Serial\t\t: 00000000a1b2c3d4
Model\t\t: Raspberry Pi Zero W Rev 1.1
";

    /// A Raspberry Pi 3 Model B with the 32-bit kernel.
    const PI_3_32BIT: &str = "processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32 
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xd03
CPU revision\t: 4

processor\t: 1
model name\t: ARMv7 Processor rev 4 (v7l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32 
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xd03
CPU revision\t: 4

Hardware\t: BCM2835
Revision\t: a02082
Serial\t\t: 000000001a2b3c4d
Model\t\t: Raspberry Pi 3 Model B Rev 1.2
";

    /// A Raspberry Pi 4 Model B with the 64-bit kernel.
    const PI_4_64BIT: &str = "processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Revision\t: c03111
Serial\t\t: 10000000abcdef01
Model\t\t: Raspberry Pi 4 Model B Rev 1.1
";

    /// What a 32-bit process with the PER_LINUX32 personality reads on a 64-bit kernel.
    const PI_4_COMPAT: &str = "processor\t: 0
model name\t: ARMv8 Processor rev 3 (v8l)
BogoMIPS\t: 108.00
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 8
";

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn the_running_binary_overrules_a_contradicting_kernel() {
        let v6 = p("linux/arm/v6");
        // ARMv6 agent on a Pi 3 with a 32-bit kernel: the CPU's v7 wins.
        assert_eq!(
            reconcile(p("linux/arm/v7"), &v6).to_string(),
            "linux/arm/v7"
        );
        // ARMv6 agent under qemu-arm -cpu arm1176 on an x86 host: uname says armv6l.
        assert_eq!(
            reconcile(from_cpu("armv6l", "model name\t: Intel(R) Xeon(R)\n"), &v6).to_string(),
            "linux/arm/v6"
        );
        // 32-bit agent on a 64-bit kernel.
        assert_eq!(reconcile(p("linux/arm64"), &v6).to_string(), "linux/arm/v7");
        // A machine this binary cannot run on natively: trust the binary.
        assert_eq!(reconcile(p("linux/amd64"), &v6).to_string(), "linux/arm/v6");
        let arm64 = p("linux/arm64");
        assert_eq!(
            reconcile(p("linux/amd64"), &arm64).to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(
            reconcile(p("linux/arm64"), &arm64).to_string(),
            "linux/arm64/v8"
        );
    }

    #[test]
    fn facts_carry_the_platform_without_its_os() {
        assert_eq!(p("linux/arm/v6").arch_variant(), "arm/v6");
        assert_eq!(p("linux/arm64").arch_variant(), "arm64");
        assert_eq!(p("linux/amd64").arch_variant(), "amd64");
        assert_eq!(built_for().os, "linux");
    }

    #[test]
    fn raspberry_pis_map_to_their_platform() {
        assert_eq!(from_cpu("armv6l", PI_ZERO).to_string(), "linux/arm/v6");
        assert_eq!(from_cpu("armv7l", PI_3_32BIT).to_string(), "linux/arm/v7");
        assert_eq!(
            from_cpu("aarch64", PI_4_64BIT).to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(from_cpu("armv8l", PI_4_COMPAT).to_string(), "linux/arm/v7");
        assert_eq!(from_cpu("x86_64\n", "").to_string(), "linux/amd64");
    }

    #[test]
    fn the_lower_of_kernel_and_cpu_wins() {
        assert_eq!(from_cpu("armv7l", PI_ZERO).to_string(), "linux/arm/v6");
        assert_eq!(from_cpu("armv6l", PI_3_32BIT).to_string(), "linux/arm/v6");
        assert_eq!(from_cpu("armv6l", "").to_string(), "linux/arm/v6");
        assert_eq!(from_cpu("armv7l", "").to_string(), "linux/arm/v7");
    }

    #[test]
    fn arm_v7_runs_older_variants_but_never_newer() {
        let v7 = p("linux/arm/v7");
        assert_eq!(v7.accepts("linux", "arm", Some("v7")), Some(0));
        assert_eq!(v7.accepts("linux", "arm", None), Some(0));
        assert_eq!(v7.accepts("linux", "arm", Some("v6")), Some(1));
        assert_eq!(v7.accepts("linux", "arm", Some("v5")), Some(2));
        assert_eq!(v7.accepts("linux", "arm", Some("v8")), None);
        assert_eq!(v7.accepts("linux", "arm64", Some("v8")), None);

        let v6 = p("linux/arm/v6");
        assert_eq!(v6.accepts("linux", "arm", Some("v6")), Some(0));
        assert_eq!(v6.accepts("linux", "arm", Some("v5")), Some(1));
        assert_eq!(v6.accepts("linux", "arm", Some("v7")), None);
        assert_eq!(
            v6.accepts("linux", "arm", None),
            None,
            "no variant means v7"
        );
        assert_eq!(v6.accepts("windows", "arm", Some("v6")), None);
    }

    #[test]
    fn arm64_takes_v8_or_no_variant_only() {
        let a = p("linux/arm64");
        assert_eq!(a.accepts("linux", "arm64", Some("v8")), Some(0));
        assert_eq!(a.accepts("linux", "arm64", None), Some(0));
        assert_eq!(a.accepts("linux", "arm64", Some("v9")), None);
        assert_eq!(a.accepts("linux", "arm", Some("v7")), None);
        assert_eq!(a.accepts("linux", "amd64", None), None);
        let x = p("linux/amd64");
        assert_eq!(x.accepts("linux", "amd64", None), Some(0));
        assert_eq!(x.accepts("linux", "amd64", Some("v1")), Some(0));
        assert_eq!(x.accepts("linux", "amd64", Some("v3")), None);
    }

    #[test]
    fn parsing_fills_in_defaults_and_round_trips() {
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        assert_eq!(p("arm/v6").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("aarch64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64/v8");
        assert_eq!(p("x86_64").to_string(), "linux/amd64");
        for bad in [
            "",
            "linux/",
            "windows/amd64",
            "linux/sparc",
            "linux/arm/v9",
            "a/b/c/d",
        ] {
            let err = bad.parse::<Platform>().unwrap_err();
            assert!(err.to_string().contains("OS/ARCH"), "{bad}: {err}");
        }
    }
}
