#!/usr/bin/env bash
# Side-by-side benchmark: Waggle, etcd 3.4 and ZooKeeper 3.8 on loopback, driven by the same
# load generator (`waggle bench`) at the same concurrency. Prints one table of ratios and
# writes docs/benchmarks/results.jsonl, docs/benchmarks/summary.md and SVG charts.
#
# Usage: bench/compare.sh [--quick] [--runs N]
# Needs: Debian packages etcd-server and zookeeper (installed if missing and apt is usable).
# Every process it starts it stops (trap on exit). All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RUNS=3
DURATION=5s
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; RUNS=1; DURATION=2s ;;
        --runs) RUNS="$2"; shift ;;
        *) echo "usage: $0 [--quick] [--runs N]" >&2; exit 2 ;;
    esac
    shift
done

if ! command -v etcd >/dev/null || [ ! -x /usr/share/zookeeper/bin/zkServer.sh ]; then
    echo "installing etcd-server and zookeeper (Debian)..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server zookeeper >/dev/null
fi

cargo build --release -q -p waggle
WAGGLE="$ROOT/target/release/waggle"
WORK=$(mktemp -d /tmp/waggle-compare.XXXXXX)
OUT="$ROOT/docs/benchmarks"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

WAGGLE_URL=http://127.0.0.1:18502
ETCD_URL=http://127.0.0.1:23790
ZK_ADDR=127.0.0.1:21810

start_waggle() {
    rm -rf "$WORK/waggle"
    "$WAGGLE" server --data-dir "$WORK/waggle" --grpc-addr 127.0.0.1:18502 --http-addr 127.0.0.1:18500 --dns-addr off \
        >"$WORK/waggle.log" 2>&1 &
    PIDS+=($!)
    WAGGLE_PID=$!
}
start_etcd() {
    rm -rf "$WORK/etcd"
    etcd --name bench --data-dir "$WORK/etcd" --listen-client-urls $ETCD_URL --advertise-client-urls $ETCD_URL \
        --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
        --initial-cluster bench=http://127.0.0.1:23800 --log-level error >"$WORK/etcd.log" 2>&1 &
    PIDS+=($!)
    ETCD_PID=$!
}
start_zk() {
    mkdir -p "$WORK/zk/data"
    cat >"$WORK/zk/zoo.cfg" <<CFG
tickTime=2000
dataDir=$WORK/zk/data
clientPort=21810
clientPortAddress=127.0.0.1
admin.enableServer=false
maxClientCnxns=0
CFG
    ZOO_LOG_DIR="$WORK/zk" /usr/share/zookeeper/bin/zkServer.sh start-foreground "$WORK/zk/zoo.cfg" \
        >"$WORK/zk.log" 2>&1 &
    PIDS+=($!)
    ZK_PID=$!
}
wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $1 did not open" >&2
    exit 1
}

start_waggle; start_etcd; start_zk
wait_port 18502; wait_port 23790; wait_port 21810
sleep 1

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)" >&2
echo "etcd $(etcd --version | head -1 | awk '{print $3}'), zookeeper $(dpkg-query -W -f '${Version}' zookeeper 2>/dev/null)" >&2

bench() { # target workload extra-args...
    local target=$1 workload=$2; shift 2
    local endpoint=()
    case $target in
        waggle) endpoint=(--server "$WAGGLE_URL") ;;
        etcd) endpoint=(--endpoint "$ETCD_URL") ;;
        zookeeper) endpoint=(--endpoint "$ZK_ADDR") ;;
    esac
    for run in $(seq 1 "$RUNS"); do
        echo "  $workload $target $* (run $run)" >&2
        "$WAGGLE" bench "$workload" --target "$target" "${endpoint[@]}" --json --quiet "$@" >>"$RESULTS" \
            || echo "  ... failed" >&2
    done
}

CONCURRENCY="1x1 4x16 8x16 16x16"
[ $QUICK = 1 ] && CONCURRENCY="1x1 4x16 16x16"
for cf in $CONCURRENCY; do
    c=${cf%x*}; f=${cf#*x}
    for t in waggle etcd zookeeper; do bench $t register --clients "$c" --in-flight "$f" --duration $DURATION --instances 10000; done
done
for cf in 4x16 16x16; do
    c=${cf%x*}; f=${cf#*x}
    for t in waggle etcd; do bench $t keepalive --clients "$c" --in-flight "$f" --duration $DURATION; done
    for t in waggle etcd; do bench $t discover --clients "$c" --in-flight "$f" --duration $DURATION --instances 100; done
done
for w in 1000 10000; do
    for t in waggle etcd; do bench $t watch --clients 16 --watchers "$w" --total 20; done
done
for t in waggle etcd; do bench $t churn --clients 4 --in-flight 4 --watchers 100 --duration $DURATION; done

echo "waggle server RSS after the run: $(ps -o rss= -p "$WAGGLE_PID" | awk '{printf "%.0f MB", $1/1024}')" >&2
python3 "$ROOT/bench/report.py" "$RESULTS" "$OUT"
