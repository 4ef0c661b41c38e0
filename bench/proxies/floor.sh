# bench/proxies/floor.sh — the lower bound of a Go proxy (bench/floor): TLS
# handshake, one write per lock-step reply, pooled forwarding to smtp-sink,
# and nothing else (no parsing, policy, logging, timeouts or limits). An
# experiment, not a product: it shows how much of tlsguard's CPU
# per message any Go + crypto/tls proxy must spend (contract in
# proxies/nginx.sh). proxies/floor-none.sh is the same without a backend.

# Set on every sourcing: run.sh sources each scenario's plug-in in one shell.
FLOOR_NO_BACKEND=

proxy_start() {
  ensure_cert
  (cd "$ROOT" && go build -o "$RUN/floor" ./bench/floor) || return 1
  local backend="127.0.0.1:$SINK_PORT"
  [ -n "$FLOOR_NO_BACKEND" ] && backend=
  "$RUN/floor" -cert "$RUN/cert.pem" -key "$RUN/key.pem" -backend "$backend" \
    -starttls "127.0.0.1:$STARTTLS_PORT" -implicit "127.0.0.1:$IMPLICIT_PORT" > "$RUN/floor.log" 2>&1 &
  PROXY_PID=$!
  wait_port "$STARTTLS_PORT" && wait_port "$IMPLICIT_PORT"
}

proxy_stop() { stop_pid "$PROXY_PID"; PROXY_PID=; }
