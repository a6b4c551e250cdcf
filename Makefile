# make test | make demo | make bench -- each creates .venv when missing and installs the project once.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lit_blind_installed

.PHONY: test demo bench lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check lit_blind tests benchmarks
	$(PY) -m ruff format --check lit_blind tests benchmarks
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/lit-blind demo --out outputs/demo

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(PY) -m ruff format lit_blind tests benchmarks
	$(PY) -m ruff check --fix lit_blind tests benchmarks

clean:
	rm -rf $(VENV) outputs
