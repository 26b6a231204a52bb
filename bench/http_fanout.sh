#!/usr/bin/env bash
# Blocking-query fan-out on loopback: N clients (default 10,000) blocked on one service, woken
# by one change (bench/http_fanout.py). Usage: bench/http_fanout.sh [N]
set -eu
cd "$(dirname "$0")/.."
N="${1:-10000}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # 10,000 sockets on each side
. bench/lib.sh
start_server 19602 19600
python3 bench/http_fanout.py 19600 "$N"
