# fgtool: `make demo` and `make test` are the only two commands a fresh clone needs.
# Each target creates .venv and installs into it when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo

.PHONY: install demo test test-slow test-all bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# Synthetic data -> C3-GAN run -> grids, layer sheet, clusters, metrics, GIFs (about 8 min on 2 cores)
demo: $(STAMP)
	bash assets/demo.sh $(DEMO)

test: $(STAMP)
	$(PY) -m pytest

# Fault-injection tests that take minutes: SIGKILL at random points + resume, a real file-size limit
test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-all: $(STAMP)
	$(PY) -m pytest -m ""

bench: $(STAMP)
	$(PY) tests/bench/bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check fgtool tests

clean:
	rm -rf runs/demo .pytest_cache
