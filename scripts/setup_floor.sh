#!/usr/bin/env bash
# The second environment: isokl at its transformers floor (4.56.0, docs/decisions.md), with the real steering-vectors
# and repeng from PyPI (both need transformers 4). CI runs the tiny-model unit tests and tests/test_clients.py here.
#   bash scripts/setup_floor.sh && ISOKL_CLIENTS=1 .venv-floor/bin/python -m pytest -m "not slow and not model" ...
# Idempotent: a second run only checks (a stamp of pyproject.toml and this file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${ISOKL_FLOOR_VENV:-.venv-floor}
FLOOR="transformers==4.56.0"
stamp="$VENV/.isokl-setup"
want="$(cat pyproject.toml scripts/setup_floor.sh | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
pip install "torch==2.13.0"  # the CPU wheel, as scripts/setup.sh
pip install -e . "$FLOOR" "pytest>=8" "matplotlib>=3.7" steering-vectors repeng
"$VENV/bin/python" -c "import transformers, steering_vectors, repeng; assert transformers.__version__ == '${FLOOR#*==}', transformers.__version__"
echo "$want" > "$stamp"
echo "isokl at its transformers floor installed in $VENV" >&2
