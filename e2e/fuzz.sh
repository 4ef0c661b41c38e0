#!/usr/bin/env bash
# fuzz.sh: a bounded fuzzing run of every go-fuzz target we own, for CI
# (.ci/run calls it after the tests). Each target runs for FUZZTIME
# (default 15s); the total stays under about 2.5 minutes on 2 cores.
#
#   e2e/fuzz.sh                    # all targets
#   FUZZTIME=60s e2e/fuzz.sh       # longer
#   e2e/fuzz.sh FuzzNormalizer     # one target
#
# A failing input is written by `go test` to the package's
# testdata/fuzz/<Target>/ folder: commit it, it becomes a regression test
# that plain `go test` runs (see SECURITY.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH=$PATH:/usr/local/go/bin

FUZZTIME=${FUZZTIME:-15s}
# package target: the parsers and decoders that read what others send us
targets=(
	"./policy FuzzParseAddress"          # MAIL/RCPT addresses (relay decisions)
	"./policy FuzzParsePolicy"           # the policy loader
	"./internal/yamlx FuzzYAMLXDecode"   # strict YAML decoding (config and policy)
	"./internal/config FuzzLoadConfig"   # the config loader
	"./internal/upstream FuzzNormalizer" # DATA/BDAT normalisation (SMTP smuggling)
	"./proxy FuzzSASL"                   # AUTH PLAIN (go-sasl) and LOGIN (ours) through Session.Auth
)

# count_files prints how many inputs a corpus folder holds (0 if none).
count_files() {
	if [ -d "$1" ]; then
		find "$1" -type f | wc -l
	else
		echo 0
	fi
}

failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then
		continue
	fi
	echo "== fuzz $name ($pkg, $FUZZTIME)"
	# A target that moved would otherwise "pass" by fuzzing nothing.
	listed=$(go test -list "^${name}\$" "$pkg" 2>&1 || true)
	if ! grep -qx "$name" <<<"$listed"; then
		echo "fuzz $name: no such fuzz target in $pkg"
		failed+=("$name")
		continue
	fi
	corpus="$pkg/testdata/fuzz/$name"
	before=$(count_files "$corpus")
	# -fuzzminimizetime bounds the minimisation of each new input, which
	# otherwise can take a minute on its own; -parallel 2 matches the CI
	# machine's cores.
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 3s -parallel 2 "$pkg" 2>&1 | tee "$log"; then
		continue
	fi
	after=$(count_files "$corpus")
	# Go 1.26's fuzz coordinator can report "context deadline exceeded" as
	# a failure when -fuzztime ends (go.dev/issue/75804, fixed in Go 1.27):
	# no input is written and nothing failed. Anything else is a failure: a
	# new input in testdata/fuzz, or a seed corpus entry that fails again.
	if [ "$after" -eq "$before" ] && grep -qx '    context deadline exceeded' "$log" &&
		! grep -q -e 'failure while testing seed corpus entry' -e 'Failing input written' "$log"; then
		echo "fuzz $name: ignored the fuzztime deadline race (go.dev/issue/75804), no failing input"
		continue
	fi
	failed+=("$name")
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzzing found failures in: ${failed[*]} (inputs saved under testdata/fuzz/)"
	exit 1
fi
echo "fuzzing: no failures"
