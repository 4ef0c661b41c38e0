#!/bin/sh
# Start the legacy backend Postfix in the foreground as the container's main
# process; its log goes to stdout (docker compose logs mail-backend).
set -eu

# Who may relay to other domains without AUTH: loopback and RELAY_CLIENTS
# (docker-compose.yml: tlsguard's fixed address on the internal network).
# Never a whole private range: behind Docker's NAT anyone may come from it.
postconf -e "mynetworks = 127.0.0.0/8 ${RELAY_CLIENTS:-}"

exec postfix start-fg
