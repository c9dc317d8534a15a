# oomcheck: every target creates the virtualenv it needs; only Python 3.11+ is required.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EVENT  ?= events/audit.json

.PHONY: help demo test unit lint bench build invoke clean

help:
	@echo "make demo    a real worker OOM-killed, detected, alerted (under a minute)"
	@echo "make test    unit, integration and end-to-end tests (+ template checks)"
	@echo "make lint    ruff and mypy"
	@echo "make bench   benchmarks with figures (not part of make test)"
	@echo "make build   sam build"
	@echo "make invoke  run the Lambda handler locally with EVENT=$(EVENT)"

$(STAMP): pyproject.toml layers/oomcheck/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "oomcheck needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/oomcheck demo

test: $(STAMP)
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .aws-sam .mypy_cache .ruff_cache
