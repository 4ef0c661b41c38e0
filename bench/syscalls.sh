#!/usr/bin/env bash
# bench/syscalls.sh — read and write system calls per message of tlsguard
# (/proc/PID/io syscr, syscw), for steps too small to see in run.sh's
# end-to-end numbers (one round trip or one write fewer per message).
# Deterministic enough at low concurrency: at high load more bytes wait per
# read and the counts fall.
#   bench/syscalls.sh [BIN...]     default: bench/.run/tlsguard (run.sh's build)
# Knobs: N=2000 C=10 MODE=starttls PORT_BASE=31000 (run.sh's; do not run both).
set -euo pipefail
bins=(); for b in "$@"; do bins+=("$(realpath "$b")"); done
cd "$(dirname "$0")"
source ./lib.sh
source ./proxies/tlsguard.sh
N=${N:-2000} C=${C:-10} MODE=${MODE:-starttls}
[ ${#bins[@]} -gt 0 ] || bins=("$RUN/tlsguard")
[ -x "$RUN/tlsguard-bench" ] || build_bins
SINK_PID= PROXY_PID=
trap 'proxy_stop; stop_sink' EXIT
io() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$PROXY_PID/io"; }
printf 'binary\tmode\tC\tmessages\treads/msg\twrites/msg\n'
for bin in "${bins[@]}"; do
  for p in "$SINK_PORT" "$STARTTLS_PORT" "$IMPLICIT_PORT"; do
    if port_busy "$p"; then log "port $p is in use; set PORT_BASE"; exit 1; fi
  done
  start_sink
  TLSGUARD_BIN=$bin proxy_start
  lg=("$RUN/tlsguard-bench" -addr "$(proxy_addr "$MODE")" -mode "$MODE" -c "$C" -q)
  "${lg[@]}" -n 200 > /dev/null   # warm up: pool, first connections
  r0=$(io syscr) w0=$(io syscw)
  "${lg[@]}" -n "$N" > /dev/null
  r1=$(io syscr) w1=$(io syscw)
  awk -v b="$bin" -v m="$MODE" -v c="$C" -v n="$N" -v r=$((r1 - r0)) -v w=$((w1 - w0)) \
    'BEGIN { printf "%s\t%s\t%s\t%d\t%.2f\t%.2f\n", b, m, c, n, r / n, w / n }'
  proxy_stop; stop_sink
done
