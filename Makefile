# make install: .venv with every part editable; make test: lint, stub check, tests; make demo: the main job.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PARTS := -e ".[dev]" -e collector -e instrumentors/openai
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench protos clean

install: $(STAMP)

$(STAMP): pyproject.toml collector/pyproject.toml instrumentors/*/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(PARTS)
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(PY) scripts/generate_protos.py --check

test: lint
	$(PY) -m pytest -q

demo: install
	bash examples/quickstart/run.sh

bench: install
	$(PY) benchmarks/collector_ingest.py
	$(PY) benchmarks/openai_instrumentation_overhead.py

protos: install
	$(PY) scripts/generate_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
