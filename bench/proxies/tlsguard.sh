# bench/proxies/tlsguard.sh — tlsguard (sourced by run.sh; contract in
# proxies/nginx.sh). Runs $RUN/tlsguard, built from this checkout by run.sh,
# with the config below: a STARTTLS listener (plain mail allowed, as nginx's
# "starttls on") and an implicit-TLS listener, the bench certificate, and
# smtp-sink as the backend.
# Knobs: TLSGUARD_LOG_LEVEL (default info, the shipped default; the log goes
# to a file), TLSGUARD_GOMAXPROCS (default: unset = one per core, like nginx's
# "worker_processes auto"), TLSGUARD_EXTRA_ENV (e.g. "GOGC=200").

# The binary: run.sh's build of this checkout (tlsguard-base.sh swaps it).
TLSGUARD_BIN=$RUN/tlsguard
# What a variant plug-in changes (tlsguard-gc400.sh, tlsguard-quiet.sh). Set
# on every sourcing: run.sh sources each scenario's plug-in in one shell, so
# a variant's setting must not outlive its scenario.
TLSGUARD_VARIANT_ENV=
TLSGUARD_VARIANT_LEVEL=

proxy_start() {
  ensure_cert
  # example.test is local, so the unauthenticated load is accepted like
  # nginx's "smtp_auth none"; nobody is trusted to relay.
  cat > "$RUN/tlsguard-policy.yaml" <<POL
local_domains: [example.test]
trusted_networks: []
POL
  # The limits: every bench client comes from 127.0.0.1, and the hold test
  # keeps 5,000 sessions open; the defaults (2,000 sessions, 50 per IP) would
  # refuse that load.
  cat > "$RUN/tlsguard.yaml" <<CFG
hostname: mail.example.test
state_dir: $RUN/tlsguard-state
listeners:
  - name: submission
    address: "127.0.0.1:$STARTTLS_PORT"
    tls: starttls
    require_tls: false
  - name: submissions
    address: "127.0.0.1:$IMPLICIT_PORT"
    tls: implicit
tls:
  min_version: "1.2"
  certificates:
    - cert: $RUN/cert.pem
      key: $RUN/key.pem
backend:
  address: "127.0.0.1:$SINK_PORT"
  tls: none
  timeout: 30s
limits:
  max_sessions: 20000
  max_sessions_per_ip: 20000
policy: $RUN/tlsguard-policy.yaml
log:
  level: ${TLSGUARD_VARIANT_LEVEL:-${TLSGUARD_LOG_LEVEL:-info}}
  format: json
CFG
  local env=()
  [ -n "${TLSGUARD_GOMAXPROCS:-}" ] && env+=("GOMAXPROCS=$TLSGUARD_GOMAXPROCS")
  # shellcheck disable=SC2206  # meant to split
  [ -n "${TLSGUARD_EXTRA_ENV:-}" ] && env+=($TLSGUARD_EXTRA_ENV)
  # shellcheck disable=SC2206
  [ -n "$TLSGUARD_VARIANT_ENV" ] && env+=($TLSGUARD_VARIANT_ENV)
  env "${env[@]}" "$TLSGUARD_BIN" serve --config "$RUN/tlsguard.yaml" > "$RUN/tlsguard.log" 2>&1 &
  PROXY_PID=$!
  wait_port "$STARTTLS_PORT" && wait_port "$IMPLICIT_PORT"
}

proxy_stop() { stop_pid "$PROXY_PID"; PROXY_PID=; }   # TERM = graceful shutdown
