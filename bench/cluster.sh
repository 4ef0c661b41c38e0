#!/usr/bin/env bash
# bench/cluster.sh — the cost of sharing state through Redis (docs/scaling.md).
# One tlsguard instance, implicit TLS, every session logging in (AUTH PLAIN)
# and every message counted against a per-user and a per-address rate limit,
# first alone, then with cluster: (a local redis-server, all four parts
# shared). Prints messages/s for each, then Redis round trips per message
# and per login, counted with MONITOR on a short separate run (MONITOR slows
# Redis, so it is off while throughput is measured).
#
#   bench/cluster.sh                 # N=4000 messages, C=20 sessions, PER_CONN=10 messages a session
#   N=2000 C=50 PER_CONN=1 bench/cluster.sh
#
# Needs redis-server, redis-cli, smtp-sink (Postfix), htpasswd, openssl, Go.
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$BENCH/lib.sh"
N=${N:-4000} C=${C:-20} PER_CONN=${PER_CONN:-10} REPS=${REPS:-3}
REDIS_PORT=$((PORT_BASE + 379))
for tool in redis-server redis-cli smtp-sink htpasswd; do
  command -v "$tool" >/dev/null || { log "$tool missing (apt-get install redis-server postfix apache2-utils)"; exit 1; }
done
build_bins
ensure_cert
cleanup() { stop_pid "${PROXY_PID:-}"; stop_pid "${REDIS_PID:-}"; stop_pid "${MON_PID:-}"; stop_sink; }
trap cleanup EXIT

htpasswd -B -C 5 -b -c "$RUN/cluster-users" bench bench-secret 2>/dev/null
head -c 32 /dev/urandom | base64 > "$RUN/cluster.key"
cat > "$RUN/cluster-policy.yaml" <<POL
local_domains: [example.test]
trusted_networks: []
rate_limits:
  - {name: per-user, per: user, window: 1h, messages: 100000000, recipients: 100000000}
  - {name: per-ip, per: client_ip, window: 1h, messages: 100000000}
POL

# config WITH_CLUSTER: the instance's tlsguard.yaml.
config() {
  cat <<CFG
hostname: mail.example.test
state_dir: $RUN/cluster-state
listeners:
  - {name: submissions, address: "127.0.0.1:$IMPLICIT_PORT", tls: implicit}
tls:
  certificates: [{cert: $RUN/cert.pem, key: $RUN/key.pem}]
backend: {address: "127.0.0.1:$SINK_PORT", timeout: 30s}
auth: {users_file: $RUN/cluster-users}
# Every bench session logs in from 127.0.0.1 at once: an address may have
# at most auth_max_failures logins in flight (SECURITY.md), so raise it.
limits: {max_sessions: 20000, max_sessions_per_ip: 20000, auth_max_failures: 1000}
policy: $RUN/cluster-policy.yaml
log: {level: warn}
CFG
  if [ "$1" = 1 ]; then
    printf 'cluster:\n  redis: {address: "127.0.0.1:%s"}\n  key_file: %s\n' "$REDIS_PORT" "$RUN/cluster.key"
  fi
}

start_proxy() {
  config "$1" > "$RUN/cluster-tlsguard.yaml"
  "$RUN/tlsguard" serve --config "$RUN/cluster-tlsguard.yaml" > "$RUN/cluster-tlsguard.log" 2>&1 &
  PROXY_PID=$!
  wait_port "$IMPLICIT_PORT"
}

load() { # messages: prints messages/s
  "$RUN/tlsguard-bench" -addr "127.0.0.1:$IMPLICIT_PORT" -mode implicit -n "$1" -c "$C" -per-conn "$PER_CONN" \
    -auth bench:bench-secret -rcpt-domain example.test -q | tee -a "$RUN/cluster-bench.out" |
    awk '/^RESULT/ {for (i=1;i<=NF;i++) {split($i,a,"="); v[a[1]]=a[2]}; if (v["err"] > 0) print "errors: " v["err"] > "/dev/stderr"; print v["rate"]}'
}

start_sink
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no > "$RUN/cluster-redis.log" 2>&1 &
REDIS_PID=$!
wait_port "$REDIS_PORT"

declare -A rates
for rep in $(seq "$REPS"); do
  for mode in 0 1; do
    start_proxy "$mode"
    load 200 >/dev/null   # warm-up: handshakes, pool, Redis scripts loaded
    r=$(load "$N")
    rates[$mode]+="$r"$'\n'
    log "rep $rep, cluster=$mode: $r msgs/s"
    stop_pid "$PROXY_PID"; PROXY_PID=
  done
done
alone=$(printf '%s' "${rates[0]}" | median)
shared=$(printf '%s' "${rates[1]}" | median)

# Round trips: MONITOR prints each command a client sends (a script's own
# calls are marked "lua" and are not round trips).
start_proxy 1
load 100 >/dev/null
M=500
redis-cli -p "$REDIS_PORT" monitor > "$RUN/cluster-monitor.log" &
MON_PID=$!
sleep 0.5
load "$M" >/dev/null
sleep 0.5
stop_pid "$MON_PID"; MON_PID=
stop_pid "$PROXY_PID"; PROXY_PID=
trips=$(grep -E '^[0-9]+\.[0-9]+ \[' "$RUN/cluster-monitor.log" | grep -vi '"ping"' | grep -vc ' lua\]' || true)
sessions=$(( (M + PER_CONN - 1) / PER_CONN ))
echo "messages/s, one instance (median of $REPS; $C sessions, $PER_CONN messages per login, 5 KB):"
echo "  alone:         $alone"
echo "  with cluster:  $shared"
awk -v a="$alone" -v s="$shared" 'BEGIN { if (a > 0) printf "  cost of sharing: %.1f%%\n", (1 - s / a) * 100 }'
echo "Redis round trips for $M messages in $sessions logins: $trips"
grep -E '^[0-9]+\.[0-9]+ \[' "$RUN/cluster-monitor.log" | grep -vi '"ping"' | grep -v ' lua\]' | awk '{print tolower($4)}' | tr -d '"' | sort | uniq -c | sort -rn | sed 's/^/  /'
awk -v t="$trips" -v m="$M" 'BEGIN { printf "  per message, logins included: %.2f\n", t / m }'
