#!/usr/bin/env bash
# Quickstart: builds Punnet and runs a single-machine fleet in the foreground — the
# controller with its embedded MQTT broker and a local agent in the same process — with
# a busybox image ready in the agent's image store. Ctrl-C stops the controller and the
# agent; containers keep running and are adopted again at the next start.
#   ./scripts/fleet.sh [extra punnet-controller flags]
# Environment: PUNNET_DATA_DIR (default /var/lib/punnet).
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds run as the calling user (whose Rust toolchain this is); what needs root (apt,
# /var/lib, running containers) goes through sudo when not root already.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "error: this needs root (apt-get, running containers): run it as root" >&2; exit 1
    fi
}
command -v cargo >/dev/null || { echo "error: cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }

packages=(busybox-static umoci skopeo)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> building (release)"
cargo build --release --quiet --bin punnet-controller --bin punnet-agent --bin punnet

data=${PUNNET_DATA_DIR:-/var/lib/punnet}
import=$data/agent/images/import
as_root mkdir -p "$import"
if ! as_root test -e "$data/agent/images/index.json" && ! as_root test -e "$import/busybox.tar"; then
    echo "==> building the busybox:latest image"
    as_root sh agent/tests/fixtures/make-busybox-image.sh "$import/busybox.tar" busybox:latest
fi

cat <<MSG
==> starting the fleet (Ctrl-C stops it). In another terminal:
      export PATH=$PWD/target/release:\$PATH
      punnet get nodes
      punnet apply -f examples/hello.yaml
      punnet get pods -o wide
MSG
as_root ./target/release/punnet-controller --data-dir "$data" --with-agent "$@"
