#!/usr/bin/env bash
# Try the server profile on one machine: install what is missing (Dovecot, the 'vmail' user),
# on the first run host DOMAIN (default example.test) with `mailstack init` (it prints the
# admin's password), then run MX, submission, IMAP, ManageSieve and the web interface in the
# foreground on loopback high ports. Usage: scripts/run-server.sh [DOMAIN]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --server
export MAILSTACK_PROFILE=server
export MAILSTACK_ROOT="${MAILSTACK_ROOT:-/var/lib/mailstack/server}"
export MAILSTACK_LISTEN_SMTP="${MAILSTACK_LISTEN_SMTP-127.0.0.1:2525}"
export MAILSTACK_LISTEN_SUBMISSION="${MAILSTACK_LISTEN_SUBMISSION-127.0.0.1:2587}"
export MAILSTACK_LISTEN_SUBMISSIONS="${MAILSTACK_LISTEN_SUBMISSIONS-127.0.0.1:2465}"
export MAILSTACK_LISTEN_IMAP="${MAILSTACK_LISTEN_IMAP-127.0.0.1:2143}"
export MAILSTACK_LISTEN_IMAPS="${MAILSTACK_LISTEN_IMAPS-127.0.0.1:2993}"
export MAILSTACK_LISTEN_MANAGESIEVE="${MAILSTACK_LISTEN_MANAGESIEVE-127.0.0.1:4190}"
export MAILSTACK_LISTEN_HTTP="${MAILSTACK_LISTEN_HTTP-127.0.0.1:2080}"
export MAILSTACK_LISTEN_HTTPS="${MAILSTACK_LISTEN_HTTPS-127.0.0.1:2443}"
mkdir -p "$MAILSTACK_ROOT" && chmod 755 "$MAILSTACK_ROOT"
if [[ ! -e "$MAILSTACK_ROOT/etc/mailstack/mailstack.env" ]]; then
    domain="${1:-example.test}"
    .venv/bin/mailstack init --domain "$domain" --hostname "${POSTFIX_myhostname:-mail.$domain}" \
        --non-interactive
fi
exec .venv/bin/mailstack run
