# The two commands of the README:  `make demo`  and  `make test`.
# Both build a local virtualenv in .venv from nothing but a Python >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck docs unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the package metadata changes.
$(VENV)/.installed: setup.cfg setup.py pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: setup.cfg setup.py pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/python examples/workflow.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check pcs plugins tests examples benchmarks docs

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

docs: $(VENV)/.installed-dev
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

test: lint typecheck docs unit

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_overhead.py

# What a program pays: sustained loops, a busy GIL, big arguments, 1/4 processes (--full: 16).
.PHONY: bench-sustained
bench-sustained: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_sustained.py

clean:
	rm -rf $(VENV) docs/_build build *.egg-info
