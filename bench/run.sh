#!/usr/bin/env bash
# bench/run.sh — tlsguard vs nginx's mail proxy vs direct delivery, side by
# side, on loopback. Run as root from a checkout (it installs what is
# missing with apt-get, builds tlsguard and cmd/tlsguard-bench, and starts a
# fresh smtp-sink and proxy for every measured run, stopped by PID).
#
#   bench/run.sh all                 every scenario below, REPS times, interleaved
#   bench/run.sh SCENARIO...         e.g. bench/run.sh tlsguard-starttls50 nginx-starttls50
#   bench/run.sh LOAD...             a load for every target: direct + $PROXIES
#
# SCENARIO = TARGET-LOAD. TARGET: direct (the client straight to smtp-sink,
# always plain SMTP: smtp-sink has no TLS; the ceiling of client + sink),
# tlsguard, nginx, tlsguard-quiet (log level warn). LOAD:
#   starttls50   STARTTLS, 50 concurrent sessions, one 5 KB message per session
#   implicit50   implicit TLS, 50 sessions, one message per session
#   starttls300  STARTTLS, 300 sessions           implicit300  implicit TLS, 300
#   perconn10    STARTTLS, 50 sessions, 10 messages per session
#   big          STARTTLS, BIG_C sessions, one 25 MB message per session
#   bigref       as big with 5 KB messages (the memory reference for big)
#   hold         HOLD_N idle STARTTLS sessions held HOLD_FOR: memory per session
#   plain50      plain SMTP, 50 sessions (not in "all")
# direct runs c50 / c300 / perconn10 / big (plain); it has no bigref or hold.
#
# Knobs (environment, defaults): REPS=3 PROXIES="tlsguard nginx"
#   N50=5000 N300=8000 N_PERCONN=10000 N_DIRECT=15000 (messages per run)
#   SIZE=5000 RCPT=1 WARM=300 (warm-up messages, not measured)
#   BIG_SIZE=25000000 BIG_N=24 BIG_C=4 BIG_REF_N=400
#   HOLD_N=5000 HOLD_FOR=20s HOLD_MODE=starttls (or implicit)
#   TLS_GROUPS=x25519 LOADGEN_ARGS="" (e.g. -resume)
#   PORT_BASE=31000 (ports +25 sink, +587 STARTTLS, +465 implicit, +143 nginx auth)
#   RES=bench/results NGINX_WORKERS=auto TLSGUARD_LOG_LEVEL=info
# Output: one row per run in $RES/runs.tsv (hold: $RES/hold.tsv), and the
# tables of medians (summarize.sh) on stdout, appended to $RES/summary.md.
set -euo pipefail
cd "$(dirname "$0")"
source ./lib.sh

REPS=${REPS:-3} PROXIES=${PROXIES:-"tlsguard nginx"}
N50=${N50:-5000} N300=${N300:-8000} N_PERCONN=${N_PERCONN:-10000} N_DIRECT=${N_DIRECT:-15000}
SIZE=${SIZE:-5000} RCPT=${RCPT:-1} WARM=${WARM:-300}
BIG_SIZE=${BIG_SIZE:-25000000} BIG_N=${BIG_N:-24} BIG_C=${BIG_C:-4} BIG_REF_N=${BIG_REF_N:-400}
HOLD_N=${HOLD_N:-5000} HOLD_FOR=${HOLD_FOR:-20s} HOLD_MODE=${HOLD_MODE:-starttls} TLS_GROUPS=${TLS_GROUPS:-x25519}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
RES=${RES:-$BENCH/results}; mkdir -p "$RES"
RUN_ID=$(date -u +%Y%m%dT%H%M%S)
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

SINK_PID= PROXY_PID= SAMPLER_PID= HOLD_PID= PIDS=
cleanup() {
  sampler_stop; stop_pid "$HOLD_PID"
  declare -F proxy_stop >/dev/null && proxy_stop
  stop_sink
}
trap cleanup EXIT
trap 'exit 130' INT TERM

row() { local IFS=$'\t'; echo "$*"; }

# parse SCENARIO: sets TARGET LOAD MODE CONC NMSG MSIZE PERCONN NWARM.
parse() {
  TARGET=${1%-*} LOAD=${1##*-}
  [ "$TARGET" != "$1" ] || { echo "scenario $1: want TARGET-LOAD" >&2; exit 2; }
  MSIZE=$SIZE PERCONN=1 NWARM=$WARM
  case $LOAD in
    starttls50|implicit50|plain50) MODE=${LOAD%50} CONC=50 NMSG=$N50 ;;
    starttls300|implicit300)       MODE=${LOAD%300} CONC=300 NMSG=$N300 ;;
    c50)       MODE=plain CONC=50 NMSG=$N_DIRECT ;;
    c300)      MODE=plain CONC=300 NMSG=$N_DIRECT ;;
    perconn10) MODE=starttls CONC=50 NMSG=$N_PERCONN PERCONN=10 ;;
    big)       MODE=starttls CONC=$BIG_C NMSG=$BIG_N MSIZE=$BIG_SIZE NWARM=$BIG_C ;;
    bigref)    MODE=starttls CONC=$BIG_C NMSG=$BIG_REF_N ;;
    hold)      MODE=hold ;;
    *) echo "scenario $1: unknown load $LOAD" >&2; exit 2 ;;
  esac
  if [ "$TARGET" = direct ]; then
    case $LOAD in
      c50|c300|big) MODE=plain ;;
      perconn10) MODE=plain NMSG=$N_DIRECT ;;
      *) echo "scenario $1: direct runs c50, c300, perconn10, big (smtp-sink has no TLS)" >&2; exit 2 ;;
    esac
    return
  fi
  case $LOAD in c50|c300) echo "scenario $1: proxies run starttls50/implicit50/... (c50, c300 are direct's)" >&2; exit 2 ;; esac
  [ -f "proxies/$TARGET.sh" ] || { echo "scenario $1: no proxies/$TARGET.sh" >&2; exit 2; }
  source "proxies/$TARGET.sh"
  return 0
}

start_target() {   # sets ADDR and PIDS (the proxy's processes; empty for direct)
  local p
  for p in "$SINK_PORT" "$STARTTLS_PORT" "$IMPLICIT_PORT" "$AUTH_HTTP_PORT"; do
    # a leftover daemon would be measured instead
    if port_busy "$p"; then log "port $p is in use; stop that daemon or set PORT_BASE"; exit 1; fi
  done
  start_sink
  if [ "$TARGET" = direct ]; then ADDR=$SINK_HOST:$SINK_PORT PIDS=; return; fi
  proxy_start || { log "proxy $TARGET failed to start"; exit 1; }
  ADDR=$(proxy_addr "$MODE"); sleep 0.3; PIDS=$(proc_tree "$PROXY_PID" | tr '\n' ' ')
}
stop_target() {
  [ "$TARGET" = direct ] || proxy_stop
  stop_sink
}

lg_args() {   # the load generator's command line for a run of $1 messages
  # shellcheck disable=SC2206  # LOADGEN_ARGS is meant to split
  CMD=("$RUN/tlsguard-bench" -addr "$ADDR" -mode "$MODE" -n "$1" -c "$CONC" -size "$MSIZE"
       -rcpt "$RCPT" -per-conn "$PERCONN" -groups "$TLS_GROUPS" -timeout 60s -max-time 15m $LOADGEN_ARGS)
}

# one_load SCENARIO REP: warm-up, then the measured run; one row in runs.tsv.
one_load() {
  local sc=$1 rep=$2 out=$RUN/client.out tf=$RUN/time.out
  start_target
  local rss0=0; [ -n "$PIDS" ] && rss0=$(rss_kb $PIDS)
  lg_args "$NWARM"; "${CMD[@]}" > "$RUN/warm.out" 2>&1 || { log "$sc: warm-up had errors:"; tail -3 "$RUN/warm.out" >&2; }
  lg_args "$NMSG"
  local m0 c0 s0 rc=0
  m0=$(sink_msgs); c0=$(cpu_ticks $PIDS); s0=$(cpu_ticks "$SINK_PID")
  : > "$RUN/mem.samples"; [ -n "$PIDS" ] && sampler_start "$RUN/mem.samples" $PIDS
  /usr/bin/time -f '%U %S %M' -o "$tf" "${CMD[@]}" > "$out" 2>&1 || rc=$?
  sampler_stop
  sleep 0.2   # the sink's counter line for the last message
  local c1 s1 m1 hwm=0; c1=$(cpu_ticks $PIDS); s1=$(cpu_ticks "$SINK_PID"); m1=$(sink_msgs)
  [ -n "$PIDS" ] && hwm=$(hwm_kb $PIDS)
  stop_target
  local got=$((m1 - m0)) ok err rate p50 p99 sp50 wall tlsw
  read -r ok err rate p50 p99 sp50 wall tlsw < <(awk '/^RESULT/{for(i=2;i<=NF;i++){split($i,kv,"=");v[kv[1]]=kv[2]}
      print v["ok"]+0, v["err"]+0, v["rate"]+0, v["p50_ms"]+0, v["p99_ms"]+0, v["setup_p50_ms"]+0, v["wall_s"]+0, (v["tls"]=="" || v["tls"]=="none" ? "none" : v["tls"] "/" v["group"] (v["resumed"] ~ /^0\// ? "" : " resumed " v["resumed"]))}' "$out")
  [ -n "${ok:-}" ] || { ok=0 err=$NMSG rate=0 p50=- p99=- sp50=- wall=0 tlsw=-; }
  [ "$got" = "$ok" ] || log "$sc: the sink counted $got messages, the client says $ok were accepted"
  [ "$rc" = 0 ] || { log "$sc: client exit $rc:"; tail -5 "$out" >&2; }
  local pss; pss=$(awk 'BEGIN{m=0} $1>m{m=$1} END{print m}' "$RUN/mem.samples")
  local cu cs cm; read -r cu cs cm < <(tail -1 "$tf")
  row "$RUN_ID" "$sc" "$rep" "$TARGET" "$LOAD" "$MODE" "$CONC" "$MSIZE" "$PERCONN" "$NMSG" "$ok" "$err" "$got" \
    "$wall" "$rate" "$p50" "$p99" "$sp50" \
    $(if [ -z "$PIDS" ]; then echo - - - - -; else
      awk -v t=$((c1 - c0)) -v k="$TCK" -v n="$ok" -v h="$hwm" -v p="$pss" -v r="$rss0" \
        'BEGIN{printf "%.2f %.3f %.1f %.1f %.1f", t/k, (n ? t/k*1000/n : 0), h/1024, p/1024, r/1024}'; fi) \
    "$(awk -v u="$cu" -v s="$cs" 'BEGIN{printf "%.2f", u+s}')" \
    "$(awk -v t=$((s1 - s0)) -v k="$TCK" 'BEGIN{printf "%.2f", t/k}')" "$tlsw" >> "$RES/runs.tsv"
  log "$sc rep $rep: $(tail -1 "$RES/runs.tsv" | cut -f11-)"
}

# one_hold SCENARIO REP: open HOLD_N idle TLS sessions (HOLD_MODE), measure memory.
one_hold() {
  local sc=$1 rep=$2 out=$RUN/hold.out
  start_target; sleep 1; : > "$out"
  local r0 p0 c0 r1 p1 c1 est i
  r0=$(rss_kb $PIDS); p0=$(pss_kb $PIDS); c0=$(cpu_ticks $PIDS)
  # shellcheck disable=SC2086
  "$RUN/tlsguard-bench" -addr "$(proxy_addr "$HOLD_MODE")" -mode "$HOLD_MODE" -hold "$HOLD_N" -hold-for "$HOLD_FOR" \
    -c 100 -groups "$TLS_GROUPS" -timeout 60s $LOADGEN_ARGS > "$out" 2>&1 & HOLD_PID=$!
  for ((i = 0; i < 1800; i++)); do grep -q '^HOLDING' "$out" && break; kill -0 "$HOLD_PID" 2>/dev/null || break; sleep 0.1; done
  local port; port=$(proxy_addr "$HOLD_MODE"); port=${port##*:}
  est=$(ss -Htn state established "( sport = :$port )" | wc -l)   # the kernel's view
  sleep 2                                  # let the proxy settle (HOLD_FOR must be longer)
  r1=$(rss_kb $PIDS); p1=$(pss_kb $PIDS); c1=$(cpu_ticks $PIDS)
  wait "$HOLD_PID" || log "$sc: some held sessions failed: $(grep -m3 error "$out" | tr '\n' ' ')"; HOLD_PID=
  stop_target
  local held alive setup
  held=$(awk '/^RESULT/{for(i=2;i<=NF;i++){split($i,kv,"=");if(kv[1]=="established")print kv[2]}}' "$out")
  alive=$(awk '/^RESULT/{for(i=2;i<=NF;i++){split($i,kv,"=");if(kv[1]=="alive_after")print kv[2]}}' "$out")
  setup=$(awk '/^HOLDING/{for(i=2;i<=NF;i++){split($i,kv,"=");if(kv[1]=="setup_s")print kv[2]}}' "$out")
  row "$RUN_ID" "$sc" "$rep" "$HOLD_N" "${held:-0}" "$est" "${alive:-0}" "${setup:--}" \
    "$(awk -v a="$r0" 'BEGIN{printf "%.1f", a/1024}')" "$(awk -v a="$r1" 'BEGIN{printf "%.1f", a/1024}')" \
    "$(awk -v a="$r0" -v b="$r1" -v n="${held:-0}" 'BEGIN{printf "%.1f", n ? (b-a)/n : 0}')" \
    "$(awk -v a="$p0" -v b="$p1" -v n="${held:-0}" 'BEGIN{printf "%.1f", n ? (b-a)/n : 0}')" \
    "$(awk -v t=$((c1 - c0)) -v k="$TCK" 'BEGIN{printf "%.2f", t/k}')" >> "$RES/hold.tsv"
  log "$sc rep $rep: $(tail -1 "$RES/hold.tsv" | cut -f4-)"
}

# ---- main ------------------------------------------------------------------
[ $# -ge 1 ] || { sed -n '2,33p' "$0"; exit 2; }
ALL_LOADS="starttls50 implicit50 starttls300 implicit300 perconn10 big bigref hold"
scen=()
add_load() {   # every target that runs this load, adjacent (interleaved)
  local l=$1 p
  case $l in
    starttls50|implicit50|plain50) scen+=("direct-c50") ;;
    starttls300|implicit300) scen+=("direct-c300") ;;
    perconn10|big) scen+=("direct-$l") ;;
  esac
  for p in $PROXIES; do scen+=("$p-$l"); done
}
for a in "$@"; do
  case $a in
    all) for l in $ALL_LOADS; do add_load "$l"; done ;;
    starttls50|implicit50|starttls300|implicit300|perconn10|big|bigref|hold|plain50) add_load "$a" ;;
    *) scen+=("$a") ;;
  esac
done
# direct-c50 / direct-c300 once per repetition even if two loads asked for it
mapfile -t scen < <(printf '%s\n' "${scen[@]}" | awk '!seen[$0]++')
for sc in "${scen[@]}"; do (parse "$sc") || exit 2; done   # check names before starting

./install.sh
build_bins
log "run $RUN_ID: ${#scen[@]} scenarios x $REPS repetitions: ${scen[*]}"
[ -s "$RES/runs.tsv" ] || printf 'run_id\tscenario\trep\ttarget\tload\tmode\tc\tsize\tper_conn\tn\tok\terr\tsink_count\twall_s\tmsgs_per_s\tp50_ms\tp99_ms\tsetup_p50_ms\tproxy_cpu_s\tproxy_cpu_ms_per_msg\tproxy_peak_rss_mb\tproxy_peak_pss_mb\tproxy_rss_start_mb\tclient_cpu_s\tsink_cpu_s\ttls\n' > "$RES/runs.tsv"
[ -s "$RES/hold.tsv" ] || printf 'run_id\tscenario\trep\trequested\testablished\tss_established\talive_after\tsetup_s\trss_before_mb\trss_held_mb\trss_kb_per_session\tpss_kb_per_session\tproxy_cpu_setup_s\n' > "$RES/hold.tsv"
{
  echo "run $RUN_ID: $(date -u '+%F %T') UTC; $(nproc) cores; $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "  $(go version); $(nginx -v 2>&1); $(dpkg-query -W -f='postfix ${Version}' postfix 2>/dev/null); $(openssl version)"
  echo "  tlsguard $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && [ -n "$(GIT_OPTIONAL_LOCKS=0 git status --porcelain -- proxy cmd/tlsguard certs third_party go.mod 2>/dev/null)" ] && echo ' + uncommitted changes in proxy/cmd/certs/third_party')"
  echo "  REPS=$REPS N50=$N50 N300=$N300 N_PERCONN=$N_PERCONN N_DIRECT=$N_DIRECT SIZE=$SIZE WARM=$WARM BIG_SIZE=$BIG_SIZE BIG_N=$BIG_N BIG_C=$BIG_C HOLD_N=$HOLD_N HOLD_FOR=$HOLD_FOR HOLD_MODE=$HOLD_MODE TLS_GROUPS=$TLS_GROUPS LOADGEN_ARGS='$LOADGEN_ARGS' TLSGUARD_LOG_LEVEL=${TLSGUARD_LOG_LEVEL:-info}"
} | tee -a "$RES/runs.meta" >&2

# Repetitions are interleaved (A B C, A B C, ...) so that slow drift of the
# machine hits every scenario alike; the tables show medians per scenario.
for ((rep = 1; rep <= REPS; rep++)); do
  for sc in "${scen[@]}"; do
    parse "$sc"
    if [ "$MODE" = hold ]; then one_hold "$sc" "$rep"; else one_load "$sc" "$rep"; fi
  done
done
./summarize.sh "$RUN_ID" | tee -a "$RES/summary.md"
