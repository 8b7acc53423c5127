# make install: .venv with every part editable; make test: lint, stub check, tests; make demo: the main job.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PARTS := -e ".[dev]" -e collector -e instrumentors/openai
STAMP := $(VENV)/.installed

.PHONY: install test lint demo quickstart bench protos clean

install: $(STAMP)

$(STAMP): pyproject.toml collector/pyproject.toml instrumentors/*/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel first: an unpinned torch (asked for by another package) may pull a multi-GB build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q $(PARTS)
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(PY) scripts/generate_protos.py --check

test: lint
	$(PY) -m pytest -q

demo: install
	$(PY) examples/calc_agent/train.py --out runs/calc_agent

quickstart: install
	bash examples/quickstart/run.sh

bench: install
	$(PY) benchmarks/collector_ingest.py
	$(PY) benchmarks/openai_instrumentation_overhead.py
	$(PY) benchmarks/train_loop.py

protos: install
	$(PY) scripts/generate_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
