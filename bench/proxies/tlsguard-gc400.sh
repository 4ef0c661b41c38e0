# bench/proxies/tlsguard-gc400.sh — tlsguard with GOGC=400: the garbage
# collector runs a quarter as often (more memory). Shows what GC costs per
# message; an experiment, not a recommended setting.
source "$BENCH/proxies/tlsguard.sh"
TLSGUARD_VARIANT_ENV="GOGC=400"
