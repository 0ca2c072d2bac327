# infljax: `make demo` runs the embedded study, `make test` runs the test suite.
# Both create .venv (Python 3.11+, pip) when missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
STAMP := $(VENV)/.installed

.PHONY: demo test lint format smoke benchmark clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) experiments/run.py --config=configs/demo.py --workdir=$(WORKDIR)

smoke: $(STAMP)
	$(PY) experiments/run.py --config=configs/demo.py:smoke --workdir=runs/smoke

test: $(STAMP) lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

benchmark: $(STAMP)
	$(PY) experiments/benchmark.py

clean:
	rm -rf runs/smoke
