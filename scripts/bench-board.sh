#!/usr/bin/env bash
# Prints the agent's idle RSS with the board page off and on, after serving the page's
# JSON 100 times, the answer's size and time, and the binary's size (release build, no
# Pods, a local Mosquitto). PUNNET_AGENT_BIN measures another binary (e.g. one built
# from an older commit, with WEB=off).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_packages mosquitto curl
agent=${PUNNET_AGENT_BIN:-target/release/punnet-agent}
if [ -z "${PUNNET_AGENT_BIN:-}" ]; then
    cargo build --release --quiet --bin punnet-agent
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    local p
    for p in $(seq "$1" $(($1 + 500))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    echo "no free port near $1" >&2
    exit 1
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

mqtt=$(free_port 21883)
mosquitto -p "$mqtt" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5

# One idle agent: $1 is --web's value; prints "idle RSS [RSS after 100 requests]".
measure() {
    local web=$1 data="$tmp/agent-$1" pid
    mkdir -p "$data"
    "$agent" --name "bench-board" --broker "mqtt://127.0.0.1:$mqtt" --allow-plaintext \
        --data-dir "$data" --no-pod-network --heartbeat 1s --web "$web" 2>"$data/agent.log" &
    pid=$!
    pids+=("$pid")
    sleep 10
    local idle
    idle=$(rss_kib "$pid")
    if [ "$web" != off ]; then
        local start end
        start=$(date +%s%N)
        for _ in $(seq 100); do curl -fsS "http://$web/api/board" -o "$tmp/board.json"; done
        end=$(date +%s%N)
        sleep 2
        echo "$idle $(rss_kib "$pid") $(( (end - start) / 100000 ))"
    else
        echo "$idle"
    fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

web=127.0.0.1:$(free_port 26480)
off=$(measure off)
read -r on after per_request_us <<<"$(measure "$web")"
page=$(cat api/web/punnet.css api/web/punnet.js agent/src/web/assets/* | wc -c)
echo "agent binary (stripped):                  $(( $(stat -c %s "$agent") / 1024 )) KiB"
echo "agent idle RSS, --web off:                $off KiB"
echo "agent idle RSS, board page on:            $on KiB"
echo "agent RSS after 100 GET /api/board:       $after KiB"
echo "GET /api/board (no Pods), mean of 100:     $((per_request_us / 1000)).$(( (per_request_us % 1000) / 100 )) ms per curl run, $(wc -c <"$tmp/board.json") bytes"
echo "page with its assets (uncompressed):      $((page / 1024)) KiB"
