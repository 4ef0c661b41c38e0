# bench/proxies/tlsguard-quiet.sh — tlsguard with log level warn: no line per
# session and per transaction. Shows what the logging costs; nginx's mail
# proxy writes no per-session line at its default error_log level either.
source "$BENCH/proxies/tlsguard.sh"
TLSGUARD_VARIANT_LEVEL=warn
