#!/usr/bin/env bash
# Install what mailstack needs on Debian 12 (as root), then the project into .venv.
#   scripts/install.sh          daemons + mailstack (and the worker's system user 'mailstack')
#   scripts/install.sh --server also Dovecot (IMAP, LMTP, Sieve) and the mailbox owner 'vmail'
#   scripts/install.sh --test   the server profile, the test tools and the daemons tests start
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME_PACKAGES=(postfix postfix-lmdb postfix-pcre opendkim opendkim-tools libsasl2-modules
                  ca-certificates tzdata python3 python3-venv)
SERVER_PACKAGES=(dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sieve rspamd redis-server)
TEST_PACKAGES=(swaks)
WITH_TESTS=0
WITH_SERVER=0
case "${1:-}" in
    --test) WITH_TESTS=1; WITH_SERVER=1 ;;
    --server) WITH_SERVER=1 ;;
    "") ;;
    *) echo "usage: scripts/install.sh [--server|--test]" >&2; exit 2 ;;
esac

packages=("${RUNTIME_PACKAGES[@]}")
(( WITH_SERVER )) && packages+=("${SERVER_PACKAGES[@]}")
(( WITH_TESTS )) && packages+=("${TEST_PACKAGES[@]}")
[[ -f scripts/test-packages.txt ]] && (( WITH_TESTS )) && \
    mapfile -t -O "${#packages[@]}" packages < <(grep -v '^#' scripts/test-packages.txt | grep .)

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
    echo "installing Debian packages: ${missing[*]}"
    # Debian's postfix package must not configure or start a system-wide Postfix.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# mailstack: the unprivileged user of mailstack's Python worker (the relay's XOAUTH2 hop;
# the server's lookup service and ManageSieve); vmail: owner of every mailbox
# (MAILSTACK_MAIL_USER), server only. No login, no home.
accounts=(mailstack)
(( WITH_SERVER )) && accounts+=(vmail)
for account in "${accounts[@]}"; do
    if ! id "$account" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$account"
    fi
done

PYTHON=/usr/bin/python3
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
extra=""
(( WITH_TESTS )) && extra="[test]"
.venv/bin/pip install -q --disable-pip-version-check -e ".${extra}"
