# The two commands a fresh clone needs: `make run` and `make test`. Both set everything up.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := dev,local,bench,anthropic,serve,mcp

.PHONY: setup test lint format run clean

# Reinstalled whenever pyproject.toml or the llama.cpp build changes; the stamp keeps repeat
# runs instant. llama-cpp-python is installed first, from a wheel built with portable flags
# (no -march=native, no AMX) that is never taken from pip's cache: see scripts/llama_wheel.sh.
$(VENV)/.installed: pyproject.toml scripts/llama_wheel.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install --force-reinstall --no-deps "$$(scripts/llama_wheel.sh $(PY))"
	$(PY) -m pip install -e '.[$(EXTRAS)]'
	touch $@

setup: $(VENV)/.installed

# The viewer's browser tests drive Debian's chromium; Playwright's own browser download fails.
/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: setup /usr/bin/chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The demo: the embedded model answers a question about a 4 MB context (about a million
# tokens) with one fact hidden in it. The first run also assembles the model from its parts.
DEMO := demo
$(DEMO)/context.txt: | $(VENV)/.installed
	$(PY) -m deeprlm_bench.demo --chars 4000000 --out $@ --query-out $(DEMO)/query.txt

run: setup $(DEMO)/context.txt
	$(PY) -m deeprlm.local.weights
	$(VENV)/bin/deeprlm ask "$$(cat $(DEMO)/query.txt)" --context $(DEMO)/context.txt

clean:
	rm -rf $(VENV) $(DEMO) build dist src/*.egg-info .pytest_cache .ruff_cache
