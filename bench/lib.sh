# bench/lib.sh — helpers shared by run.sh, summarize.sh and proxies/*.sh
# (sourced, not run). Everything talks to 127.0.0.1 only, and every daemon is
# tracked and stopped by its own PID.

BENCH=${BENCH:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
ROOT=$(cd "$BENCH/.." && pwd)   # the tlsguard checkout
RUN=$BENCH/.run                 # scratch (git-ignored): certs, configs, logs, binaries
# Ports: away from the usual 2525/2587/2465 that tests and people use.
PORT_BASE=${PORT_BASE:-31000}
SINK_HOST=127.0.0.1
SINK_PORT=$((PORT_BASE + 25))        # smtp-sink, the backend of every target
STARTTLS_PORT=$((PORT_BASE + 587))   # proxy: SMTP with STARTTLS (and plain)
IMPLICIT_PORT=$((PORT_BASE + 465))   # proxy: implicit TLS
AUTH_HTTP_PORT=$((PORT_BASE + 143))  # nginx only: its auth_http responder
export PATH=$PATH:/usr/sbin:/usr/local/go/bin
TCK=$(getconf CLK_TCK)
mkdir -p "$RUN"

log() { echo "[$(date +%T)] $*" >&2; }

# wait_port PORT [SECONDS]: wait until something listens on 127.0.0.1:PORT.
wait_port() {
  local i
  for ((i = 0; i < ${2:-10} * 10; i++)); do
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q 127.0.0.1 && return 0
    sleep 0.1
  done
  log "nothing listening on 127.0.0.1:$1"; return 1
}
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# stop_pid PID: TERM, wait up to 5 s, then KILL. Only ever our own PIDs.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
}

# proc_tree PID: PID and all its descendants (nginx master + workers).
proc_tree() {
  local p; echo "$1"
  for p in $(ps -o pid= --ppid "$1"); do proc_tree "$p"; done
}

# cpu_ticks PID...: summed utime+stime (clock ticks) from /proc/PID/stat.
cpu_ticks() {
  local p s=0 line a
  for p in "$@"; do
    line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    read -ra a <<< "${line##*)}"          # a[0] = field 3 (state)
    s=$((s + a[11] + a[12]))              # fields 14, 15 = utime, stime
  done
  echo "$s"
}

# kb_field FIELD FILE PID...: sum a "Field: N kB" line over processes.
kb_field() {
  local field=$1 file=$2 p s=0 v; shift 2
  for p in "$@"; do
    v=$(awk -v f="$field:" '$1 == f {print $2; exit}' "/proc/$p/$file" 2>/dev/null)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
hwm_kb() { kb_field VmHWM status "$@"; }      # peak RSS since process start
rss_kb() { kb_field VmRSS status "$@"; }
pss_kb() { kb_field Pss smaps_rollup "$@"; }  # shared pages split between sharers

# sampler_start OUTFILE PID...: every 0.5 s append "pss_kb rss_kb" (summed).
sampler_start() {
  local out=$1; shift
  ( while :; do echo "$(pss_kb "$@") $(rss_kb "$@")" >> "$out"; sleep 0.5; done ) &
  SAMPLER_PID=$!
}
sampler_stop() { stop_pid "$SAMPLER_PID"; SAMPLER_PID=; }

# ---- backend: smtp-sink -------------------------------------------------
# -c: running counters (to check how many messages arrived); -u nobody:
# required as root; -m: max parallel sessions (default 256; SINK_MAX, default
# 12000: past it, connections wait in the listen queue, as at a Postfix
# whose smtpd processes are all busy).
start_sink() {
  local u=(); [ "$(id -u)" = 0 ] && u=(-u nobody)
  smtp-sink -c "${u[@]}" -m "${SINK_MAX:-12000}" "$SINK_HOST:$SINK_PORT" 1000 > "$RUN/sink.out" 2>&1 &
  SINK_PID=$!
  wait_port "$SINK_PORT"
}
stop_sink() { stop_pid "$SINK_PID"; SINK_PID=; }
# Messages the sink has accepted so far (its last "mesg=N" counter).
sink_msgs() { tr '\r' '\n' < "$RUN/sink.out" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2 | grep . || echo 0; }

# ---- the proxy plug-ins' addresses (proxies/*.sh may define their own) ----
# proxy_addr MODE: host:port of the proxy under test for MODE = plain |
# starttls | implicit.
proxy_addr() {
  case $1 in
    plain|starttls) echo "127.0.0.1:$STARTTLS_PORT" ;;
    implicit)       echo "127.0.0.1:$IMPLICIT_PORT" ;;
  esac
}

# ---- self-signed ECDSA P-256 certificate (shared by every TLS proxy) ----
ensure_cert() {
  [ -s "$RUN/cert.pem" ] && [ -s "$RUN/key.pem" ] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
    -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null
}

# ---- Go binaries, built from this checkout --------------------------------
build_bins() {
  (cd "$ROOT" && go build -o "$RUN/tlsguard-bench" ./cmd/tlsguard-bench) || { log "build of cmd/tlsguard-bench failed"; return 1; }
  (cd "$ROOT" && go build -o "$RUN/tlsguard" ./cmd/tlsguard) || { log "build of cmd/tlsguard failed"; return 1; }
}

# median: of the numbers on stdin, one per line ("-" if there are none).
median() { grep -E '^-?[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
