#!/usr/bin/env bash
# An emulated Raspberry Pi, end to end (run by hand, not in CI; as root; several GB in
# $PUNNET_EMULATE_DIR, default /var/tmp/punnet-emulate; long on a small machine):
#   1. debootstraps a Debian arm64 root file system (qemu-user-static), installs
#      Debian's arm64 kernel in it with a small initramfs (virtio and ext4 are modules),
#      and lays it out like Raspberry Pi OS: a 512 MiB FAT32 boot partition with
#      config.txt, cmdline.txt, kernel8.img and initramfs8, mounted at /boot/firmware;
#      an ext4 root; PARTUUIDs in cmdline.txt and fstab;
#   2. takes an aarch64 agent from dist/ (cross/build), $PUNNET_AGENT, or builds one;
#   3. starts a controller on the host (loopback; the guest reaches it as 10.0.2.2);
#   4. runs `punnet image build` with a bootstrap token, the controller's CA and an
#      arm64 busybox archive to preload;
#   5. boots the image with qemu-system-aarch64 (virt machine, direct kernel boot with the
#      image's own kernel, initramfs and cmdline.txt, as the Pi firmware would): the
#      first boot runs firstrun.sh and powers off (the Pi reboots; qemu is started again,
#      re-reading cmdline.txt as the firmware does), the second boot starts the agent;
#   6. shows the board enrolling, Ready, and running a DaemonSet Pod.
# Each step prints how long it took; the root file system and the agent are kept for
# the next run. The guest's console is in $PUNNET_EMULATE_DIR/console-*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
source scripts/lib.sh

work=${PUNNET_EMULATE_DIR:-/var/tmp/punnet-emulate}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
http_port=${PUNNET_EMULATE_HTTP_PORT:-16443}
mqtt_port=${PUNNET_EMULATE_MQTT_PORT:-18883}
boot_timeout=${PUNNET_EMULATE_TIMEOUT:-1500}
mkdir -p "$work"
[ "$(id -u)" -eq 0 ] || { echo "emulate.sh: run as root (debootstrap, chroot)" >&2; exit 1; }

timings=()
step_started=0
qemu_pid=""
# CPU seconds (user+sys) so far of this shell, the children it has reaped and the
# running qemu, into $cpu: steadier than wall time on a busy machine. Not called as
# $(...): `times` in a subshell reports the subshell's own (empty) usage.
cpu_now() {
    times >"$work/.times"
    local live=0
    if [ -n "$qemu_pid" ] && [ -r "/proc/$qemu_pid/stat" ]; then
        live=$(awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$qemu_pid/stat")
    fi
    cpu=$(awk -v live="$live" '{ for (i = 1; i <= NF; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } }
        END { printf "%.0f", s + live }' "$work/.times")
}
step() {
    finish_step
    step_name=$1
    step_started=$(date +%s)
    cpu_now
    step_cpu=$cpu
    echo "==> $step_name"
}
finish_step() {
    if [ "$step_started" -ne 0 ]; then
        cpu_now
        local took=$(($(date +%s) - step_started)) used=$((cpu - step_cpu))
        timings+=("$(printf '%-52s %5ss  %5ss CPU' "$step_name" "$took" "$used")")
        echo "    ($step_name: ${took}s, ${used}s CPU)"
        step_started=0
    fi
}
report() {
    finish_step
    echo
    echo "==> timings"
    printf '    %-52s %6s  %9s\n' step wall "user+sys"
    printf '    %s\n' "${timings[@]}"
}
# Bind mounts for the chroot steps, undone on any exit (a failed step must not leave
# /dev and /sys mounted inside $work).
chroot_mounts=()
chroot_mount() {
    mount "$@" && chroot_mounts+=("${@: -1}")
}
chroot_unmount() {
    local m
    for m in "${chroot_mounts[@]}"; do
        umount -R "$m" 2>/dev/null || true
    done
    chroot_mounts=()
}
pids=()
cleanup() {
    # Before qemu is stopped: the last step's CPU counts the running board.
    finish_step
    chroot_unmount
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    report
}
trap cleanup EXIT

step "packages"
ensure_packages debootstrap qemu-user-static binfmt-support qemu-system-arm dosfstools mtools fdisk e2fsprogs umoci skopeo busybox-static
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "emulate.sh: no binfmt handler for aarch64 (qemu-user-static)" >&2; exit 1; }

rootfs=$work/rootfs
if [ -e "$rootfs/.punnet-done" ]; then
    finish_step
    timings+=("debootstrap: kept from an earlier run ($rootfs; delete it to redo)")
else
    step "debootstrap bookworm arm64 (qemu-user)"
    rm -rf "$rootfs"
    # No kernel here: its postinst would build the initramfs with MODULES=most (every
    # storage and file system driver, through qemu-user, one fork per file), which
    # is what never finished before. The next step installs it with a short list.
    nice -n 19 debootstrap --arch=arm64 --variant=minbase \
        --include=systemd-sysv,udev,kmod,iproute2,procps,busybox-static,libseccomp2,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log"; exit 1; }
    touch "$rootfs/.punnet-done"
fi

if [ -e "$rootfs/.punnet-kernel" ]; then
    finish_step
    timings+=("kernel and initramfs: kept from an earlier run")
else
    step "kernel and initramfs (qemu-user)"
    # Debian's arm64 kernel has virtio_pci, virtio_blk and ext4 as modules (=m in its
    # config), so the root file system needs an initramfs; a listed set of modules
    # keeps it to ~7 MB and a couple of minutes under qemu-user.
    mkdir -p "$rootfs/etc/initramfs-tools/conf.d"
    printf '# emulate.sh: the virt machine needs only these, see /etc/initramfs-tools/modules\nMODULES=list\nCOMPRESS=gzip\n' \
        >"$rootfs/etc/initramfs-tools/conf.d/punnet-emulate.conf"
    printf '# emulate.sh: the root disk of the qemu virt machine\nvirtio_pci\nvirtio_blk\next4\n' \
        >"$rootfs/etc/initramfs-tools/modules"
    chroot_mount -t proc proc "$rootfs/proc"
    chroot_mount --rbind /sys "$rootfs/sys"
    chroot_mount --rbind /dev "$rootfs/dev"
    if ! timeout 1800 nice -n 19 chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold \
        linux-image-arm64 initramfs-tools >"$work/kernel.log" 2>&1; then
        chroot_unmount
        tail -20 "$work/kernel.log"
        echo "emulate.sh: installing the kernel failed or took over 30 min; see $work/kernel.log" >&2
        exit 1
    fi
    chroot "$rootfs" apt-get clean
    chroot_unmount
    touch "$rootfs/.punnet-kernel"
fi

step "lay out the root file system like Raspberry Pi OS"
# A fixed disk id, as Raspberry Pi OS images have one: the PARTUUIDs are <id>-01, -02.
disk_id=4e639091
cat >"$rootfs/etc/fstab" <<EOF
proc                  /proc           proc  defaults          0 0
PARTUUID=$disk_id-01  /boot/firmware  vfat  defaults          0 2
PARTUUID=$disk_id-02  /               ext4  defaults,noatime  0 1
EOF
mkdir -p "$rootfs/boot/firmware"
echo raspberrypi >"$rootfs/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n' >"$rootfs/etc/hosts"
# DHCP on the virtio NIC; network-online.target waits for it.
mkdir -p "$rootfs/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$rootfs/etc/systemd/network/20-wired.network"
chroot "$rootfs" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service >/dev/null 2>&1
# The journal on the serial console too, so console-*.log shows the agent's log.
mkdir -p "$rootfs/etc/systemd/journald.conf.d"
printf '[Journal]\nForwardToConsole=yes\nTTYPath=/dev/ttyAMA0\nMaxLevelConsole=info\n' \
    >"$rootfs/etc/systemd/journald.conf.d/emulate-console.conf"
# A root shell on the serial console, to look around in console-*.log.
mkdir -p "$rootfs/etc/systemd/system/serial-getty@ttyAMA0.service.d"
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear %%I 115200 linux\n' \
    >"$rootfs/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf"
# Fresh like a flashed card: no agent, no machine id, no earlier setup.
rm -f "$rootfs/usr/local/bin/punnet-agent" "$rootfs/etc/systemd/system/punnet-agent.service" \
    "$rootfs/etc/systemd/system/multi-user.target.wants/punnet-agent.service" "$rootfs/var/log/punnet-setup.log"
rm -rf "$rootfs/etc/punnet" "$rootfs/var/lib/punnet-agent"
: >"$rootfs/etc/machine-id"
kernel=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -1)

step "aarch64 agent"
agent=${PUNNET_AGENT:-}
for candidate in dist/aarch64-unknown-linux-gnu/punnet-agent dist/aarch64-unknown-linux-musl/punnet-agent "$work/punnet-agent"; do
    if [ -z "$agent" ] && [ -f "$candidate" ]; then
        agent=$candidate
    fi
done
if [ -z "$agent" ]; then
    echo "    none in dist/ (cross/build aarch64-unknown-linux-gnu makes one): building it"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64
        apt-get update -qq
    fi
    ensure_packages gcc-aarch64-linux-gnu libseccomp-dev:arm64
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_SYSROOT_DIR=/ \
        PKG_CONFIG_PATH=/usr/lib/aarch64-linux-gnu/pkgconfig \
        nice -n 10 cargo build --release --target aarch64-unknown-linux-gnu -p punnet-agent
    cp target/aarch64-unknown-linux-gnu/release/punnet-agent "$work/punnet-agent"
    agent=$work/punnet-agent
fi
echo "    $agent ($(du -h "$agent" | cut -f1))"

step "host binaries (punnet, punnet-controller)"
if [ -x target/release/punnet ] && [ -x target/release/punnet-controller ]; then
    bin=$repo/target/release
else
    cargo build -q -p punnet-cli -p punnet-controller
    bin=$repo/target/debug
fi

step "arm64 busybox image to preload"
preload=$work/busybox-arm64.tar
if [ ! -f "$preload" ]; then
    oci=$(mktemp -d)
    mkdir -p "$oci/root/bin" "$oci/root/etc" "$oci/root/tmp" "$oci/root/proc" "$oci/root/sys" "$oci/root/dev"
    cp "$rootfs/bin/busybox" "$oci/root/bin/busybox"
    for applet in sh cat echo hostname sleep date uname ls; do ln -s busybox "$oci/root/bin/$applet"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$oci/root/etc/passwd"
    tar --sort=name --mtime=@1 --numeric-owner --owner=0 --group=0 -C "$oci/root" -cf "$oci/layer.tar" .
    umoci init --layout "$oci/layout"
    umoci new --image "$oci/layout:latest"
    umoci raw add-layer --image "$oci/layout:latest" "$oci/layer.tar"
    umoci config --image "$oci/layout:latest" --architecture=arm64 --os=linux --config.cmd=/bin/sh \
        --config.env=PATH=/usr/sbin:/usr/bin:/sbin:/bin
    skopeo copy --quiet "oci:$oci/layout:latest" "oci-archive:$preload:busybox:arm64"
    rm -rf "$oci"
fi

step "base image (Raspberry Pi OS layout)"
base=$work/raspios-like.img
# 512 MiB, as Raspberry Pi OS has it since Bookworm (256 MiB is too few clusters for
# FAT32: mtools refuses it).
boot_mib=512
root_mib=$(( $(du -sm --exclude=./proc --exclude=./sys "$rootfs" | cut -f1) + 768 ))
boot_start=8192
root_start=$((boot_start + boot_mib * 2048))
rm -f "$base"
truncate -s $(( (root_start / 2048 + root_mib) * 1024 * 1024 )) "$base"
printf 'label: dos\nlabel-id: 0x%s\nstart=%s, size=%s, type=c\nstart=%s, type=83\n' \
    "$disk_id" "$boot_start" $((boot_mib * 2048)) "$root_start" | sfdisk --quiet "$base"
mkfs.vfat -F 32 -n bootfs --offset "$boot_start" "$base" $((boot_mib * 1024)) >/dev/null
boot="$base@@$((boot_start * 512))"
files=$(mktemp -d)
printf 'console=serial0,115200 console=tty1 root=PARTUUID=%s-02 rootfstype=ext4 fsck.repair=yes rootwait\n' "$disk_id" >"$files/cmdline.txt"
printf '# For more options and information see http://rptl.io/configtxt\n# Additional overlays and parameters are documented\n# /boot/firmware/overlays/README\n\narm_64bit=1\nauto_initramfs=1\n' >"$files/config.txt"
cp "$kernel" "$files/kernel8.img"
cp "$initrd" "$files/initramfs8"
mcopy -i "$boot" "$files/cmdline.txt" "$files/config.txt" "$files/kernel8.img" "$files/initramfs8" ::/
rm -rf "$files"
rootpart=$work/rootfs.ext4
rm -f "$rootpart"
mkfs.ext4 -q -F -L rootfs -d "$rootfs" -E root_owner=0:0 "$rootpart" "${root_mib}M"
dd if="$rootpart" of="$base" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
rm -f "$rootpart"

step "controller on the host"
cdata=$work/controller
rm -rf "$cdata"
mkdir -p "$cdata"
"$bin/punnet-controller" --data-dir "$cdata" --http "127.0.0.1:$http_port" \
    --mqtt "127.0.0.1:$mqtt_port" --mqtt5 off --tls-san 10.0.2.2 >"$work/controller.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [ -f "$cdata/punnet.yaml" ] && break
    sleep 0.2
done
export PUNNET_CONFIG=$cdata/punnet.yaml
punnet() { "$bin/punnet" "$@"; }
punnet version
token=$(punnet token create --uses 1 --ttl 2h --label site=qemu | head -1)

step "punnet image build"
fleet=$work/fleet.img
rm -f "$fleet"
punnet image build --base "$base" --out "$fleet" \
    --controller "mqtts://10.0.2.2:$mqtt_port" --ca "$cdata/ca.pem" --token "$token" \
    --hostname-prefix pi- --label emulated=qemu --preload "$preload" --agent "$agent"

cat >"$work/daemonset.yaml" <<'EOF'
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: hello
spec:
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      hostNetwork: true
      containers:
        - name: hello
          image: busybox:arm64
          imagePullPolicy: Never
          command: ["sh", "-c", "while true; do echo hello from $(hostname) on $(uname -m); sleep 10; done"]
EOF
punnet apply -f "$work/daemonset.yaml"

# Boots fleet.img with the kernel, initramfs and command line on its boot partition,
# as the Pi's firmware does at every boot.
boot_board() {
    local log=$1
    mtype -i "$fleet@@$((boot_start * 512))" ::/kernel8.img >"$work/kernel"
    mtype -i "$fleet@@$((boot_start * 512))" ::/initramfs8 >"$work/initrd"
    local cmdline
    cmdline=$(mtype -i "$fleet@@$((boot_start * 512))" ::/cmdline.txt | head -1 |
        sed -e 's/console=serial0,115200/console=ttyAMA0/' -e 's/console=tty1 //')
    echo "    cmdline: $cmdline"
    qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -no-reboot \
        -display none -serial "file:$log" -monitor none \
        -kernel "$work/kernel" -initrd "$work/initrd" -append "$cmdline" \
        -drive "file=$fleet,format=raw,if=virtio" \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= &
    qemu_pid=$!
    pids+=("$qemu_pid")
}

step "first boot: firstrun.sh (until the board powers off)"
boot_board "$work/console-1.log"
if ! timeout "$boot_timeout" tail --pid="$qemu_pid" -f /dev/null; then
    echo "emulate.sh: the first boot did not finish in ${boot_timeout}s; see $work/console-1.log" >&2
    exit 1
fi
# A qemu that could not start exits at once, as a finished first boot does: tell them
# apart by its status and by what firstrun.sh leaves behind.
qemu_status=0
wait "$qemu_pid" || qemu_status=$?
if [ "$qemu_status" -ne 0 ]; then
    echo "emulate.sh: qemu-system-aarch64 exited with status $qemu_status; see above and $work/console-1.log" >&2
    exit 1
fi
grep -a "punnet" "$work/console-1.log" | tail -5 || true
if mtype -i "$fleet@@$((boot_start * 512))" ::/cmdline.txt | grep -q 'systemd\.run='; then
    echo "emulate.sh: the board powered off but firstrun.sh did not finish (cmdline.txt still runs it); see $work/console-1.log" >&2
    exit 1
fi

step "second boot: the agent enrols"
boot_board "$work/console-2.log"
node=""
for _ in $(seq "$((boot_timeout / 5))"); do
    node=$(punnet get nodes -o name 2>/dev/null | sed -n 's|^node/||p' | grep '^pi-' | head -1 || true)
    [ -n "$node" ] && break
    kill -0 "$qemu_pid" 2>/dev/null || { echo "emulate.sh: the board stopped; see $work/console-2.log" >&2; exit 1; }
    sleep 5
done
[ -n "$node" ] || { echo "emulate.sh: no board enrolled in ${boot_timeout}s; see $work/console-2.log" >&2; exit 1; }
punnet get events 2>/dev/null | grep -i enrol || true

step "node $node Ready"
ready=""
for _ in $(seq "$((boot_timeout / 5))"); do
    if punnet get nodes 2>/dev/null | grep -q "^$node[[:space:]]\+Ready"; then
        ready=yes
        break
    fi
    kill -0 "$qemu_pid" 2>/dev/null || { echo "emulate.sh: the board stopped; see $work/console-2.log" >&2; exit 1; }
    sleep 5
done
punnet get nodes -o wide
[ -n "$ready" ] || { echo "emulate.sh: $node did not become Ready in ${boot_timeout}s; see $work/console-2.log" >&2; exit 1; }
punnet describe node "$node" | awk '/^Conditions:/ { on = 1; print; next } on && /^[^ ]/ { exit } on'

step "DaemonSet Pod on the board"
for _ in $(seq "$((boot_timeout / 5))"); do
    if punnet get pods -o wide 2>/dev/null | grep -q "Running.*$node"; then
        break
    fi
    sleep 5
done
punnet get pods -o wide
pod=$(punnet get pods -o name | head -1)
sleep 12
punnet logs "$pod" || true
punnet get pods -o wide | grep -q "Running" || { echo "emulate.sh: the Pod is not Running; see $work/console-2.log" >&2; exit 1; }
echo "==> the emulated board $node enrolled and runs $pod"
