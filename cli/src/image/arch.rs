//! Which CPU architecture a Raspberry Pi OS image's programs are built for, and which
//! agent binaries fit it. Pure: it reads file names and text handed in by the caller.
//!
//! The userland, not the kernel, decides which agent binary runs, and the boot
//! partition tells it through the kernels the image ships:
//! - A 32-bit ("armhf") Raspberry Pi OS image carries `kernel.img` (ARMv6: Pi 1, Zero,
//!   Zero W), `kernel7.img` (ARMv7: Pi 2, 3) and `kernel7l.img` (Pi 4, LPAE); since
//!   Bookworm it also carries `kernel8.img`, so that a Pi 4/5 can boot a 64-bit kernel
//!   under the same 32-bit userland. Its programs are built for ARMv6 hard-float
//!   (Raspbian), so one image runs on every Pi: the agent must too, or the image must
//!   carry an ARMv6 agent for the boards that need it.
//! - A 64-bit ("arm64") image carries only 64-bit kernels: `kernel8.img` (Pi 3, 4,
//!   Zero 2 W) and `kernel_2712.img` (Pi 5, 16K pages), and `arm_64bit=1` in
//!   `config.txt`.
//!
//! So any 32-bit kernel means an armhf userland, whatever else is there; only 64-bit
//! kernels mean arm64. An image that boots a kernel of its own name (`kernel=` in
//! config.txt) is read by `arm_64bit`, the switch the firmware itself uses.

use std::path::PathBuf;

/// The kernels of a 32-bit Raspberry Pi OS image, by the boards they are for.
const KERNEL_ARMV6: &str = "kernel.img";
const KERNELS_ARMV7: [&str; 2] = ["kernel7.img", "kernel7l.img"];
const KERNELS_64: [&str; 2] = ["kernel8.img", "kernel_2712.img"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageArch {
    /// 64-bit userland: Pi 3, 4, 5, Zero 2 W.
    Arm64,
    /// 32-bit hard-float userland; `armv6_boards`: the image also boots Pi 1/Zero.
    Armhf { armv6_boards: bool },
}

impl std::fmt::Display for ImageArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageArch::Arm64 => f.write_str("64-bit (arm64)"),
            ImageArch::Armhf { armv6_boards: true } => {
                f.write_str("32-bit (armhf, including ARMv6 boards: Pi 1, Zero)")
            }
            ImageArch::Armhf {
                armv6_boards: false,
            } => f.write_str("32-bit (armhf, ARMv7+)"),
        }
    }
}

/// Reads the architecture from the boot partition's top-level file names and its
/// config.txt; `None` when it carries no kernel it can be told from.
pub fn detect(files: &[String], config_txt: &str) -> Option<ImageArch> {
    let has = |name: &str| files.iter().any(|f| f.eq_ignore_ascii_case(name));
    let armv6 = has(KERNEL_ARMV6);
    if armv6 || KERNELS_ARMV7.iter().any(|k| has(k)) {
        return Some(ImageArch::Armhf {
            armv6_boards: armv6,
        });
    }
    if KERNELS_64.iter().any(|k| has(k)) {
        return Some(ImageArch::Arm64);
    }
    let custom = config_value(config_txt, "kernel")?;
    if !has(&custom) {
        return None;
    }
    // A kernel of its own name: the firmware boots it in 64-bit mode only with
    // arm_64bit=1; a 32-bit one could be for any board, so the ARMv6 agent is wanted.
    Some(match config_value(config_txt, "arm_64bit").as_deref() {
        Some(v) if v != "0" => ImageArch::Arm64,
        _ => ImageArch::Armhf { armv6_boards: true },
    })
}

/// The value of `key=value` in config.txt's common part: before the first section
/// filter (`[pi4]`), or under `[all]`; the last one wins, as for the firmware.
pub fn config_value(config_txt: &str, key: &str) -> Option<String> {
    let mut in_all = true;
    let mut found = None;
    for line in config_txt.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(section) = line.strip_prefix('[') {
            in_all = section.trim_end_matches(']').eq_ignore_ascii_case("all");
            continue;
        }
        if !in_all {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case(key) {
                found = Some(v.trim().to_string());
            }
        }
    }
    found
}

/// One kind of agent binary an image can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flavour {
    Arm64,
    Armv7,
    Armv6,
    /// A 32-bit binary given with `--agent`: which ARM level it needs is the user's call.
    Arm32,
}

impl Flavour {
    /// Its name on the boot partition (`punnet-agent-<name>`), which setup.sh picks by.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Arm64 => "arm64",
            Flavour::Armv7 => "armv7",
            Flavour::Armv6 => "armv6",
            Flavour::Arm32 => "arm",
        }
    }

    /// Rust target triples `cross/build` builds it for, preferred first (glibc builds
    /// are smaller; static musl ones run anywhere).
    pub fn triples(self) -> &'static [&'static str] {
        match self {
            Flavour::Arm64 => &["aarch64-unknown-linux-gnu", "aarch64-unknown-linux-musl"],
            Flavour::Armv7 => &[
                "armv7-unknown-linux-gnueabihf",
                "armv7-unknown-linux-musleabihf",
            ],
            Flavour::Armv6 => &[
                "arm-unknown-linux-gnueabihf",
                "arm-unknown-linux-musleabihf",
            ],
            Flavour::Arm32 => &[],
        }
    }

    pub fn is_64bit(self) -> bool {
        self == Flavour::Arm64
    }
}

/// Which binaries an image of `arch` needs: every group must be met by one of its
/// flavours (the first found wins); `optional` are added when found.
pub struct Needs {
    pub groups: Vec<Vec<Flavour>>,
    pub optional: Vec<Flavour>,
}

pub fn needs(arch: ImageArch) -> Needs {
    match arch {
        ImageArch::Arm64 => Needs {
            groups: vec![vec![Flavour::Arm64]],
            optional: vec![],
        },
        // Every board must find an agent: ARMv6 ones need the ARMv6 build; an ARMv7
        // build beside it is faster on the others, so it is taken when there is one.
        ImageArch::Armhf { armv6_boards: true } => Needs {
            groups: vec![vec![Flavour::Armv6]],
            optional: vec![Flavour::Armv7],
        },
        // ARMv7 and later boards run an ARMv6 build too.
        ImageArch::Armhf {
            armv6_boards: false,
        } => Needs {
            groups: vec![vec![Flavour::Armv7, Flavour::Armv6]],
            optional: vec![],
        },
    }
}

/// What a needed agent binary was looked for as, when none was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The triples any of which would do, preferred first.
    pub triples: Vec<&'static str>,
}

/// Picks the agent binaries for `arch` with `find` (triple → the file, if there is
/// one). Returns every flavour chosen with its file, or what is missing.
pub fn select(
    arch: ImageArch,
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Vec<(Flavour, PathBuf)>, Missing> {
    let find_flavour = |f: Flavour| f.triples().iter().find_map(|t| find(t));
    let needs = needs(arch);
    let mut chosen = Vec::new();
    for group in &needs.groups {
        match group
            .iter()
            .find_map(|&f| find_flavour(f).map(|path| (f, path)))
        {
            Some(hit) => chosen.push(hit),
            None => {
                return Err(Missing {
                    triples: group.iter().flat_map(|f| f.triples().to_vec()).collect(),
                })
            }
        }
    }
    for &f in &needs.optional {
        if let Some(path) = find_flavour(f) {
            chosen.push((f, path));
        }
    }
    chosen.sort();
    Ok(chosen)
}

/// The machine an ELF file is built for, from its first 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfMachine {
    Aarch64,
    Arm32,
    /// Anything else: class (1 = 32-bit, 2 = 64-bit) and `e_machine`.
    Other {
        class: u8,
        machine: u16,
    },
}

impl std::fmt::Display for ElfMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElfMachine::Aarch64 => f.write_str("64-bit ARM (aarch64)"),
            ElfMachine::Arm32 => f.write_str("32-bit ARM"),
            ElfMachine::Other { machine: 62, .. } => f.write_str("x86_64"),
            ElfMachine::Other { class, machine } => {
                write!(f, "ELF class {class}, machine {machine}")
            }
        }
    }
}

const EM_ARM: u16 = 40;
const EM_AARCH64: u16 = 183;

/// `None` when `header` is not a little-endian ELF file.
pub fn elf_machine(header: &[u8]) -> Option<ElfMachine> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" || header[5] != 1 {
        return None;
    }
    let class = header[4];
    let machine = u16::from_le_bytes([header[18], header[19]]);
    Some(match (class, machine) {
        (2, EM_AARCH64) => ElfMachine::Aarch64,
        (1, EM_ARM) => ElfMachine::Arm32,
        _ => ElfMachine::Other { class, machine },
    })
}

/// Whether a binary for `machine` runs as agent flavour `flavour`.
pub fn fits(flavour: Flavour, machine: ElfMachine) -> bool {
    match machine {
        ElfMachine::Aarch64 => flavour.is_64bit(),
        ElfMachine::Arm32 => !flavour.is_64bit(),
        ElfMachine::Other { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn raspberry_pi_os_images() {
        // Bookworm/Trixie 64-bit.
        let arm64 = names(&[
            "bootcode.bin",
            "kernel8.img",
            "kernel_2712.img",
            "config.txt",
        ]);
        assert_eq!(detect(&arm64, "arm_64bit=1\n"), Some(ImageArch::Arm64));
        // Bookworm 32-bit: 64-bit kernel for Pi 4/5, but an armhf userland.
        let armhf = names(&["KERNEL.IMG", "kernel7.img", "kernel7l.img", "kernel8.img"]);
        assert_eq!(
            detect(&armhf, ""),
            Some(ImageArch::Armhf { armv6_boards: true })
        );
        let armv7 = names(&["kernel7.img", "kernel7l.img"]);
        assert_eq!(
            detect(&armv7, "arm_64bit=1"),
            Some(ImageArch::Armhf {
                armv6_boards: false
            })
        );
        assert_eq!(detect(&names(&["start.elf", "config.txt"]), ""), None);
    }

    #[test]
    fn custom_kernel_goes_by_arm_64bit() {
        let files = names(&["Image", "config.txt"]);
        assert_eq!(
            detect(&files, "# x\nkernel=Image\narm_64bit=1\n"),
            Some(ImageArch::Arm64)
        );
        assert_eq!(
            detect(&files, "kernel=Image\n"),
            Some(ImageArch::Armhf { armv6_boards: true })
        );
        // A filter section's settings are not the common ones.
        assert_eq!(
            detect(&files, "kernel=Image\n[pi4]\narm_64bit=1\n[all]\n"),
            Some(ImageArch::Armhf { armv6_boards: true })
        );
        assert_eq!(detect(&files, "kernel=missing.img\narm_64bit=1\n"), None);
    }

    #[test]
    fn agents_are_chosen_per_board_generation() {
        let have = |triples: &'static [&'static str]| {
            move |t: &str| triples.contains(&t).then(|| PathBuf::from(t))
        };
        let all = have(&[
            "aarch64-unknown-linux-musl",
            "armv7-unknown-linux-gnueabihf",
            "arm-unknown-linux-gnueabihf",
        ]);
        let picked = select(ImageArch::Arm64, all).unwrap();
        assert_eq!(
            picked,
            vec![(Flavour::Arm64, "aarch64-unknown-linux-musl".into())]
        );
        let picked = select(ImageArch::Armhf { armv6_boards: true }, all).unwrap();
        assert_eq!(
            picked.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![Flavour::Armv7, Flavour::Armv6]
        );
        // ARMv7-only image: the v7 build is enough, and a v6 build does instead.
        let picked = select(
            ImageArch::Armhf {
                armv6_boards: false,
            },
            all,
        )
        .unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].0, Flavour::Armv7);
        let v6 = have(&["arm-unknown-linux-musleabihf"]);
        assert_eq!(
            select(
                ImageArch::Armhf {
                    armv6_boards: false
                },
                v6
            )
            .unwrap()[0]
                .0,
            Flavour::Armv6
        );
        // An image that boots a Pi Zero needs the ARMv6 build, not only the v7 one.
        let v7 = have(&["armv7-unknown-linux-gnueabihf"]);
        let missing = select(ImageArch::Armhf { armv6_boards: true }, v7).unwrap_err();
        assert_eq!(
            missing.triples,
            vec![
                "arm-unknown-linux-gnueabihf",
                "arm-unknown-linux-musleabihf"
            ]
        );
    }

    #[test]
    fn elf_headers() {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(elf_machine(&h), Some(ElfMachine::Aarch64));
        assert!(fits(Flavour::Arm64, ElfMachine::Aarch64));
        assert!(!fits(Flavour::Armv6, ElfMachine::Aarch64));
        h[4] = 1;
        h[18..20].copy_from_slice(&40u16.to_le_bytes());
        assert_eq!(elf_machine(&h), Some(ElfMachine::Arm32));
        h[4] = 2;
        h[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert_eq!(elf_machine(&h).unwrap().to_string(), "x86_64");
        assert_eq!(elf_machine(b"#!/bin/sh\n echo hello there"), None);
    }
}
