# bench/proxies/nginx.sh — nginx's mail proxy (sourced by run.sh).
# The contract of every proxies/<name>.sh:
#   proxy_start      start the proxy in the foreground of a background job
#                    (PROXY_PID = its main PID; children are found by the
#                    process tree), in front of smtp-sink at SINK_PORT;
#                    return once its ports listen
#   proxy_stop       stop it by PID
#   proxy_addr MODE  host:port for MODE = plain | starttls | implicit; lib.sh
#                    has the one every plug-in here uses (STARTTLS_PORT for
#                    plain and starttls, IMPLICIT_PORT for implicit)
# Knob: NGINX_WORKERS (default auto = one worker per core).

proxy_start() {
  ensure_cert
  mkdir -p "$RUN/nginx-tmp"
  : > "$RUN/nginx-error.log"
  sed -e "s|@RUN@|$RUN|g" -e "s|@WORKERS@|${NGINX_WORKERS:-auto}|g" \
      -e "s|@SINK_PORT@|$SINK_PORT|g" -e "s|@STARTTLS_PORT@|$STARTTLS_PORT|g" \
      -e "s|@IMPLICIT_PORT@|$IMPLICIT_PORT|g" -e "s|@AUTH_PORT@|$AUTH_HTTP_PORT|g" \
      "$BENCH/nginx/nginx.conf.in" > "$RUN/nginx.conf"
  nginx -t -q -c "$RUN/nginx.conf" -p "$RUN" || return 1
  # Foreground master (daemon off), so that $! is the master's PID.
  nginx -c "$RUN/nginx.conf" -p "$RUN" -g 'daemon off;' 2>>"$RUN/nginx-error.log" &
  PROXY_PID=$!
  wait_port "$STARTTLS_PORT" && wait_port "$IMPLICIT_PORT" && wait_port "$AUTH_HTTP_PORT"
}

proxy_stop() { stop_pid "$PROXY_PID"; PROXY_PID=; }   # TERM = fast shutdown
