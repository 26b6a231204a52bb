#!/usr/bin/env bash
# Locks side by side in one run: Waggle's Lock service and etcd 3.4's v3lock service
# (Lock + Unlock with a lease), same machine, same load generator (`waggle bench`), same
# concurrency. Uncontended: every worker its own lock; contended: every worker one lock.
# Usage: bench/lock.sh [DURATION] [CLIENTS] [IN_FLIGHT]   (needs etcd; builds waggle in release)
set -eu
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"; CLIENTS="${2:-4}"; IN_FLIGHT="${3:-8}"
cargo build --release -q -p waggle
WAGGLE="${CARGO_TARGET_DIR:-target}/release/waggle"
WORK=$(mktemp -d)
trap 'pkill -f "$WORK" 2>/dev/null || true; sleep 0.2; rm -rf "$WORK"' EXIT
"$WAGGLE" server --data-dir "$WORK/waggle" --grpc-addr 127.0.0.1:18602 --http-addr 127.0.0.1:18600 --dns-addr off \
    > "$WORK/waggle.log" 2>&1 &
etcd --name bench --data-dir "$WORK/etcd" --listen-client-urls http://127.0.0.1:23890 \
    --advertise-client-urls http://127.0.0.1:23890 --listen-peer-urls http://127.0.0.1:23900 \
    --initial-advertise-peer-urls http://127.0.0.1:23900 --initial-cluster bench=http://127.0.0.1:23900 \
    --log-level error > "$WORK/etcd.log" 2>&1 &
until grep -q ready "$WORK/waggle.log"; do sleep 0.05; done
sleep 1
for workload in lock lock-contended; do
    for target in waggle etcd; do
        echo "== $workload $target"
        endpoint=(); [ "$target" = etcd ] && endpoint=(--endpoint http://127.0.0.1:23890)
        "$WAGGLE" --server http://127.0.0.1:18602 bench "$workload" --target "$target" "${endpoint[@]}" \
            --clients "$CLIENTS" --in-flight "$IN_FLIGHT" --duration "$DURATION" --quiet
    done
done
