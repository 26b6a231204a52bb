#!/usr/bin/env bash
# Consul-compatible HTTP reads on loopback: a release server with 20 instances of one service
# registered through the agent API, then wrk (Debian) against the health and catalog reads.
# Usage: bench/http.sh [DURATION]   (needs wrk; builds waggle in release)
set -eu
cd "$(dirname "$0")/.."
DURATION="${1:-5s}"
. bench/lib.sh
start_server 19502 19500
for i in $(seq 1 20); do
    curl -sf -X PUT --data "{\"Name\":\"web\",\"ID\":\"web-$i\",\"Address\":\"10.0.0.$i\",\"Port\":8080,\"Tags\":[\"v1\"]}" \
        http://127.0.0.1:19500/v1/agent/service/register
done
for path in "/v1/health/service/web?passing" "/v1/catalog/service/web" "/v1/health/service/web?filter=Service.Tags%20contains%20v1"; do
    echo "== $path"
    wrk -t2 -c64 -d"$DURATION" "http://127.0.0.1:19500$path" | grep -E "Requests/sec|Latency|Non-2xx"
done
