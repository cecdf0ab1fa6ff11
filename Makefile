# Newcomer entry points: `make demo` and `make test` (each creates .venv and installs what it needs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint bench clean

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev,fast]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-all: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check monai_rwkv tests scripts benchmarks
	$(VENV)/bin/ruff format --check monai_rwkv tests scripts benchmarks

bench: $(STAMP)
	$(PY) benchmarks/wkv.py --write benchmarks/RESULTS.md
	$(PY) benchmarks/network.py --write benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) build *.egg-info
