#!/usr/bin/env bash
# bench/replay.sh: throughput and peak memory of "tlsguard policy replay" on
# a large generated log (docs/performance.md, "Policy replay").
#
#   bench/replay.sh            # 1 GiB log
#   SIZE=200M bench/replay.sh  # a smaller one
#
# It generates the log in a temporary folder (bench/replaylog, shaped like
# tlsguard's own transaction and session lines for policies/university.yaml),
# builds tlsguard, replays the log three ways (against the shipped policy,
# against a candidate that stops trusting the campus network, and the
# gzipped log on stdin), and prints lines/s and peak RSS (GNU time) for each.
# Nothing is kept.
set -euo pipefail
PATH=$PATH:/usr/local/go/bin
cd "$(dirname "${BASH_SOURCE[0]}")/.."
size=${SIZE:-1G}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/tlsguard" ./cmd/tlsguard
go run ./bench/replaylog -size "$size" -o "$tmp/tlsguard.log" 2>"$tmp/gen.txt"
lines=$(sed -n 's/.* \([0-9]*\) lines$/\1/p' "$tmp/gen.txt")
bytes=$(stat -c %s "$tmp/tlsguard.log")
sed 's|  - 10.20.0.0/16 .*|  - 192.0.2.0/24|' policies/university.yaml >"$tmp/untrusted.yaml"
gzip -1 -c "$tmp/tlsguard.log" >"$tmp/tlsguard.log.gz"

echo "log: $bytes bytes, $lines lines ($size); $(nproc) cores"
printf '%-32s %8s %10s %8s %12s %10s %5s\n' run seconds lines/s "CPU s" "lines/CPU-s" "peak RSS MB" exit
run() {
	local name=$1
	shift
	set +e
	/usr/bin/time -f '%e %U %S %M' -o "$tmp/time.txt" "$@" >"$tmp/out.txt" 2>&1
	local code=$?
	set -e
	read -r secs user sys kb < <(tail -n 1 "$tmp/time.txt")
	awk -v n="$name" -v s="$secs" -v u="$user" -v y="$sys" -v l="$lines" -v k="$kb" -v c="$code" \
		'BEGIN { printf "%-32s %8.1f %10.0f %8.1f %12.0f %10.1f %5d\n", n, s, l / s, u + y, l / (u + y), k / 1024, c }'
}
run "identical policy (file)" "$tmp/tlsguard" policy replay --policy policies/university.yaml "$tmp/tlsguard.log"
run "campus untrusted (file)" "$tmp/tlsguard" policy replay --policy "$tmp/untrusted.yaml" "$tmp/tlsguard.log"
run "campus untrusted (gzip, stdin)" sh -c "\"$tmp/tlsguard\" policy replay --policy \"$tmp/untrusted.yaml\" - <\"$tmp/tlsguard.log.gz\""
tail -n 25 "$tmp/out.txt" | head -n 12
