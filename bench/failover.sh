#!/usr/bin/env bash
# Leader failover on loopback, 3 members, default settings, Waggle and etcd side by side:
# time from `kill -9` of the leader to the first acknowledged write through a survivor.
# Each attempt is a fresh CLI process bounded to 200 ms (waggle register / etcdctl put), so
# the resolution is one attempt: about 200 ms while no leader answers.
# Usage: bench/failover.sh [TRIALS]   (needs etcd and etcdctl; builds waggle in release)
set -eu
# No pipefail: `waggle register` keeps running after it prints "registered" (grep takes the
# first line and the timeout ends it), so the pipeline must report grep's status.
cd "$(dirname "$0")/.."
TRIALS="${1:-10}"
cargo build --release -q -p waggle
BIN="${CARGO_TARGET_DIR:-target}/release/waggle"
now_ms() { date +%s%3N; }
WORK=$(mktemp -d)
cleanup() { pkill -9 -f "$WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

waggle_trial() {
    local t=$1 base=$((19000 + t * 20)) cluster="" urls=() pids=()
    for i in 1 2 3; do cluster+="${cluster:+,}$i=127.0.0.1:$((base + i))"; done
    for i in 1 2 3; do
        mkdir -p "$WORK/w$t-$i"
        "$BIN" server --data-dir "$WORK/w$t-$i" --node-id $i --peer-addr 127.0.0.1:$((base + i)) \
            --initial-cluster "$cluster" --grpc-addr 127.0.0.1:$((base + 10 + i)) \
            --http-addr 127.0.0.1:$((base + 5 + i)) --dns-addr off > "$WORK/w$t-$i.log" 2>&1 &
        pids[$i]=$!
        urls[$i]="http://127.0.0.1:$((base + 10 + i))"
    done
    until grep -q ready "$WORK/w$t-1.log" && grep -q ready "$WORK/w$t-2.log" && grep -q ready "$WORK/w$t-3.log"; do sleep 0.05; done
    local leader
    leader=$("$BIN" --server "${urls[1]},${urls[2]},${urls[3]}" members list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
    local survivors=()
    for i in 1 2 3; do [ "$i" != "$leader" ] && survivors+=("${urls[$i]}"); done
    local servers; servers=$(IFS=,; echo "${survivors[*]}")
    kill -9 "${pids[$leader]}"
    local t0; t0=$(now_ms)
    local n=0
    while :; do
        n=$((n + 1))
        if timeout 0.2 "$BIN" --server "$servers" register bench "10.0.$t.$n:80" --ttl 5s 2>/dev/null | grep -q -m1 registered; then
            break
        fi
    done
    echo $(( $(now_ms) - t0 ))
    for i in 1 2 3; do kill -9 "${pids[$i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

etcd_trial() {
    local t=$1 base=$((23000 + t * 20)) cluster="" pids=() clients=()
    for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.0.1:$((base + i))"; done
    for i in 1 2 3; do
        etcd --name e$i --data-dir "$WORK/e$t-$i" --listen-peer-urls http://127.0.0.1:$((base + i)) \
            --initial-advertise-peer-urls http://127.0.0.1:$((base + i)) \
            --listen-client-urls http://127.0.0.1:$((base + 10 + i)) \
            --advertise-client-urls http://127.0.0.1:$((base + 10 + i)) \
            --initial-cluster "$cluster" --initial-cluster-state new > "$WORK/e$t-$i.log" 2>&1 &
        pids[$i]=$!
        clients[$i]="http://127.0.0.1:$((base + 10 + i))"
    done
    local all; all=$(IFS=,; echo "${clients[*]:1}")
    until ETCDCTL_API=3 etcdctl --endpoints="$all" --command-timeout=1s put warm up > /dev/null 2>&1; do sleep 0.05; done
    local leader
    leader=$(ETCDCTL_API=3 etcdctl --endpoints="$all" endpoint status -w json | python3 -c '
import json,sys
for i, e in enumerate(json.load(sys.stdin), 1):
    if e["Status"]["leader"] == e["Status"]["header"]["member_id"]: print(i)')
    local survivors=()
    for i in 1 2 3; do [ "$i" != "$leader" ] && survivors+=("${clients[$i]}"); done
    local servers; servers=$(IFS=,; echo "${survivors[*]}")
    kill -9 "${pids[$leader]}"
    local t0; t0=$(now_ms)
    until ETCDCTL_API=3 etcdctl --endpoints="$servers" --command-timeout=200ms put k v > /dev/null 2>&1; do :; done
    echo $(( $(now_ms) - t0 ))
    for i in 1 2 3; do kill -9 "${pids[$i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

summary() {
    python3 -c '
import statistics, sys
name, values = sys.argv[1], [int(v) for v in sys.argv[2:]]
print(f"{name}: trials={len(values)} median={statistics.median(values):.0f} ms max={max(values)} ms min={min(values)} ms all={values}")' "$@"
}

w=(); e=()
for t in $(seq 1 "$TRIALS"); do
    w+=("$(waggle_trial "$t")")
    e+=("$(etcd_trial "$t")")
    echo "trial $t: waggle ${w[-1]} ms, etcd ${e[-1]} ms" >&2
done
summary waggle "${w[@]}"
summary "etcd $(etcd --version | head -1 | awk '{print $3}')" "${e[@]}"
