//! `punnet image build` against synthetic Raspberry Pi OS images made with the real
//! disk tools (sfdisk, mkfs.vfat, mkfs.ext4, mtools): an MBR, a FAT32 boot partition
//! with cmdline.txt, config.txt and kernels that mark the architecture, an ext4 root.
//! The results are checked with the same tools (`fsck.vfat -n`, `mdir`, `mtype`,
//! `sfdisk --dump`). No root needed: nothing is mounted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1024 * 1024;
const BOOT_START: u64 = 2048; // sectors
const TOKEN: &str = "0123456789ab.abcdefghijklmnop0123";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (apt-get install dosfstools mtools fdisk e2fsprogs)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Layout {
    boot_mib: u64,
    /// Files on the boot partition: name → contents.
    boot: Vec<(&'static str, Vec<u8>)>,
    /// No FAT boot partition at all: only the ext4 root.
    root_only: bool,
}

/// A Raspberry Pi OS image: partition 1 FAT32 (type 0x0c) at 1 MiB, partition 2
/// ext4 (16 MiB) after it.
fn make_image(dir: &Path, name: &str, layout: &Layout) -> PathBuf {
    let img = dir.join(name);
    let boot_sectors = layout.boot_mib * MIB / 512;
    let root_start = BOOT_START + boot_sectors;
    let root_sectors = 16 * MIB / 512;
    let total = (root_start + root_sectors) * 512;
    std::fs::File::create(&img).unwrap().set_len(total).unwrap();
    let table = if layout.root_only {
        format!(
            "label: dos\nlabel-id: 0x4e639091\nstart={root_start}, size={root_sectors}, type=83\n"
        )
    } else {
        format!("label: dos\nlabel-id: 0x4e639091\nstart={BOOT_START}, size={boot_sectors}, type=c\nstart={root_start}, size={root_sectors}, type=83\n")
    };
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk (apt-get install fdisk)");
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "rootfs", "-E"])
        .arg(format!("offset={}", root_start * 512))
        .arg(&img)
        .arg(format!("{}k", root_sectors / 2)));
    if !layout.root_only {
        run(Command::new("mkfs.vfat")
            .args(["-F", "32", "-s", "1", "-n", "bootfs", "--offset"])
            .arg(BOOT_START.to_string())
            .arg(&img)
            .arg((boot_sectors / 2).to_string()));
        let staging = dir.join(format!("{name}.files"));
        std::fs::create_dir_all(&staging).unwrap();
        for (file, data) in &layout.boot {
            let src = staging.join(file);
            std::fs::write(&src, data).unwrap();
            run(Command::new("mcopy")
                .arg("-i")
                .arg(fat(&img))
                .arg(&src)
                .arg(format!("::/{file}")));
        }
    }
    img
}

/// mtools' name for the boot partition of `img`.
fn fat(img: &Path) -> String {
    format!("{}@@{}", img.display(), BOOT_START * 512)
}

fn mtype(img: &Path, file: &str) -> String {
    let out = run(Command::new("mtype")
        .arg("-i")
        .arg(fat(img))
        .arg(format!("::/{file}")));
    String::from_utf8(out.stdout).unwrap()
}

fn mdir(img: &Path, dir: &str) -> Vec<String> {
    let out = run(Command::new("mdir")
        .args(["-b", "-i"])
        .arg(fat(img))
        .arg(format!("::/{dir}")));
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            l.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect();
    names.sort();
    names
}

/// The payload's files in the boot partition's top directory.
fn payload(img: &Path) -> Vec<String> {
    mdir(img, "")
        .into_iter()
        .filter(|f| f.starts_with("punnet-"))
        .collect()
}

/// Reads `len` bytes of `img` from `offset`.
fn bytes(img: &Path, offset: u64, len: u64) -> Vec<u8> {
    let data = std::fs::read(img).unwrap();
    data[offset as usize..(offset + len) as usize].to_vec()
}

fn fsck(img: &Path, boot_mib: u64, dir: &Path) {
    let part = dir.join("boot-partition.img");
    std::fs::write(&part, bytes(img, BOOT_START * 512, boot_mib * MIB)).unwrap();
    run(Command::new("fsck.vfat").arg("-n").arg(&part));
    std::fs::remove_file(part).unwrap();
}

/// `sfdisk --dump` without the file's name, to compare two images' tables.
fn table(img: &Path) -> String {
    let out = run(Command::new("sfdisk").arg("--dump").arg(img));
    String::from_utf8(out.stdout)
        .unwrap()
        .replace(&img.display().to_string(), "IMG")
}

/// Stand-in for an agent binary: an ELF header for the machine, then filler.
fn fake_elf(path: &Path, bits64: bool, size: usize) {
    let mut data = vec![0u8; size];
    data[..4].copy_from_slice(b"\x7fELF");
    data[4] = if bits64 { 2 } else { 1 };
    data[5] = 1;
    let machine: u16 = if bits64 { 183 } else { 40 };
    data[18..20].copy_from_slice(&machine.to_le_bytes());
    data[100..116].copy_from_slice(b"punnet-agent-abc");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn punnet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_punnet"))
        .current_dir(dir)
        .env_remove("PUNNET_TOKEN")
        .env_remove("PUNNET_CA")
        .env("HOME", dir)
        .arg("image")
        .arg("build")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "punnet image build failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(out: Output) -> String {
    assert!(!out.status.success(), "expected a refusal");
    String::from_utf8(out.stderr).unwrap()
}

const CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet splash\n";

fn bookworm64() -> Layout {
    Layout {
        boot_mib: 40,
        boot: vec![
            ("cmdline.txt", CMDLINE.into()),
            (
                "config.txt",
                "# /boot/firmware/overlays/README\ndtparam=audio=on\narm_64bit=1\n".into(),
            ),
            ("kernel8.img", vec![1; 4096]),
            ("kernel_2712.img", vec![2; 4096]),
            ("start4.elf", vec![3; 1024]),
            ("bcm2711-rpi-4-b.dtb", vec![4; 1024]),
        ],
        root_only: false,
    }
}

fn cgroup_flags_once(line: &str) {
    assert_eq!(line.lines().count(), 1, "{line:?}");
    assert!(line.ends_with('\n'));
    for flag in ["cgroup_enable=memory", "cgroup_memory=1"] {
        assert_eq!(
            line.split_whitespace().filter(|a| *a == flag).count(),
            1,
            "{line}"
        );
    }
}

#[test]
fn bookworm_arm64_image_with_firstrun_builds_and_rebuilds_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = make_image(dir, "raspios-arm64.img", &bookworm64());
    let pristine = std::fs::read(&base).unwrap();
    let base_table = table(&base);
    fake_elf(
        &dir.join("dist/aarch64-unknown-linux-gnu/punnet-agent"),
        true,
        300_000,
    );
    std::fs::write(
        dir.join("id_ed25519.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO me@laptop\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("busybox.tar"), vec![7u8; 200_000]).unwrap();
    let args = |base: &str, out: &str| -> Vec<String> {
        [
            "--base",
            base,
            "--out",
            out,
            "--controller",
            "mqtts://fleet.lan:8883",
            "--token",
            TOKEN,
            "--ca",
            "ca.pem",
            "--label",
            "site=barn",
            "--label",
            "zone=north",
            "--wifi-ssid",
            "Barn",
            "--wifi-psk",
            "correct horse",
            "--wifi-country",
            "gb",
            "--ssh-key",
            "id_ed25519.pub",
            "--preload",
            "busybox.tar",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args("raspios-arm64.img", "fleet.img");
    let report = ok(punnet(
        dir,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert!(report.contains("64-bit (arm64)"), "{report}");
    assert!(report.contains("firstrun.sh"), "{report}");
    let out = dir.join("fleet.img");

    // The base is untouched; the copy differs only inside the boot partition.
    assert_eq!(
        std::fs::read(&base).unwrap(),
        pristine,
        "the base image changed"
    );
    assert_eq!(table(&out), base_table);
    let root_at = (BOOT_START + 40 * MIB / 512) * 512;
    assert_eq!(
        bytes(&out, 0, BOOT_START * 512),
        bytes(&base, 0, BOOT_START * 512)
    );
    assert_eq!(
        bytes(&out, root_at, 16 * MIB),
        bytes(&base, root_at, 16 * MIB)
    );
    fsck(&out, 40, dir);

    assert_eq!(
        payload(&out),
        vec![
            "punnet-agent-arm64",
            "punnet-agent.service",
            "punnet-agent.yaml",
            "punnet-ca.pem",
            "punnet-preload-busybox.tar",
            "punnet-setup.sh"
        ]
    );
    let agent = run(Command::new("mtype")
        .arg("-i")
        .arg(fat(&out))
        .arg("::/punnet-agent-arm64"))
    .stdout;
    assert_eq!(
        agent,
        std::fs::read(dir.join("dist/aarch64-unknown-linux-gnu/punnet-agent")).unwrap()
    );

    let line = mtype(&out, "cmdline.txt");
    cgroup_flags_once(&line);
    assert!(line.starts_with(CMDLINE.trim_end()), "{line}");
    assert!(line.contains(" cfg80211.ieee80211_regdom=GB "), "{line}");
    assert!(line.trim_end().ends_with("systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"), "{line}");

    // The agent reads its config as written (plus the name setup.sh adds).
    let yaml = mtype(&out, "punnet-agent.yaml");
    let file =
        punnet_agent::config::ConfigFile::parse(&format!("{yaml}name: pi-1234abcd\n")).unwrap();
    let mut config = punnet_agent::config::AgentConfig::new("x");
    config.apply_file(&file).unwrap();
    config.validate().unwrap();
    assert_eq!(config.node_name, "pi-1234abcd");
    assert_eq!(config.broker, "mqtts://fleet.lan:8883");
    assert_eq!(config.token.as_deref(), Some(TOKEN));
    assert_eq!(config.ca, Some(PathBuf::from("/etc/punnet/ca.pem")));
    assert_eq!(config.labels.get("zone").map(String::as_str), Some("north"));

    // The scripts parse; firstrun.sh carries the key and the WPA key, not the passphrase.
    let firstrun = mtype(&out, "firstrun.sh");
    let setup = mtype(&out, "punnet-setup.sh");
    std::fs::write(dir.join("firstrun.sh"), &firstrun).unwrap();
    std::fs::write(dir.join("setup.sh"), &setup).unwrap();
    run(Command::new("bash").arg("-n").arg(dir.join("firstrun.sh")));
    run(Command::new("sh").arg("-n").arg(dir.join("setup.sh")));
    assert!(firstrun.contains("enable_ssh -k 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO me@laptop'"));
    assert!(firstrun.contains("set_wlan 'Barn' '"));
    assert!(!firstrun.contains("correct horse"));
    assert!(setup.contains("PREFIX='pi-'"));

    // Building from the built image changes nothing twice.
    let a = args("fleet.img", "fleet2.img");
    ok(punnet(
        dir,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let again = dir.join("fleet2.img");
    assert_eq!(mtype(&again, "cmdline.txt"), line);
    assert_eq!(payload(&again), payload(&out));
    assert_eq!(table(&again), base_table);
    fsck(&again, 40, dir);
}

#[test]
fn trixie_armhf_image_from_xz_gets_cloud_init_and_both_32bit_agents() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layout = Layout {
        boot_mib: 40,
        boot: vec![
            ("cmdline.txt", CMDLINE.into()),
            ("config.txt", "# /boot/firmware/overlays/README\n".into()),
            ("kernel.img", vec![1; 2048]),
            ("kernel7.img", vec![1; 2048]),
            ("kernel7l.img", vec![1; 2048]),
            ("kernel8.img", vec![1; 2048]),
            ("user-data", "#cloud-config\n".into()),
            ("meta-data", "instance-id: rpios-image\n".into()),
            ("network-config", "network:\n  version: 2\n".into()),
        ],
        root_only: false,
    };
    let raw = make_image(dir, "raspios-armhf.img", &layout);
    run(Command::new("xz").args(["-1", "-k", "-T1"]).arg(&raw));
    let xz = dir.join("raspios-armhf.img.xz");
    let pristine = std::fs::read(&xz).unwrap();
    fake_elf(
        &dir.join("dist/arm-unknown-linux-gnueabihf/punnet-agent"),
        false,
        100_000,
    );
    fake_elf(
        &dir.join("dist/armv7-unknown-linux-musleabihf/punnet-agent"),
        false,
        120_000,
    );
    let report = ok(punnet(
        dir,
        &[
            "--base",
            "raspios-armhf.img.xz",
            "--out",
            "fleet.img",
            "--controller",
            "mqtts://10.0.0.2",
            "--token",
            TOKEN,
            "--hostname-prefix",
            "barn-",
        ],
    ));
    assert!(
        report.contains("32-bit (armhf, including ARMv6 boards"),
        "{report}"
    );
    assert!(report.contains("decompressed"), "{report}");
    let out = dir.join("fleet.img");
    assert_eq!(std::fs::read(&xz).unwrap(), pristine);
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        std::fs::metadata(&raw).unwrap().len()
    );
    assert_eq!(table(&out), table(&raw));
    let root_at = (BOOT_START + 40 * MIB / 512) * 512;
    assert_eq!(
        bytes(&out, root_at, 16 * MIB),
        bytes(&raw, root_at, 16 * MIB)
    );
    fsck(&out, 40, dir);

    let files = payload(&out);
    assert!(
        files.contains(&"punnet-agent-armv6".to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&"punnet-agent-armv7".to_string()),
        "{files:?}"
    );
    let line = mtype(&out, "cmdline.txt");
    cgroup_flags_once(&line);
    assert!(!line.contains("systemd.run"), "{line}");
    let user_data = mtype(&out, "user-data");
    assert!(user_data.starts_with("#cloud-config\n"), "{user_data}");
    assert!(
        user_data.contains("/boot/firmware/punnet-setup.sh --start"),
        "{user_data}"
    );
    assert!(mtype(&out, "meta-data").starts_with("instance-id: punnet-"));
    // No Wi-Fi asked for: the image's own network-config stays.
    assert_eq!(mtype(&out, "network-config"), "network:\n  version: 2\n");
    assert!(!mdir(&out, "").iter().any(|f| f == "firstrun.sh"));
    assert!(mtype(&out, "punnet-setup.sh").contains("PREFIX='barn-'"));
}

#[test]
fn refusals_say_what_is_wrong_and_leave_no_image_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = make_image(dir, "raspios-arm64.img", &bookworm64());
    let pristine = std::fs::read(&base).unwrap();
    let common = [
        "--base",
        "raspios-arm64.img",
        "--out",
        "fleet.img",
        "--controller",
        "mqtts://fleet.lan",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        common.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let attempt = |args: Vec<String>| {
        let out = punnet(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = refused(out);
        assert!(
            !dir.join("fleet.img").exists(),
            "a refused build left fleet.img: {err}"
        );
        err
    };

    // No token (and $PUNNET_TOKEN is never used).
    let err = attempt(with(&[]));
    assert!(err.contains("--token is required"), "{err}");

    // No agent built for the image's architecture.
    let err = attempt(with(&["--token", TOKEN, "--dist", "dist"]));
    assert!(
        err.contains("no punnet-agent for this 64-bit (arm64) image"),
        "{err}"
    );
    assert!(err.contains("aarch64-unknown-linux-gnu/punnet-agent or aarch64-unknown-linux-musl/punnet-agent in dist"), "{err}");
    assert!(
        err.contains("`cross/build aarch64-unknown-linux-gnu`"),
        "{err}"
    );

    // An agent for another machine.
    let host = std::env::current_exe().unwrap();
    let err = attempt(with(&["--token", TOKEN, "--agent", host.to_str().unwrap()]));
    assert!(
        err.contains("it is a x86_64 program, but this image is 64-bit (arm64)"),
        "{err}"
    );

    // A boot partition too small for the payload.
    fake_elf(
        &dir.join("dist/aarch64-unknown-linux-gnu/punnet-agent"),
        true,
        100_000,
    );
    std::fs::write(dir.join("big.tar"), vec![1u8; 45 * MIB as usize]).unwrap();
    let err = attempt(with(&["--token", TOKEN, "--preload", "big.tar"]));
    assert!(
        err.contains("the boot partition (partition 1, 40.0 MiB) has 39."),
        "{err}"
    );
    assert!(
        err.contains("but the payload needs 45.1 MiB (agent 98.0 KiB, preloaded images 45.0 MiB"),
        "{err}"
    );

    // An image without a Raspberry Pi boot partition: only ext4, or FAT without kernels.
    make_image(
        dir,
        "debian.img",
        &Layout {
            boot_mib: 40,
            boot: vec![],
            root_only: true,
        },
    );
    let err = attempt(vec![
        "--base".into(),
        "debian.img".into(),
        "--out".into(),
        "fleet.img".into(),
        "--controller".into(),
        "mqtts://fleet.lan".into(),
        "--token".into(),
        TOKEN.into(),
    ]);
    assert!(err.contains("not a Raspberry Pi OS image: no Raspberry Pi boot partition: no FAT partition among partitions 1 (type 0x83)"), "{err}");
    make_image(
        dir,
        "usb.img",
        &Layout {
            boot_mib: 40,
            boot: vec![("cmdline.txt", CMDLINE.into()), ("config.txt", "".into())],
            root_only: false,
        },
    );
    let err = attempt(vec![
        "--base".into(),
        "usb.img".into(),
        "--out".into(),
        "fleet.img".into(),
        "--controller".into(),
        "mqtts://fleet.lan".into(),
        "--token".into(),
        TOKEN.into(),
    ]);
    assert!(
        err.contains("partition 1 (FAT) has no Raspberry Pi kernel"),
        "{err}"
    );

    // A 32-bit image that also boots ARMv6 boards needs the ARMv6 build.
    let mut armhf = bookworm64();
    armhf.boot.push(("kernel.img", vec![1; 100]));
    make_image(dir, "armhf.img", &armhf);
    fake_elf(
        &dir.join("dist/armv7-unknown-linux-gnueabihf/punnet-agent"),
        false,
        1000,
    );
    // --dist: without it the checkout's own dist/ (beside target/) is searched too, and
    // after a cross/build or cross/check it holds a real ARMv6 agent.
    let err = attempt(vec![
        "--base".into(),
        "armhf.img".into(),
        "--out".into(),
        "fleet.img".into(),
        "--controller".into(),
        "mqtts://fleet.lan".into(),
        "--token".into(),
        TOKEN.into(),
        "--dist".into(),
        "dist".into(),
    ]);
    assert!(
        err.contains("`cross/build arm-unknown-linux-gnueabihf`"),
        "{err}"
    );

    // Writing over the base is refused.
    let err = refused(punnet(
        dir,
        &[
            "--base",
            "raspios-arm64.img",
            "--out",
            "./raspios-arm64.img",
            "--controller",
            "mqtts://fleet.lan",
            "--token",
            TOKEN,
        ],
    ));
    assert!(err.contains("is the base image"), "{err}");
    assert_eq!(
        std::fs::read(&base).unwrap(),
        pristine,
        "a refusal changed the base"
    );
}
