# The two commands a newcomer types: `make quickstart` and `make test`.
# Both create .venv and install the pinned requirements when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install quickstart test test-slow test-planted test-bench lint format bench clean

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

quickstart: install
	$(PY) run.py experiment=quickstart

# one pytest run over tests/ and bench/tests (testpaths), two workers, a file per worker at a time (the
# module fixtures of a file are built once), the 15 slowest tests listed at the end
test: install lint
	$(PY) -m pytest -n 2 --dist loadfile --durations=15

# ruff (rules in pyproject.toml) and the layer check; CI runs it through `make test`
lint: install
	$(PY) -m ruff check src tests bench tools run.py eval.py
	$(PY) -m ruff format --check src tests bench tools run.py eval.py
	$(PY) tools/module_graph.py --check

format: install
	$(PY) -m ruff check --fix src tests bench tools run.py eval.py
	$(PY) -m ruff format src tests bench tools run.py eval.py

test-slow: install
	$(PY) -m pytest -n 2 --dist loadfile --durations=15 -m "slow"

# plant known bugs one at a time in a copy of the tree: each must make its test fail (tools/planted_bugs.py)
test-planted: install
	$(PY) tools/planted_bugs.py

test-bench: install
	$(PY) -m pytest bench/tests

bench: install
	$(PY) -m bench

clean:
	rm -rf logs outputs multirun report
