#!/usr/bin/env bash
# ACLs off against ACLs on, side by side: two servers on loopback (idle when not measured),
# `waggle bench` register / keepalive / discover against each in turn, three rounds; with ACLs
# on the bench carries a token whose policy has 50 rules. Prints one line per run.
#
# Usage: bench/acl.sh [--rounds N] [--duration D]
# Every process it starts it stops (trap on exit). All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3
DURATION=3s
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        *) echo "usage: $0 [--rounds N] [--duration D]" >&2; exit 2 ;;
    esac
    shift
done
cargo build --release -q -p waggle
WAGGLE="$(pwd)/target/release/waggle"
WORK=$(mktemp -d /tmp/waggle-acl-bench.XXXXXX)
ROOT=11111111-2222-4333-8444-555555555555
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"$WAGGLE" server --data-dir "$WORK/off" --grpc-addr 127.0.0.1:19702 --http-addr 127.0.0.1:19700 --dns-addr off \
    >"$WORK/off.log" 2>&1 &
PIDS+=($!)
"$WAGGLE" server --data-dir "$WORK/on" --grpc-addr 127.0.0.1:19802 --http-addr 127.0.0.1:19800 --dns-addr off \
    --acl-enabled --acl-initial-management-token "$ROOT" >"$WORK/on.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:19800/v1/acl/token/self?token=$ROOT" >/dev/null && break
    sleep 0.1
done
# A 50-rule policy: 47 key prefixes nobody uses, then what the bench needs.
RULES=""
for i in $(seq 1 47); do RULES+="key_prefix \"unused/$i/\" { policy = \"write\" }\n"; done
RULES+="service_prefix \"\" { policy = \"write\" }\nsession_prefix \"\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }\n"
POLICY=$(python3 -c 'import json,sys; print(json.dumps({"Name": "bench", "Rules": sys.argv[1].replace("\\n", "\n")}))' "$RULES")
curl -fs -X PUT "http://127.0.0.1:19800/v1/acl/policy?token=$ROOT" -d "$POLICY" >/dev/null
TOKEN=$(curl -fs -X PUT "http://127.0.0.1:19800/v1/acl/token?token=$ROOT" -d '{"Policies":[{"Name":"bench"}]}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["SecretID"])')

for round in $(seq 1 "$ROUNDS"); do
    for workload in "register --instances 10000" "keepalive" "discover --instances 100"; do
        for side in off on; do
            if [ "$side" = off ]; then url=http://127.0.0.1:19702; token=(); else url=http://127.0.0.1:19802; token=(--token "$TOKEN"); fi
            # shellcheck disable=SC2086
            rate=$("$WAGGLE" --server "$url" "${token[@]}" bench $workload --target waggle --clients 16 --in-flight 16 \
                --duration "$DURATION" --json --quiet | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["throughput"]))')
            echo "round $round  ${workload%% *}  acl=$side  $rate/s"
        done
    done
done
