#!/usr/bin/env bash
# bench/attack.sh BIN_BEFORE BIN_AFTER — one good client's login latency and
# delivery rate while attackers spray passwords or hold DATA open, for two
# tlsguard binaries in one interleaved run (before, after, before, after, ...).
# Everything is on loopback: the attackers come from 127.0.0.2-254 (spray) or
# 127.0.2.1-7 (drip), the good client from 127.0.1.1, to tlsguard with a
# bcrypt users file and smtp-sink as the backend. Root is not needed.
#
#   bench/attack.sh /tmp/tlsguard-before /tmp/tlsguard-after
#   REPS=1 SCENARIOS=spray bench/attack.sh /tmp/a /tmp/b
#
# Scenarios (cmd/tlsguard-bench -attack):
#   spray        SPRAY_ATTACKERS sessions send AUTH PLAIN with wrong passwords
#                for SPRAY_USERS user names, from SPRAY_SRC, to 465
#   spray-victim the same, and every SPRAY_GOOD_EVERY-th guess is for the
#                good client's own user (a lockout by strangers)
#   drip         DRIP_ATTACKERS unauthenticated sessions from DRIP_SRC send
#                MAIL, RCPT to a local mailbox, DATA, then DRIP_BYTES every
#                DRIP_EVERY to the MX listener; smtp-sink takes SINK_SLOTS
#                sessions at once (the backend's connection slots)
# In each, the good client logs in on 465 (implicit TLS) and sends one 5 KB
# message to a local mailbox per session, one session at a time: alone for
# BASELINE, then under attack for DUR (after a ramp of at most RAMP).
#
# Knobs (environment, defaults): REPS=3 SCENARIOS="spray drip" DUR=10s
#   BASELINE=2s RAMP=3s GRACE=8s (a good attempt still running this long
#   after DUR is cut off and counted as failed) GOOD_SRC=127.0.1.1
#   BCRYPT_COST=10 SPRAY_ATTACKERS=50 SPRAY_SRC=127.0.0.2-127.0.0.254 SPRAY_USERS=10000
#   SPRAY_GOOD_EVERY=2
#   DRIP_ATTACKERS=300 DRIP_SRC=127.0.2.1-127.0.2.7 DRIP_BYTES=8 DRIP_EVERY=1s
#   SINK_SLOTS=200 BACKEND_TIMEOUT=10s PORT_BASE=32000 RES=bench/results
#   AFTER_BACKEND_YAML, AFTER_LIMITS_YAML (and BEFORE_...): lines, indented
#   two spaces, added under backend: and limits: of that binary's config only
#   (keys the other binary does not know), e.g.
#   AFTER_BACKEND_YAML='  max_connections: 150'. Otherwise limits are at
#   their defaults.
# Output: one row per run in $RES/attack.tsv, run headers in $RES/attack.meta,
# and a table of medians with after ÷ before ratios on stdout, appended to
# $RES/attack-summary.md.
set -euo pipefail
cd "$(dirname "$0")"
PORT_BASE=${PORT_BASE:-32000}
source ./lib.sh

[ $# -eq 2 ] || { sed -n '2,36p' "$0"; exit 2; }
BIN_BEFORE=$(realpath "$1") BIN_AFTER=$(realpath "$2")
for b in "$BIN_BEFORE" "$BIN_AFTER"; do [ -x "$b" ] || { echo "$b: not an executable" >&2; exit 2; }; done

REPS=${REPS:-3} SCENARIOS=${SCENARIOS:-"spray drip"} DUR=${DUR:-10s} BASELINE=${BASELINE:-2s} RAMP=${RAMP:-3s} GRACE=${GRACE:-8s}
GOOD_SRC=${GOOD_SRC:-127.0.1.1} BCRYPT_COST=${BCRYPT_COST:-10}
SPRAY_ATTACKERS=${SPRAY_ATTACKERS:-50} SPRAY_SRC=${SPRAY_SRC:-127.0.0.2-127.0.0.254} SPRAY_USERS=${SPRAY_USERS:-10000} SPRAY_GOOD_EVERY=${SPRAY_GOOD_EVERY:-2}
DRIP_ATTACKERS=${DRIP_ATTACKERS:-300} DRIP_SRC=${DRIP_SRC:-127.0.2.1-127.0.2.7} DRIP_BYTES=${DRIP_BYTES:-8} DRIP_EVERY=${DRIP_EVERY:-1s}
SINK_SLOTS=${SINK_SLOTS:-200} BACKEND_TIMEOUT=${BACKEND_TIMEOUT:-10s}
RES=${RES:-$BENCH/results}; mkdir -p "$RES"
RUN_ID=$(date -u +%Y%m%dT%H%M%S)
MX_PORT=$STARTTLS_PORT SUBMISSIONS_PORT=$IMPLICIT_PORT
export SINK_MAX=$SINK_SLOTS
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for sc in $SCENARIOS; do
  case $sc in spray|spray-victim|drip) ;; *) echo "unknown scenario $sc (spray, spray-victim, drip)" >&2; exit 2 ;; esac
done
command -v htpasswd >/dev/null || { echo "htpasswd is missing (apt-get install apache2-utils)" >&2; exit 1; }
command -v smtp-sink >/dev/null || { echo "smtp-sink is missing (apt-get install postfix)" >&2; exit 1; }

SINK_PID= PROXY_PID=
cleanup() { stop_pid "$PROXY_PID"; stop_sink; }
trap cleanup EXIT
trap 'exit 130' INT TERM

GOOD_USER=alice GOOD_PASS=good-password-$RANDOM$RANDOM
(cd "$ROOT" && go build -o "$RUN/tlsguard-bench" ./cmd/tlsguard-bench) || { log "build of cmd/tlsguard-bench failed"; exit 1; }
ensure_cert
rm -f "$RUN/attack-users.htpasswd"
htpasswd -c -b -B -C "$BCRYPT_COST" "$RUN/attack-users.htpasswd" "$GOOD_USER" "$GOOD_PASS" 2>/dev/null
printf 'local_domains: [example.test]\ntrusted_networks: []\n' > "$RUN/attack-policy.yaml"

# config WHICH: tlsguard's config, limits at their defaults; an MX listener
# (no AUTH, like port 25) and submissions (implicit TLS) on 465.
config() {
  local be lim
  if [ "$1" = after ]; then be=${AFTER_BACKEND_YAML:-} lim=${AFTER_LIMITS_YAML:-}
  else be=${BEFORE_BACKEND_YAML:-} lim=${BEFORE_LIMITS_YAML:-}; fi
  cat <<CFG
hostname: mail.example.test
state_dir: $RUN/attack-state
listeners:
  - name: mx
    address: "127.0.0.1:$MX_PORT"
    tls: starttls
    auth: false
  - name: submissions
    address: "127.0.0.1:$SUBMISSIONS_PORT"
    tls: implicit
tls:
  certificates:
    - cert: $RUN/cert.pem
      key: $RUN/key.pem
backend:
  address: "127.0.0.1:$SINK_PORT"
  timeout: $BACKEND_TIMEOUT
$be
auth:
  users_file: $RUN/attack-users.htpasswd
policy: $RUN/attack-policy.yaml
log:
  level: info
  format: json
CFG
  [ -z "$lim" ] || printf 'limits:\n%s\n' "$lim"
}

row() { local IFS=$'\t'; echo "$*"; }
field() { awk -v k="$1" '/^RESULT/{for(i=2;i<=NF;i++){split($i,kv,"=");if(kv[1]==k){print kv[2];exit}}}' "$2"; }

# one SCENARIO WHICH REP
one() {
  local sc=$1 which=$2 rep=$3 bin out=$RUN/attack-client.out p
  bin=$BIN_BEFORE; [ "$which" = after ] && bin=$BIN_AFTER
  for p in "$SINK_PORT" "$MX_PORT" "$SUBMISSIONS_PORT"; do
    if port_busy "$p"; then log "port $p is in use; stop that daemon or set PORT_BASE"; exit 1; fi
  done
  start_sink
  config "$which" > "$RUN/attack-tlsguard.yaml"
  "$bin" serve --config "$RUN/attack-tlsguard.yaml" > "$RUN/attack-tlsguard.log" 2>&1 &
  PROXY_PID=$!
  wait_port "$MX_PORT" && wait_port "$SUBMISSIONS_PORT" || { log "tlsguard ($which) did not start:"; tail -5 "$RUN/attack-tlsguard.log" >&2; exit 1; }
  local args=(-addr "127.0.0.1:$SUBMISSIONS_PORT" -mode implicit -src "$GOOD_SRC" -auth "$GOOD_USER:$GOOD_PASS"
              -rcpt-domain example.test -duration "$DUR" -baseline "$BASELINE" -ramp "$RAMP" -grace "$GRACE" -timeout 60s -max-time 10m)
  case $sc in
    spray|spray-victim)
      args+=(-attack spray -attack-addr "127.0.0.1:$SUBMISSIONS_PORT" -attack-src "$SPRAY_SRC" -attackers "$SPRAY_ATTACKERS" -spray-users "$SPRAY_USERS")
      [ "$sc" = spray-victim ] && args+=(-spray-good "$SPRAY_GOOD_EVERY") ;;
    drip)
      args+=(-attack drip -attack-addr "127.0.0.1:$MX_PORT" -attack-src "$DRIP_SRC" -attackers "$DRIP_ATTACKERS"
             -drip-bytes "$DRIP_BYTES" -drip-every "$DRIP_EVERY") ;;
  esac
  local c0 c1 rc=0
  c0=$(cpu_ticks "$PROXY_PID")
  "$RUN/tlsguard-bench" "${args[@]}" > "$out" 2>&1 || rc=$?
  c1=$(cpu_ticks "$PROXY_PID")
  sleep 0.2   # the sink's counter line for the last message
  local got; got=$(sink_msgs)
  stop_pid "$PROXY_PID"; PROXY_PID=
  stop_sink
  cp "$out" "$RUN/attack-$sc-$which-$rep.out"
  if [ "$rc" != 0 ] || ! grep -q '^RESULT' "$out"; then log "$sc $which: client exit $rc:"; tail -5 "$out" >&2; return; fi
  local sent; sent=$(( $(field ok "$out") + $(field base_ok "$out") ))
  [ "$got" = "$sent" ] || log "$sc $which rep $rep: the sink counted $got messages, the good client says $sent were accepted"
  # Wrong passwords tlsguard checked, as it logged them (its log lines, not
  # the client's view; the whole run).
  local checked; checked=$(grep -c '"msg":"auth failed".*"reason":"bad credentials"' "$RUN/attack-tlsguard.log" || true)
  local f cols=()
  for f in dur_s base_ok base_fail base_rate base_login_p50_ms base_msg_p50_ms ok fail logins rate login_p50_ms login_p90_ms login_max_ms \
           msg_p50_ms msg_p90_ms msg_max_ms att_sent att_replies att_rate att_535 att_421 att_454 att_235 att_other att_burned \
           drip_in_data drip_in_data_min drip_in_data_end drip_new_data; do
    cols+=("$(field "$f" "$out")")
  done
  row "$RUN_ID" "$sc" "$which" "$rep" "${cols[@]}" "$got" "$checked" \
    "$(awk -v t=$((c1 - c0)) -v k="$TCK" 'BEGIN{printf "%.2f", t/k}')" >> "$RES/attack.tsv"
  log "$sc $which rep $rep: good client $(field ok "$out") ok $(field fail "$out") failed, $(field rate "$out") msgs/s, login p50 $(field login_p50_ms "$out") ms max $(field login_max_ms "$out") ms; alone: $(field base_rate "$out") msgs/s, login p50 $(field base_login_p50_ms "$out") ms"
}

HEADER='run_id	scenario	binary	rep	dur_s	base_ok	base_fail	base_msgs_per_s	base_login_p50_ms	base_msg_p50_ms	ok	fail	logins	msgs_per_s	login_p50_ms	login_p90_ms	login_max_ms	msg_p50_ms	msg_p90_ms	msg_max_ms	att_sent	att_replies	att_per_s	att_535	att_421	att_454	att_235	att_other	att_burned	drip_in_data	drip_in_data_min	drip_in_data_end	drip_new_data	sink_count	auth_checked_logged	proxy_cpu_s'
[ -s "$RES/attack.tsv" ] || echo "$HEADER" > "$RES/attack.tsv"
{
  echo "attack run $RUN_ID: $(date -u '+%F %T') UTC; $(nproc) cores; $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "  before $BIN_BEFORE ($(sha256sum "$BIN_BEFORE" | cut -c1-12)), after $BIN_AFTER ($(sha256sum "$BIN_AFTER" | cut -c1-12)); tlsguard-bench from $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "  REPS=$REPS SCENARIOS='$SCENARIOS' DUR=$DUR BASELINE=$BASELINE RAMP=$RAMP GRACE=$GRACE BCRYPT_COST=$BCRYPT_COST SPRAY_ATTACKERS=$SPRAY_ATTACKERS SPRAY_SRC=$SPRAY_SRC SPRAY_USERS=$SPRAY_USERS SPRAY_GOOD_EVERY=$SPRAY_GOOD_EVERY DRIP_ATTACKERS=$DRIP_ATTACKERS DRIP_SRC=$DRIP_SRC DRIP_BYTES=$DRIP_BYTES DRIP_EVERY=$DRIP_EVERY SINK_SLOTS=$SINK_SLOTS BACKEND_TIMEOUT=$BACKEND_TIMEOUT"
  for v in BEFORE_BACKEND_YAML BEFORE_LIMITS_YAML AFTER_BACKEND_YAML AFTER_LIMITS_YAML; do
    [ -z "${!v:-}" ] || echo "  $v: $(echo "${!v}" | tr '\n' ';')"
  done
} | tee -a "$RES/attack.meta" >&2

for ((rep = 1; rep <= REPS; rep++)); do
  for sc in $SCENARIOS; do
    one "$sc" before "$rep"
    one "$sc" after "$rep"
  done
done

# The table: medians per scenario and binary, and after ÷ before (one awk
# pass: on a loaded machine a process per cell takes seconds).
summary() {
  echo
  echo "### attack run $RUN_ID: medians of $REPS runs ($(nproc) cores); the good client alone for $BASELINE, then under attack for $DUR"
  echo
  echo "| scenario | binary | alone: msgs/s | alone: login p50 ms | msgs/s | failed | login p50 ms | login p90 ms | login max ms | message p50 ms | message max ms | attackers' replies/s | passwords checked (log) | drip sessions in DATA (min) | proxy CPU s |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' -v id="$RUN_ID" -v scens="$SCENARIOS" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    $1 == id { k = $2 SUBSEP $3; n[k]++; for (i = 1; i <= NF; i++) v[k, n[k], i] = $i }
    function med(k, c,   i, m, a, t, j) {   # median of the numbers in column c
      m = 0
      for (i = 1; i <= n[k]; i++) if (v[k, i, c] ~ /^-?[0-9.]+$/) a[++m] = v[k, i, c] + 0
      if (m == 0) return "-"
      for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    END {
      nc = split("base_msgs_per_s base_login_p50_ms msgs_per_s fail login_p50_ms login_p90_ms login_max_ms msg_p50_ms msg_max_ms att_per_s auth_checked_logged drip_in_data_min proxy_cpu_s", cols, " ")
      ns = split(scens, sc, " ")
      for (s = 1; s <= ns; s++) {
        for (b = 1; b <= 2; b++) {
          bin = b == 1 ? "before" : "after"; line = "| " sc[s] " | " bin " |"
          for (c = 1; c <= nc; c++) { m[bin, c] = med(sc[s] SUBSEP bin, col[cols[c]]); line = line " " m[bin, c] " |" }
          print line
        }
        line = "| " sc[s] " | after ÷ before |"
        for (c = 1; c <= nc; c++) {
          a = m["after", c]; z = m["before", c]
          line = line " " ((a == "-" || z == "-" || z == 0) ? "-" : sprintf("%.2f", a / z)) " |"
        }
        print line
      }
    }' "$RES/attack.tsv"
}
summary | tee -a "$RES/attack-summary.md"
