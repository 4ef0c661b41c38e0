# bench/proxies/tlsguard-alt.sh — a second extra tlsguard binary (e.g. a
# candidate built with a patched library), as tlsguard-base.sh:
#   go build -modfile=/tmp/fork.mod -o /tmp/tlsguard-alt ./cmd/tlsguard
#   TLSGUARD_ALT_BIN=/tmp/tlsguard-alt PROXIES="tlsguard tlsguard-alt nginx" bench/run.sh big
source "$BENCH/proxies/tlsguard.sh"
TLSGUARD_BIN=${TLSGUARD_ALT_BIN:?set TLSGUARD_ALT_BIN to the binary to compare against}
