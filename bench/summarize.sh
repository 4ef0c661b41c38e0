#!/usr/bin/env bash
# bench/summarize.sh [RUN_ID|all] — markdown tables of per-scenario medians
# from results/runs.tsv and results/hold.tsv (default: the latest run), and
# the performance targets as tlsguard ÷ nginx ratios of those medians.
set -euo pipefail
cd "$(dirname "$0")"
source ./lib.sh
RES=${RES:-$BENCH/results}; R=$RES/runs.tsv H=$RES/hold.tsv
id=${1:-$(tail -n +2 "$R" | tail -1 | cut -f1)}

sel() { awk -F'\t' -v id="$id" -v s="$2" -v c="$3" 'NR>1 && (id=="all" || $1==id) && $2==s {print $c}' "$1"; }
med() { sel "$@" | median; }
scen() { awk -F'\t' -v id="$id" 'NR>1 && (id=="all" || $1==id) && !seen[$2]++ {print $2}' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a=="-"||b=="-"||b==0) print "-"; else printf "%.2f", a/b}'; }

if [ -s "$R" ] && [ -n "$(scen "$R")" ]; then
  echo
  echo "### run $id: medians of $(sel "$R" "$(scen "$R" | head -1)" 3 | wc -l) runs ($(nproc) cores, $(uname -r))"
  echo
  echo "| scenario | mode | C | body bytes | msgs/session | msgs/s | p50 ms | p99 ms | setup p50 ms | proxy CPU ms/msg | proxy peak RSS MB | proxy peak PSS MB | proxy RSS at start MB | client CPU s | sink CPU s | errors | TLS |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for s in $(scen "$R"); do
    errs=$(sel "$R" "$s" 12 | awk '{t+=$1} END{print t+0}')
    bad=$(awk -F'\t' -v id="$id" -v s="$s" 'NR>1 && (id=="all"||$1==id) && $2==s && $11!=$13 {n++} END{print n+0}' "$R")
    [ "$bad" = 0 ] || errs="$errs ($bad runs: sink count ≠ client)"
    echo "| $s | $(sel "$R" "$s" 6 | head -1) | $(sel "$R" "$s" 7 | head -1) | $(sel "$R" "$s" 8 | head -1) | $(sel "$R" "$s" 9 | head -1) | $(med "$R" "$s" 15) | $(med "$R" "$s" 16) | $(med "$R" "$s" 17) | $(med "$R" "$s" 18) | $(med "$R" "$s" 20) | $(med "$R" "$s" 21) | $(med "$R" "$s" 22) | $(med "$R" "$s" 23) | $(med "$R" "$s" 24) | $(med "$R" "$s" 25) | $errs | $(sel "$R" "$s" 26 | head -1) |"
  done
fi
if [ -s "$H" ] && [ -n "$(scen "$H")" ]; then
  echo
  echo "| hold scenario | sessions | established | alive after hold | setup s | proxy RSS before MB | proxy RSS held MB | RSS KB/session | PSS KB/session | proxy CPU for the handshakes s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for s in $(scen "$H"); do
    echo "| $s | $(med "$H" "$s" 4) | $(med "$H" "$s" 5) | $(med "$H" "$s" 7) | $(med "$H" "$s" 8) | $(med "$H" "$s" 9) | $(med "$H" "$s" 10) | $(med "$H" "$s" 11) | $(med "$H" "$s" 12) | $(med "$H" "$s" 13) |"
  done
fi

# The performance targets (docs/performance.md), from the medians above.
has() { scen "$1" | grep -qx "$2"; }
lines=()
for l in starttls50 implicit50 starttls300 implicit300 perconn10; do
  has "$R" "tlsguard-$l" && has "$R" "nginx-$l" || continue
  want=1.5; case $l in *300) want=1.2 ;; perconn10) want=- ;; esac
  rt=$(ratio "$(med "$R" "tlsguard-$l" 15)" "$(med "$R" "nginx-$l" 15)")
  rc=$(ratio "$(med "$R" "tlsguard-$l" 20)" "$(med "$R" "nginx-$l" 20)")
  v1=$(awk -v r="$rt" -v w="$want" 'BEGIN{if (w=="-"||r=="-") print "(no target)"; else print (r>=w ? "met" : "MISSED")}')
  v2=$(awk -v r="$rc" 'BEGIN{if (r=="-") print "-"; else print (r<=0.5 ? "met" : "MISSED")}')
  lines+=("| $l | $rt (target ≥ $want): $v1 | $rc (target ≤ 0.50): $v2 |")
done
if [ ${#lines[@]} -gt 0 ]; then
  echo
  echo "| load | msgs/s tlsguard ÷ nginx | CPU per message tlsguard ÷ nginx |"
  echo "|---|---|---|"
  printf '%s\n' "${lines[@]}"
fi
if [ -s "$H" ] && has "$H" tlsguard-hold && has "$H" nginx-hold; then
  for c in 11 12; do
    r=$(ratio "$(med "$H" tlsguard-hold $c)" "$(med "$H" nginx-hold $c)")
    echo
    echo "Idle TLS session, $([ $c = 11 ] && echo RSS || echo PSS) KB per session, tlsguard ÷ nginx: $r (target ≤ 1.00): $(awk -v r="$r" 'BEGIN{print (r!="-" && r<=1 ? "met" : "MISSED")}')"
  done
fi
for p in tlsguard nginx; do
  if has "$R" "$p-big" && has "$R" "$p-bigref"; then
    echo
    echo "$p peak RSS with 25 MB messages: $(med "$R" "$p-big" 21) MB vs $(med "$R" "$p-bigref" 21) MB with 5 KB messages at the same concurrency (ratio $(ratio "$(med "$R" "$p-big" 21)" "$(med "$R" "$p-bigref" 21)"))."
  fi
done
