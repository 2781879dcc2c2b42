#!/usr/bin/env bash
# Installs what Punnet's tests need (Debian packages) and runs the whole test suite:
# formatting, lints, unit tests and the root-only tests that run real containers,
# a real MQTT broker (embedded and Mosquitto) and real processes.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh

# Services whose packages this run installs (see below).
fresh=()
for service in mosquitto docker-registry; do
    dpkg-query -W -f='${Status}' "$service" 2>/dev/null | grep -q 'install ok installed' || fresh+=("$service")
done
# Packages the tests use as real parts; see README.md "Tests".
ensure_packages busybox-static skopeo umoci mosquitto mosquitto-clients pkg-config iproute2 procps libseccomp-dev libelf-dev zlib1g-dev containernetworking-plugins iptables util-linux openssl docker-registry apache2-utils dosfstools mtools fdisk e2fsprogs xz-utils
# Headless Chromium and its WebDriver for the web pages' browser tests (webcheck);
# certutil (libnss3-tools) puts the test CA in the browser profile.
ensure_packages chromium chromium-driver libnss3-tools
# Debian's mosquitto and docker-registry packages start system services (on 1883 and
# 5000) when installed; the tests start their own on free ports, and the Quickstart's
# embedded broker wants 1883. Only services this run installed are turned off.
for service in "${fresh[@]}"; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
        as_root systemctl disable --now "$service" || true
    fi
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

# Tests that run containers need root: build as the current user, run the test binaries
# as root.
runner=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: the container tests need root; run as root or install sudo" >&2; exit 1; }
    runner=(--config 'target."cfg(all())".runner = ["sudo", "-E"]')
fi
echo "==> cargo test"
cargo test --workspace "${runner[@]}" "$@"
# The vendored rumqttd is patched (third_party/rumqttd/PUNNET-PATCH.md) and not a
# workspace member: its own unit tests cover the commit log and the will bookkeeping
# the patches touch.
echo "==> cargo test (third_party/rumqttd)"
cargo test --manifest-path third_party/rumqttd/Cargo.toml --locked --lib --target-dir target/third_party "$@"
