#!/usr/bin/env bash
# CI for the MindSpore interchange (issue 9): a SEPARATE fresh virtual environment `.venv-ms`
# with the `mindspore` extra installed, then only the MindSpore tests. The default install
# (and `.venv`) stays free of MindSpore; tests/mindspore skip cleanly there.
#
# MindSpore 2.10 ships wheels for CPython 3.9-3.12 (x86_64 / aarch64) only, and needs numpy<2
# (the extra pins it). To reuse an already downloaded wheel (~800 MB) set
#   MINDSPORE_WHEEL=/path/to/mindspore-2.10.0-cp311-cp311-manylinux1_x86_64.whl
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
rm -rf .venv-ms
"$PYTHON" -m venv .venv-ms
. .venv-ms/bin/activate

if [ -n "${MINDSPORE_WHEEL:-}" ]; then
    pip install "$MINDSPORE_WHEEL"
fi
pip install ".[mindspore,test]"

# Fail loudly (not by skipping) if the extra did not give a working MindSpore.
python -c "from ascend.interop.mindspore.io import require_mindspore; ms = require_mindspore(); print('mindspore', ms.__version__)"
python -m pytest -q tests/mindspore
