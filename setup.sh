#!/usr/bin/env bash
# Creates .venv with the project's dependencies, as pyproject.toml declares them (idempotent;
# a few minutes the first time). EXTRAS picks the optional group: test (default) or dev (adds ruff).
# The install holds only metadata: the scripts run from this folder, as published.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-test}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Reinstalled only when pyproject.toml (or the group) changed since the last install.
STAMP=".venv/installed-$EXTRAS"
WANTED=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANTED" ]; then
    LOG=$(mktemp)
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check ".[$EXTRAS]" >"$LOG" 2>&1; then
        cat "$LOG"; rm -f "$LOG"; echo "setup.sh: pip could not install the dependencies (above)" >&2; exit 1
    fi
    grep -v "is ignored: it is neither a file nor a directory" "$LOG" || true
    rm -f "$LOG" && rm -rf build ./*.egg-info
    echo "$WANTED" > "$STAMP"
fi
.venv/bin/python -c "import torch, torchvision; print(f'torch {torch.__version__}, torchvision {torchvision.__version__}')"
