#!/usr/bin/env bash
# Install what is missing, lint, then run the whole test suite. Extra arguments go to pytest.
# The tests mostly wait on daemons, so they run in 4 pytest-xdist workers, each test file whole
# on one worker (its module fixtures start once); `scripts/test.sh -n 0` runs them serially.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
.venv/bin/mypy
set +e
# under scripts/reap.py: a daemon a killed test worker could not stop is stopped at the end
.venv/bin/python scripts/reap.py .venv/bin/python -m pytest -n 4 --dist loadfile "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
exit $code
