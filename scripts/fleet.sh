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
source scripts/lib.sh
command -v cargo >/dev/null || { echo "error: cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }

ensure_packages busybox-static umoci skopeo pkg-config libseccomp-dev libelf-dev zlib1g-dev containernetworking-plugins iptables

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
