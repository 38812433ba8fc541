#!/usr/bin/env bash
# Sets up .venv and runs the quick test tier (--full: both tiers). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
# One pytest worker per core (pytest-xdist), each test file in one worker so that its module
# fixtures run once; --full adds the full tier (CI). PYTEST_WORKERS=0 runs in this process.
exec .venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-auto}" --dist loadfile "$@"
