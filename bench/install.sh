#!/usr/bin/env bash
# bench/install.sh — install what the benchmark needs, from Debian
# (idempotent: installs only what is missing; safe to re-run).
#   postfix                    -> /usr/sbin/smtp-sink (the backend). The Postfix
#                                 daemon itself is not configured or left running.
#   nginx + libnginx-mod-mail  -> the reference mail proxy
#   openssl, time, procps, iproute2, psmisc -> cert, /usr/bin/time, ps, ss
# Go (to build tlsguard and cmd/tlsguard-bench) is expected on PATH or in
# /usr/local/go/bin; Debian's golang-go is only a fallback and may be older
# than go.mod asks for.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
export PATH=$PATH:/usr/sbin:/usr/local/go/bin

need=()
for p in postfix nginx libnginx-mod-mail openssl time procps iproute2 psmisc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
command -v go >/dev/null || need+=(golang-go)

if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "install.sh: missing ${need[*]}; run as root to install them" >&2; exit 1; }
  # Postfix "No configuration": no main.cf, no running daemon.
  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
  # Keep the packages' maintainer scripts from starting nginx or postfix.
  tmp_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; tmp_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ "$tmp_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

for b in smtp-sink nginx openssl go ss; do
  command -v "$b" >/dev/null || { echo "install.sh: missing $b" >&2; exit 1; }
done
test -f /usr/lib/nginx/modules/ngx_mail_module.so || { echo "install.sh: missing ngx_mail_module.so (libnginx-mod-mail)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "install.sh: missing /usr/bin/time" >&2; exit 1; }
echo "install.sh: ok" >&2
