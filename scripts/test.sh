#!/usr/bin/env bash
# Install what is missing, lint, then run the whole test suite. Extra arguments go to pytest.
# The tests mostly wait on daemons, so they run in MAILSTACK_TEST_WORKERS pytest-xdist workers
# (default 4), each test file whole on one worker; `scripts/test.sh -n 0` runs them serially.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
set +e
.venv/bin/python -m pytest -n "${MAILSTACK_TEST_WORKERS:-4}" --dist loadfile "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
exit $code
