#!/usr/bin/env bash
# test.sh: the one command that runs the whole test suite (unit and
# end-to-end), as the README says and .ci/run does.
#
#   e2e/test.sh                 # all packages
#   e2e/test.sh -run TestRelay  # extra flags go to `go test`
#
# As root it first installs any missing tool (e2e/install-deps.sh). Without a
# tool an e2e test is skipped locally, and fails when CI is set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH=$PATH:/usr/sbin:/usr/local/go/bin

if [ "$(id -u)" = 0 ]; then
	e2e/install-deps.sh
fi
PATH=$(go env GOPATH)/bin:$PATH
export PATH

go test -count=1 -timeout 20m "$@" ./...
# The patched go-smtp copy is its own module (third_party/go-smtp/PATCHES.md):
# its tests, including the DATA reader against a reference, run here too.
if [ $# -eq 0 ]; then
	(cd third_party/go-smtp && go test -count=1 ./...)
fi
