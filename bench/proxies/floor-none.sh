# bench/proxies/floor-none.sh — bench/floor without a backend: the client leg
# alone (TLS handshake and lock-step replies; messages are discarded, so
# run.sh reports that the sink counted nothing). See proxies/floor.sh.
source "$BENCH/proxies/floor.sh"
FLOOR_NO_BACKEND=1
