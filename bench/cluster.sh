#!/usr/bin/env bash
# Durable registration throughput of a 3-member cluster on loopback, Waggle and etcd 3.4 side
# by side, driven by the same load generator (`waggle bench register`) at the same
# concurrency, with clients connected to the leader and then to a follower (which forwards).
# Usage: bench/cluster.sh [RUNS]   (needs etcd; builds waggle in release)
set -eu
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
DURATION=5s
cargo build --release -q -p waggle
BIN="${CARGO_TARGET_DIR:-target}/release/waggle"
WORK=$(mktemp -d)
cleanup() { pkill -9 -f "$WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cluster=""; urls=()
for i in 1 2 3; do cluster+="${cluster:+,}$i=127.0.0.1:$((19300 + i))"; done
for i in 1 2 3; do
    "$BIN" server --data-dir "$WORK/w$i" --node-id $i --peer-addr 127.0.0.1:$((19300 + i)) \
        --initial-cluster "$cluster" --grpc-addr 127.0.0.1:$((19310 + i)) \
        --http-addr 127.0.0.1:$((19320 + i)) --dns-addr off > "$WORK/w$i.log" 2>&1 &
    urls[$i]="http://127.0.0.1:$((19310 + i))"
done
ecluster=""; eurls=()
for i in 1 2 3; do ecluster+="${ecluster:+,}e$i=http://127.0.0.1:$((23300 + i))"; done
for i in 1 2 3; do
    etcd --name e$i --data-dir "$WORK/e$i" --listen-peer-urls http://127.0.0.1:$((23300 + i)) \
        --initial-advertise-peer-urls http://127.0.0.1:$((23300 + i)) \
        --listen-client-urls http://127.0.0.1:$((23310 + i)) \
        --advertise-client-urls http://127.0.0.1:$((23310 + i)) \
        --initial-cluster "$ecluster" --initial-cluster-state new --log-level error > "$WORK/e$i.log" 2>&1 &
    eurls[$i]="http://127.0.0.1:$((23310 + i))"
done
until grep -q ready "$WORK/w1.log" && grep -q ready "$WORK/w2.log" && grep -q ready "$WORK/w3.log"; do sleep 0.1; done
all=$(IFS=,; echo "${eurls[*]:1}")
until ETCDCTL_API=3 etcdctl --endpoints="$all" --command-timeout=1s put warm up > /dev/null 2>&1; do sleep 0.1; done
wl=$("$BIN" --server "${urls[1]}" members list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
el=$(ETCDCTL_API=3 etcdctl --endpoints="$all" endpoint status -w json | python3 -c '
import json,sys
for i, e in enumerate(json.load(sys.stdin), 1):
    if e["Status"]["leader"] == e["Status"]["header"]["member_id"]: print(i)')
wf=$(( wl % 3 + 1 )); ef=$(( el % 3 + 1 ))
echo "machine: $(nproc) cores; etcd $(etcd --version | head -1 | awk '{print $3}'); leaders: waggle $wl, etcd $el" >&2

RESULTS="$WORK/results.jsonl"
run() { # label target endpoint-args... -- bench args...
    local label=$1 target=$2; shift 2
    for r in $(seq 1 "$RUNS"); do
        "$BIN" bench register --target "$target" "$@" --json --quiet --duration $DURATION --instances 10000 \
            | python3 -c 'import json,sys; d=json.load(sys.stdin); d["label"]=sys.argv[1]; print(json.dumps(d))' "$label" >> "$RESULTS"
    done
}
for cf in 4x16 16x16; do
    c=${cf%x*}; f=${cf#*x}
    run "waggle leader $cf" waggle --server "${urls[$wl]}" --clients "$c" --in-flight "$f"
    run "etcd leader $cf" etcd --endpoint "${eurls[$el]}" --clients "$c" --in-flight "$f"
    run "waggle follower $cf" waggle --server "${urls[$wf]}" --clients "$c" --in-flight "$f"
    run "etcd follower $cf" etcd --endpoint "${eurls[$ef]}" --clients "$c" --in-flight "$f"
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows.setdefault(d["label"], []).append(d)
def med(label, key):
    return statistics.median(r[key] for r in rows[label])
def med2(label, key):
    return statistics.median(r["latency"][key] for r in rows[label])
errors = {k: sum(r["errors"] for r in v) for k, v in rows.items() if any(r["errors"] for r in v)}
if errors: print("errors:", errors)
print("| clients at | concurrency | waggle ops/s | etcd ops/s | waggle/etcd | waggle p50/p99 ms | etcd p50/p99 ms |")
print("|---|---|---|---|---|---|---|")
for where in ["leader", "follower"]:
    for cf in ["4x16", "16x16"]:
        w, e = f"waggle {where} {cf}", f"etcd {where} {cf}"
        wt, et = med(w, "throughput"), med(e, "throughput")
        print(f"| {where} | {cf} | {wt:,.0f} | {et:,.0f} | {wt/et:.2f}× | {med2(w,'p50_ms'):.2f} / {med2(w,'p99_ms'):.2f} | {med2(e,'p50_ms'):.2f} / {med2(e,'p99_ms'):.2f} |")
PY
