# Two entry points that set everything up on a fresh machine:
#   make run    train one instance on defaults (adam, track 4, seed 0)
#   make test   lint and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint setup

$(BIN)/nnopt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch first: the package's torch range is then met and pip never
	# pulls a multi-GB CUDA build. GPU users install their CUDA torch instead.
	$(BIN)/python -m pip install -q torch==2.13.0 || \
		$(BIN)/python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/python -m pip install -q -e ".[dev,tune,ray,extras]"
	touch $(BIN)/nnopt

setup: $(BIN)/nnopt

run: setup
	$(BIN)/nnopt run

lint: setup
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests
