#!/usr/bin/env bash
# postfix-backend.sh: a throwaway "legacy backend" Postfix on loopback, for
# trying tlsguard by hand. It is the same instance the e2e tests start
# (config in e2e/testdata/postfix/): plaintext only, no AUTH, trusts
# 127.0.0.0/8, stores mail for example.org and foreign.test in Maildirs,
# refuses unknown mailboxes with 550 5.1.1, never sends anything out.
#
#   sudo e2e/postfix-backend.sh start [PORT]   # default 2525 (tlsguard.yaml's backend)
#   sudo e2e/postfix-backend.sh status
#   sudo e2e/postfix-backend.sh mail           # list delivered messages
#   sudo e2e/postfix-backend.sh stop           # stop it and delete its files
#
# Mailboxes: alice@ bob@ victim@ postmaster@example.org, carol@ dave@foreign.test.
# Files live in $TLSGUARD_POSTFIX_DIR (default /tmp/tlsguard-postfix-backend).
# Needs root and Debian's postfix package (apt-get install postfix; choose
# "No configuration": no system Postfix is needed or touched).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
templates=$here/testdata/postfix
base=${TLSGUARD_POSTFIX_DIR:-/tmp/tlsguard-postfix-backend}
PATH=$PATH:/usr/sbin

die() { echo "postfix-backend.sh: $*" >&2; exit 1; }

need() {
	[ "$(id -u)" = 0 ] || die "run as root (Postfix starts as root and drops to the postfix user)"
	command -v postfix >/dev/null || die "postfix is not installed: apt-get install postfix (choose 'No configuration')"
}

running() { [ -f "$base/conf/main.cf" ] && ! /usr/lib/postfix/sbin/master -c "$base/conf" -t 2>/dev/null; }

start() {
	local port=${1:-2525}
	need
	running && die "already running in $base (stop it first)"
	# Postfix's master starts even when it cannot bind (it only logs the
	# failure), so a port held by another process is found here.
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "127.0.0.1:$port is already in use by another process; stop it or give another port: $0 start PORT"
	fi
	rm -rf "$base"
	mkdir -p "$base/conf" "$base/queue" "$base/mail"
	chmod 755 "$base" "$base/queue" # the postfix user must reach its queue
	chown nobody:nogroup "$base/mail"
	local uid gid
	uid=$(id -u nobody) gid=$(id -g nobody)
	for f in main.cf master.cf vmailbox eod_senders; do
		sed -e "s#@BASE@#$base#g" -e "s#@PORT@#$port#g" -e "s#@VUID@#$uid#g" -e "s#@VGID@#$gid#g" \
			"$templates/$f" >"$base/conf/$f"
		touch -d "1 minute ago" "$base/conf/$f" # Postfix waits for a just-written table to settle
	done
	postfix -c "$base/conf" check
	postfix -c "$base/conf" start 2>&1 || { cat "$base/maillog" >&2; die "start failed"; }
	echo "legacy backend Postfix listening on 127.0.0.1:$port (log: $base/maillog, mail: $base/mail)"
}

stop() {
	need
	if running; then postfix -c "$base/conf" stop; fi
	rm -rf "$base"
}

status() {
	if running; then
		echo "running on $(awk '$2 == "inet" {print $1}' "$base/conf/master.cf") (log: $base/maillog)"
	else
		echo "not running"
		return 1
	fi
}

mail() {
	[ -d "$base/mail" ] || die "no backend in $base"
	find "$base/mail" -type f -path '*/new/*' -o -type f -path '*/cur/*' | sort | while read -r f; do
		echo "== $f"
		sed -n '/^$/q;p' "$f"
	done
}

case ${1:-} in
start) shift; start "$@" ;;
stop) stop ;;
status) status ;;
mail) mail ;;
*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
