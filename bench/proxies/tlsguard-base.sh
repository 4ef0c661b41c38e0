# bench/proxies/tlsguard-base.sh — tlsguard built from another tree (a
# "before" binary), run with the same config as tlsguard.sh, so that before
# and after are measured in one interleaved run:
#   go build -o /tmp/tlsguard-base ./cmd/tlsguard    # in the old tree
#   TLSGUARD_BASE_BIN=/tmp/tlsguard-base PROXIES="tlsguard-base tlsguard nginx" bench/run.sh starttls50
source "$BENCH/proxies/tlsguard.sh"
TLSGUARD_BIN=${TLSGUARD_BASE_BIN:?set TLSGUARD_BASE_BIN to the binary to compare against}
