# The two commands a newcomer types: `make quickstart` and `make test`.
# Both create .venv and install the pinned requirements when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install quickstart test test-slow bench clean

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

quickstart: install
	$(PY) run.py experiment=quickstart

test: install
	$(PY) -m pytest -n 2 --dist loadfile

test-slow: install
	$(PY) -m pytest -m "slow"

bench: install
	$(PY) -m bench

clean:
	rm -rf logs outputs multirun report
