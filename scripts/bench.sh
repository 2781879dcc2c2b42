#!/usr/bin/env bash
# Prints Punnet's figures (medians): apply -> Running latency, controller and agent
# idle RSS, RSS per container shim, stripped binary sizes. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "error: the benchmark runs containers: run it as root" >&2; exit 1; }
for p in busybox-static umoci skopeo; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p"; }
done
cargo build --release --quiet --bin punnet-controller --bin punnet-agent --bin punnet
cargo bench --quiet -p punnet-controller --bench fleet
