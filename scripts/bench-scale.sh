#!/usr/bin/env bash
# Scale benchmark: a release controller (embedded broker) and punnet-sim with N simulated
# nodes; workloads totalling PODS_PER_NODE Pods per node. Prints, for each N: time from
# apply to every Pod Running, the controller's peak RSS (VmHWM) and CPU seconds, and the
# time from killing KILL_PERCENT of the nodes (power cut: the broker notices after 1.5 x
# the 10 s keepalive) to every Pod Running again on the others. RUNS > 1 repeats each
# size and prints medians.
#   ./scripts/bench-scale.sh [NODES...]        (default: 1000 5000)
# Environment: RUNS (1), PODS_PER_NODE (10), USE_DAEMONSET (auto|yes|no),
#   EVICTION_SECONDS (5; Pods' tolerance of an unreachable node, when the controller
#   has --default-eviction-seconds), SKIP_BUILD, KEEP (keep the data directory),
#   BROKER (embedded | mosquitto: an external Mosquitto on loopback, anonymous, so the
#   controller's figures can be told apart from the embedded broker's), CONNECT_RATE
#   (new simulated boards per second, 200: with the embedded broker every board holds
#   three sockets in the controller, and a faster enrolment storm overlaps old and new
#   connections past this machine's hard limit of open files).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1}
BROKER=${BROKER:-embedded}
case "$BROKER" in embedded|mosquitto) ;; *) echo "error: BROKER=$BROKER: expected embedded or mosquitto" >&2; exit 2 ;; esac
PODS_PER_NODE=${PODS_PER_NODE:-10}
USE_DAEMONSET=${USE_DAEMONSET:-auto}
EVICTION_SECONDS=${EVICTION_SECONDS:-5}
KILL_PERCENT=${KILL_PERCENT:-10}
CONVERGE_TIMEOUT=${CONVERGE_TIMEOUT:-300}
LOSS_TIMEOUT=${LOSS_TIMEOUT:-120}
CONNECT_RATE=${CONNECT_RATE:-200}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 5000)

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet --bin punnet-controller --bin punnet-sim
fi
ctl_bin=${CTL_BIN:-$PWD/target/release/punnet-controller}
sim_bin=${SIM_BIN:-$PWD/target/release/punnet-sim}
# Every node is a socket on both sides.
ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }
hwm_mib() { awk '/VmHWM/ {printf "%d", $2/1024}' "/proc/$1/status"; }
# utime + stime in seconds.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.1f", ($14+$15)/t}' "/proc/$1/stat"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap cleanup EXIT

api() { # METHOD PATH [BODY]
    local body=()
    [ $# -ge 3 ] && body=(-H 'Content-Type: application/json' --data-binary "$3")
    curl -sS -X "$1" -H "Authorization: Bearer $token" "${body[@]}" "$server$2"
}

ready_nodes() {
    # A busy controller may answer with an error: count that as none yet.
    api GET /api/v1/nodes | jq '[(.items // [])[] | select(any(.status.conditions[]?; .type=="Ready" and .status=="True"))] | length' 2>/dev/null || echo 0
}

# Ready Pods of the benchmark's workloads, as their controllers count them.
ready_pods() {
    local d s=0
    d=$(api GET /apis/apps/v1/namespaces/default/deployments | jq '[(.items // [])[].status.readyReplicas // 0] | add // 0' 2>/dev/null || echo 0)
    if [ "$daemonset" = yes ]; then
        s=$(api GET /apis/apps/v1/namespaces/default/daemonsets | jq '[(.items // [])[].status.numberReady // 0] | add // 0' 2>/dev/null || echo 0)
    fi
    echo $((d + s))
}

# The simulator's own count of Pods it runs, from its last progress line.
sim_running() {
    grep -o 'pods running=[0-9]*/[0-9]*' "$1" | tail -1 | sed 's/pods running=//'
}

# Waits until the simulator runs `total` Pods of `total` and the controllers count them
# all Ready; prints the seconds since `t0`, or `timeout`.
wait_all_running() { # total t0 timeout simlog
    local total=$1 t0=$2 limit=$3 log=$4
    while :; do
        if [ "$(sim_running "$log")" = "$total/$total" ] && [ "$(ready_pods)" -ge "$total" ]; then
            since "$t0"
            return
        fi
        if python3 -c "import sys; sys.exit(0 if $(now) - $t0 > $limit else 1)"; then
            echo "timeout>$limit"
            return
        fi
        sleep 0.25
    done
}

deployment_json() { # name replicas
    cat <<JSON
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"$1","namespace":"default"},
 "spec":{"replicas":$2,"selector":{"matchLabels":{"app":"$1"}},
  "template":{"metadata":{"labels":{"app":"$1"}},
   "spec":{"containers":[{"name":"app","image":"busybox:1.36","command":["sleep","inf"],
    "resources":{"requests":{"cpu":"10m","memory":"16Mi"}}}]}}}}
JSON
}

daemonset_json() {
    cat <<JSON
{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"node-exporter","namespace":"default"},
 "spec":{"selector":{"matchLabels":{"app":"node-exporter"}},
  "template":{"metadata":{"labels":{"app":"node-exporter"}},
   "spec":{"containers":[{"name":"exporter","image":"busybox:1.36","command":["sleep","inf"],
    "resources":{"requests":{"cpu":"10m","memory":"16Mi"}}}]}}}}
JSON
}

run_once() { # nodes -> prints "converge_s rss_mib cpu_s loss_s"
    local n=$1 dir http mqtt ctl sim simlog ctllog
    dir=$(mktemp -d /tmp/punnet-scale.XXXXXX)
    http=$(free_port)
    mqtt=$(free_port)
    # The default cluster CIDR 10.42.0.0/16 has 256 /24 Pod ranges: far too few here.
    local flags=(--data-dir "$dir" --http "127.0.0.1:$http" --mqtt "127.0.0.1:$mqtt"
        --cluster-cidr 10.0.0.0/8 --node-cidr-mask-size 24)
    if "$ctl_bin" --help | grep -q -- --default-eviction-seconds; then
        flags+=(--default-eviction-seconds "$EVICTION_SECONDS")
    fi
    # Plaintext, so the figures compare with the earlier (pre-TLS) runs; TLS adds a
    # loopback hop per connection in front of the embedded broker.
    local simflags=()
    if "$ctl_bin" --help | grep -q -- --allow-plaintext; then
        flags+=(--allow-plaintext)
        simflags+=(--allow-plaintext)
    fi
    if [ "$BROKER" = mosquitto ]; then
        # Anonymous on loopback: the benchmark measures the controller, not the ACLs.
        chown mosquitto "$dir" 2>/dev/null || true
        cat >"$dir/mosquitto.conf" <<CONF
listener $mqtt 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
max_queued_messages 10000
CONF
        mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
        pids+=("$!")
        for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$mqtt") 2>/dev/null && break; sleep 0.1; done
        flags+=(--broker "mqtt://127.0.0.1:$mqtt")
    fi
    ctllog=$dir/controller.log
    "$ctl_bin" "${flags[@]}" >"$ctllog" 2>&1 &
    ctl=$!
    pids+=("$ctl")
    server=http://127.0.0.1:$http
    for _ in $(seq 100); do [ -s "$dir/punnet.yaml" ] && break; sleep 0.1; done
    token=$(awk '/^token:/ {print $2}' "$dir/punnet.yaml")
    # The embedded broker admits enrolled nodes only: one bootstrap token for the fleet.
    local enrol=()
    if [ "$BROKER" = embedded ] && "$sim_bin" --help | grep -q -- --enrol-token; then
        enrol=(--enrol-token "$(api POST /apis/punnet.io/v1/tokens "{\"uses\": $n}" | jq -r .token)")
    fi

    simlog=$dir/sim.log
    "$sim_bin" --nodes "$n" --broker "mqtt://127.0.0.1:$mqtt" "${simflags[@]}" --keep-alive 10s \
        --api "$server" --token "$token" \
        --report-interval 10s --kill "$KILL_PERCENT" --connect-rate "$CONNECT_RATE" "${enrol[@]}" >"$simlog" 2>&1 &
    sim=$!
    pids+=("$sim")
    local join_deadline=$((SECONDS + 300))
    until [ "$(ready_nodes)" -ge "$n" ]; do
        sleep 1
        [ $SECONDS -lt $join_deadline ] || { echo "error: only $(ready_nodes)/$n nodes Ready after 300 s (see $ctllog)" >&2; exit 1; }
    done

    daemonset=no
    local per_deployment=$PODS_PER_NODE deployments=1
    if [ "$USE_DAEMONSET" != no ] && api POST /apis/apps/v1/namespaces/default/daemonsets "$(daemonset_json)" | grep -q '"kind": *"DaemonSet"'; then
        daemonset=yes
        per_deployment=$((PODS_PER_NODE - 1))
    elif [ "$USE_DAEMONSET" = yes ]; then
        echo "error: this controller does not accept apps/v1 DaemonSet" >&2; exit 1
    fi
    local total=$((n * PODS_PER_NODE)) cpu0 t0 i converge loss
    cpu0=$(cpu_s "$ctl")
    local idle_rss wb0
    idle_rss=$(awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$ctl/status")
    wb0=$(awk '/^write_bytes/ {print $2}' "/proc/$ctl/io")
    t0=$(now)
    # One Deployment per remaining Pod per node, each with one replica per node.
    # One after another, as `punnet apply` does: each answers once it is durable, while
    # the controller is busy with the Pods of the ones before.
    local slowest=0 took
    for i in $(seq "$per_deployment"); do
        took=$(curl -sS -o /dev/null -w '%{time_total}' -X POST -H "Authorization: Bearer $token" \
            -H 'Content-Type: application/json' --data-binary "$(deployment_json "app-$i" "$n")" \
            "$server/apis/apps/v1/namespaces/default/deployments")
        slowest=$(python3 -c "print(max($slowest, $took))")
    done
    echo "  $per_deployment Deployments created in $(since "$t0")s (slowest answer ${slowest}s)" >&2
    converge=$(wait_all_running "$total" "$t0" "$CONVERGE_TIMEOUT" "$simlog")
    local rss cpu
    rss=$(hwm_mib "$ctl")
    cpu=$(python3 -c "print(f'{$(cpu_s "$ctl") - $cpu0:.1f}')")
    echo "  $n nodes x $PODS_PER_NODE Pods (DaemonSet: $daemonset): all Running after ${converge}s, controller peak RSS ${rss} MiB (${idle_rss} MiB with the nodes only), ${cpu} CPU s, $(( ($(awk '/^write_bytes/ {print $2}' "/proc/$ctl/io") - wb0) / 1048576 )) MiB written to disk" >&2

    # Let the fleet settle (a heartbeat round), then cut the power of KILL_PERCENT.
    sleep 12
    t0=$(now)
    kill -USR1 "$sim"
    sleep 1
    # A lost node's DaemonSet Pod is not moved (it belongs to that board); every other
    # Pod must run again on the nodes left.
    local lost=$(( (n * KILL_PERCENT + 50) / 100 )) after=$total
    [ "$daemonset" = yes ] && after=$((total - lost))
    loss=$(wait_all_running "$after" "$t0" "$LOSS_TIMEOUT" "$simlog")
    echo "  $KILL_PERCENT% of nodes lost: their Pods Running elsewhere after ${loss}s (keepalive 10 s, eviction after ${EVICTION_SECONDS}s)" >&2
    echo "$converge $rss $cpu $loss"
    cleanup
    [ -n "${KEEP:-}" ] && echo "  kept $dir" >&2 || rm -rf "$dir"
}

results=$(mktemp)
echo "==> scale: controller with the $BROKER broker, punnet-sim, $PODS_PER_NODE Pods per node"
for n in "${sizes[@]}"; do
    conv=() rss=() cpu=() loss=()
    for r in $(seq "$RUNS"); do
        echo " run $r/$RUNS, $n nodes" >&2
        run_once "$n" >"$results"
        read -r c m u l <"$results"
        conv+=("$c") rss+=("$m") cpu+=("$u") loss+=("$l")
    done
    printf '%6d nodes: apply -> all Running %ss, peak RSS %s MiB, CPU %ss; %s%% nodes lost -> Running elsewhere %ss (median of %d)\n' \
        "$n" "$(median "${conv[@]}")" "$(median "${rss[@]}")" "$(median "${cpu[@]}")" "$KILL_PERCENT" "$(median "${loss[@]}")" "$RUNS"
done
