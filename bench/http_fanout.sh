#!/usr/bin/env bash
# Blocking-query fan-out on loopback: N clients (default 10,000) blocked on one service, woken
# by one change (bench/http_fanout.py). Usage: bench/http_fanout.sh [N]
set -eu
cd "$(dirname "$0")/.."
N="${1:-10000}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # 10,000 sockets on each side
cargo build --release -q -p waggle
BIN="${CARGO_TARGET_DIR:-target}/release/waggle"
WORK=$(mktemp -d)
trap 'pkill -f "$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN" server --data-dir "$WORK/data" --grpc-addr 127.0.0.1:19602 --http-addr 127.0.0.1:19600 > "$WORK/log" 2>&1 &
until grep -q ready "$WORK/log"; do sleep 0.05; done
python3 bench/http_fanout.py 19600 "$N"
