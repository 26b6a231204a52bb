# Shared by the bench scripts: build the release binary and start one server on loopback with
# a temporary data dir, stopped and removed on exit.
# Usage: start_server GRPC_PORT HTTP_PORT [DNS_ADDR]   (DNS is off unless DNS_ADDR is given)
start_server() {
    cargo build --release -q -p waggle
    BIN="${CARGO_TARGET_DIR:-target}/release/waggle"
    WORK=$(mktemp -d)
    trap 'pkill -f "$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT
    "$BIN" server --data-dir "$WORK/data" --grpc-addr "127.0.0.1:$1" --http-addr "127.0.0.1:$2" --dns-addr "${3:-off}" > "$WORK/log" 2>&1 &
    until grep -q ready "$WORK/log"; do sleep 0.05; done
}
