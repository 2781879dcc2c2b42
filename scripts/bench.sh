#!/usr/bin/env bash
# Prints Punnet's figures (medians): apply -> Running latency (warm with the Pod network
# and with the host network, cold pull from a loopback registry), controller and agent
# idle RSS, RSS per container shim, stripped binary sizes, and the controller's disk writes
# per hour with 10 idle nodes; then the scale benchmark (scripts/bench-scale.sh). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "error: the benchmark runs containers: run it as root" >&2; exit 1; }
source scripts/lib.sh
ensure_packages busybox-static umoci skopeo pkg-config libseccomp-dev libelf-dev zlib1g-dev containernetworking-plugins iptables docker-registry
cargo build --release --quiet --bin punnet-controller --bin punnet-agent --bin punnet --bin punnet-sim
cargo bench --quiet -p punnet-controller --bench fleet
# Write budget: an idle controller with 10 simulated nodes reporting every 10 s; bytes
# written to disk per hour (PUNNET_BENCH_WRITE_SECS sets the window, default 600 s).
cargo bench --quiet -p punnet-controller --bench writes

# Scale: 1,000 and 5,000 simulated nodes (punnet-sim); SKIP_SCALE=1 leaves it out.
[ -n "${SKIP_SCALE:-}" ] || SKIP_BUILD=1 ./scripts/bench-scale.sh
