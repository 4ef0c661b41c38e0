#!/usr/bin/env bash
# install-deps.sh: install what the test suite needs on Debian, as root.
# Idempotent: installs only what is missing (unless --update, which always
# refreshes the package lists and installs; .ci/run uses that).
#
#   Debian: postfix (the legacy backend; no system instance is configured or
#           started), swaks + libnet-ssleay-perl (its TLS), apache2-utils
#           (htpasswd), python3, openssl, ca-certificates, nmap, haproxy,
#           curl and git (mailbox and version tests), and what
#           e2e/testdata/*/APT-PACKAGES list (Dovecot for the audit and
#           identity tests, OpenLDAP for the identity tests; docker.io,
#           docker-compose, debootstrap, qemu-user-static for the slow
#           container test)
#   Go:     Pebble v2.10.1, the ACME test CA, into $(go env GOPATH)/bin
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PATH=$PATH:/usr/sbin:/usr/local/go/bin

packages=(postfix swaks libnet-ssleay-perl apache2-utils python3 openssl ca-certificates nmap haproxy curl git)
# Other tests name the Debian packages they need in e2e/testdata/*/APT-PACKAGES
# (one per line, # comments), so that adding one needs no edit here.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for f in "$here"/testdata/*/APT-PACKAGES; do
	[ -f "$f" ] || continue
	while read -r p _; do
		case $p in '' | '#'*) continue ;; esac
		packages+=("$p")
	done <"$f"
done
pebble_version=v2.10.1

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${1:-}" = --update ] || [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || { echo "install-deps.sh: missing ${missing[*]}; run as root to install" >&2; exit 1; }
	# Postfix "No configuration": no main.cf, no system daemon; the tests run
	# private instances. A temporary policy-rc.d keeps maintainer scripts from
	# starting services.
	echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
	tmp_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		tmp_policy=1
	fi
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
	if [ "$tmp_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
	# Belt and braces: system daemons must not hold ports or a queue.
	if [ -s /var/spool/postfix/pid/master.pid ]; then
		pid=$(tr -d ' ' </var/spool/postfix/pid/master.pid)
		if kill -0 "$pid" 2>/dev/null; then postfix stop || true; fi
	fi
	if [ -s /run/dovecot/master.pid ]; then
		pid=$(cat /run/dovecot/master.pid)
		if kill -0 "$pid" 2>/dev/null; then kill "$pid" || true; fi
	fi
fi

command -v go >/dev/null || { echo "install-deps.sh: Go is not installed (expected in /usr/local/go)" >&2; exit 1; }
gobin=$(go env GOPATH)/bin
if [ ! -x "$gobin/pebble" ] || ! go version -m "$gobin/pebble" 2>/dev/null | grep -q "pebble/v2.*$pebble_version"; then
	(cd / && go install "github.com/letsencrypt/pebble/v2/cmd/pebble@$pebble_version")
fi
