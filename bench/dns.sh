#!/usr/bin/env bash
# DNS queries/s side by side in one run: Waggle's DNS interface and dnsmasq serving the same
# records (10 services x 3 instances: A and SRV, with the SRV targets' A records), both on
# loopback, each measured with the same dnsperf query file and settings.
# Usage: bench/dns.sh [SECONDS]   (needs dnsperf and dnsmasq (Debian); builds waggle in release)
set -eu
cd "$(dirname "$0")/.."
SECS="${1:-10}"
. bench/lib.sh
start_server 19602 19600 127.0.0.1:19653
# dnsmasq reads its hosts file as an unprivileged user.
chmod a+rx "$WORK"
HOSTS="$WORK/hosts"; QUERIES="$WORK/queries"
: > "$HOSTS"; : > "$QUERIES"
SRV=()
for s in $(seq 1 10); do
    for i in 1 2 3; do
        curl -sf -X PUT --data "{\"Name\":\"svc$s\",\"ID\":\"svc$s-$i\",\"Address\":\"10.0.$s.$i\",\"Port\":$((8000 + i))}" \
            http://127.0.0.1:19600/v1/agent/service/register
        target=$(printf '%02x%02x%02x%02x.addr.waggle' 10 0 "$s" "$i")
        echo "10.0.$s.$i svc$s.service.waggle $target" >> "$HOSTS"
        SRV+=("--srv-host=_svc$s._tcp.service.waggle,$target,$((8000 + i)),1,100")
    done
    echo "svc$s.service.waggle A" >> "$QUERIES"
    echo "_svc$s._tcp.service.waggle SRV" >> "$QUERIES"
done
chmod a+r "$HOSTS"
dnsmasq --keep-in-foreground --port=19654 --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
    --conf-file=/dev/null --addn-hosts="$HOSTS" --local=/waggle/ --cache-size=10000 --pid-file="$WORK/dnsmasq.pid" \
    "${SRV[@]}" > "$WORK/dnsmasq.log" 2>&1 &
sleep 0.5
dig @127.0.0.1 -p 19653 +short svc1.service.waggle A | sort | tr '\n' ' '; echo "(waggle)"
dig @127.0.0.1 -p 19654 +short svc1.service.waggle A | sort | tr '\n' ' '; echo "(dnsmasq)"
for target in "waggle 19653" "dnsmasq 19654"; do
    set -- $target
    echo "== $1"
    dnsperf -s 127.0.0.1 -p "$2" -d "$QUERIES" -l "$SECS" -c 8 -T 1 -q 200 \
        | grep -E "Queries sent|Queries completed|Queries lost|Queries per second|Average Latency|Latency StdDev|NOERROR"
done
