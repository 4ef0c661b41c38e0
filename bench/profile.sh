#!/usr/bin/env bash
# bench/profile.sh — pprof CPU and allocation profiles of tlsguard's proxy
# under the benchmark's loads. Runs bench/pprof (the server built by
# internal/app, as `tlsguard serve` builds it, plus runtime/pprof) in front of a fresh smtp-sink, drives
# it with cmd/tlsguard-bench, and writes per load into $OUT/LOAD/:
#   cpu.pprof allocs.pprof heap.pprof   the raw profiles
#   tlsguard-pprof.yaml                 the config the harness wrote and ran
#   cpu-top.txt                         go tool pprof -top (flat and cumulative)
#   alloc-space-top.txt alloc-objects-top.txt
#   hold only: heap-1.pprof heap-inuse-top.txt goroutine-1.txt memstats-1.txt
#              (taken while HOLD_N sessions are held idle)
#
#   bench/profile.sh [LOAD...]     LOAD: starttls50 perconn10 big hold (default: all four)
# Knobs: PORT_BASE=30000 (not run.sh's, so the two never collide), N=5000,
#   HOLD_N=5000, OUT=bench/results/pprof/<UTC date>, LOG_LEVEL=info.
# Do not run it while run.sh measures: both need the two cores.
set -euo pipefail
cd "$(dirname "$0")"
PORT_BASE=${PORT_BASE:-30000}
source ./lib.sh
N=${N:-5000} HOLD_N=${HOLD_N:-5000} LOG_LEVEL=${LOG_LEVEL:-info}
OUT=${OUT:-$BENCH/results/pprof/$(date -u +%Y%m%d)}
ulimit -n 20000 2>/dev/null || true
loads=("$@"); [ ${#loads[@]} -gt 0 ] || loads=(starttls50 perconn10 big hold)

SINK_PID= H_PID= HOLD_PID=
cleanup() { stop_pid "$HOLD_PID"; [ -n "$H_PID" ] && kill -INT "$H_PID" 2>/dev/null; stop_pid "$H_PID"; stop_sink; }
trap cleanup EXIT
trap 'exit 130' INT TERM

./install.sh
build_bins
(cd "$ROOT" && go build -o "$RUN/tlsguard-pprof" ./bench/pprof)
ensure_cert
printf 'local_domains: [example.test]\ntrusted_networks: []\n' > "$RUN/pprof-policy.yaml"

for load in "${loads[@]}"; do
  d=$OUT/$load; mkdir -p "$d"
  for p in "$SINK_PORT" "$STARTTLS_PORT" "$IMPLICIT_PORT"; do
    if port_busy "$p"; then log "port $p is in use; set PORT_BASE"; exit 1; fi
  done
  start_sink
  "$RUN/tlsguard-pprof" -cert "$RUN/cert.pem" -key "$RUN/key.pem" -policy "$RUN/pprof-policy.yaml" \
    -backend "127.0.0.1:$SINK_PORT" -starttls "127.0.0.1:$STARTTLS_PORT" -implicit "127.0.0.1:$IMPLICIT_PORT" \
    -log-level "$LOG_LEVEL" -out "$d" 2> "$RUN/pprof-$load.log" &   # the log stays in .run (MBs at info)
  H_PID=$!
  wait_port "$STARTTLS_PORT"; wait_port "$IMPLICIT_PORT"
  lg=("$RUN/tlsguard-bench" -addr "127.0.0.1:$STARTTLS_PORT" -mode starttls -groups x25519 -timeout 60s -q)
  case $load in
    starttls50) "${lg[@]}" -n "$N" -c 50 ;;
    implicit50) lg[2]="127.0.0.1:$IMPLICIT_PORT"; lg[4]=implicit; "${lg[@]}" -n "$N" -c 50 ;;
    starttls300) "${lg[@]}" -n "$N" -c 300 ;;
    perconn10) "${lg[@]}" -n $((N * 2)) -c 50 -per-conn 10 ;;
    big)       "${lg[@]}" -n 16 -c 4 -size 25000000 ;;
    hold)
      "${lg[@]}" -hold "$HOLD_N" -hold-for 15s -c 100 > "$d/hold.out" 2>&1 & HOLD_PID=$!
      for ((i = 0; i < 1200; i++)); do grep -q '^HOLDING' "$d/hold.out" && break; sleep 0.1; done
      sleep 2
      echo "rss_kb $(rss_kb "$H_PID") (process, while holding)" > "$d/rss.txt"
      kill -USR1 "$H_PID"; sleep 3
      wait "$HOLD_PID" || log "hold: some sessions failed"; HOLD_PID=
      cat "$d/hold.out" ;;
    *) log "unknown load $load"; exit 2 ;;
  esac | tee "$d/loadgen.out" | grep -E '^(RESULT|HOLDING)' >&2
  kill -INT "$H_PID"; for ((i = 0; i < 100; i++)); do kill -0 "$H_PID" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$H_PID"; H_PID=
  stop_sink
  bin=$RUN/tlsguard-pprof
  go tool pprof -top -nodecount=45 "$bin" "$d/cpu.pprof" > "$d/cpu-top.txt" 2>/dev/null
  go tool pprof -top -cum -nodecount=45 "$bin" "$d/cpu.pprof" > "$d/cpu-top-cum.txt" 2>/dev/null
  go tool pprof -top -nodecount=40 -sample_index=alloc_space "$bin" "$d/allocs.pprof" > "$d/alloc-space-top.txt" 2>/dev/null
  go tool pprof -top -nodecount=40 -sample_index=alloc_objects "$bin" "$d/allocs.pprof" > "$d/alloc-objects-top.txt" 2>/dev/null
  [ -f "$d/heap-1.pprof" ] && go tool pprof -top -nodecount=40 -sample_index=inuse_space "$bin" "$d/heap-1.pprof" > "$d/heap-inuse-top.txt" 2>/dev/null
  rm -rf "$d/state"
  log "$load: profiles in $d"
done
