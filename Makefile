# Set-up on a fresh machine: `make run` (the main job) and `make test` (the suite).
# Both create .venv and install into it when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Tokenizer asset packages: installed without their dependencies, which would
# change the rest of the environment (mistral-common pins an older numpy).
ASSETS := llama-models==0.3.0 mistral-common==1.13.1

.PHONY: install test test-all run clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

# CI runs `make test`: everything but the tests marked slow (the shipped defaults
# trained to the end, variants whose path a faster test already takes); test-all: all.
test: install
	$(PY) -m pytest -q -m "not slow" --durations=20 tests

test-all: install
	$(PY) -m pytest -q --durations=20 tests

# The main job: DPO of the tiny model on the bundled preference pairs (see README).
run: install
	$(PY) -m medjax.train --config=configs/dpo.py --workdir=workdir/dpo

clean:
	rm -rf $(VENV)
