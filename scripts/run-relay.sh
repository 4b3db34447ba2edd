#!/usr/bin/env bash
# Quick start: install what is missing, then run the relay in the foreground (Ctrl-C stops it).
# Every setting can be overridden from the environment; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export ALLOWED_SENDER_DOMAINS="${ALLOWED_SENDER_DOMAINS:-example.com}"
export DKIM_AUTOGENERATE="${DKIM_AUTOGENERATE:-1}"
export MAILSTACK_ROOT="${MAILSTACK_ROOT:-/var/lib/mailstack/relay}"
export MAILSTACK_LISTEN_SUBMISSION="${MAILSTACK_LISTEN_SUBMISSION:-127.0.0.1:1587}"
export MAILSTACK_LISTEN_SMTP="${MAILSTACK_LISTEN_SMTP-}"
mkdir -p "$MAILSTACK_ROOT" && chmod 755 "$MAILSTACK_ROOT"
exec .venv/bin/mailstack run
