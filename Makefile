# oomcheck: every target creates the virtualenv it needs; only Python 3.11+ is required.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EVENT  ?= events/audit.json

# The SAM toolchain (aws-sam-cli, cfn-lint) lives in a venv of its own: its pins clash with the
# layer's. `sam build` runs pip with the runtime's Python (python3.13): pyenv's is put first on
# PATH when there is one, since a pyenv shim alone may not run it.
SAM_VENV  ?= .venv-sam
SAM_BIN   := $(SAM_VENV)/bin
SAM_STAMP := $(SAM_VENV)/.installed
SAM_PYTHON_DIR ?= $(lastword $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/3.13*/bin))
SAM_ENV   := SAM_CLI_TELEMETRY=0 PATH="$(if $(SAM_PYTHON_DIR),$(SAM_PYTHON_DIR):)$$PATH"

.PHONY: help demo demo-memory demo-beat test unit lint bench build invoke clean sam-tools validate lock deploy prune-versions

help:
	@echo "make demo    a real worker OOM-killed, detected, alerted (under a minute)"
	@echo "make demo-memory  a task grows: memory_pressure names it before the OOM kill"
	@echo "make demo-beat    celery beat killed: beat_stopped names the jobs that stopped"
	@echo "make test    lint, then unit, integration and end-to-end tests (+ template checks)"
	@echo "make lint    ruff and mypy"
	@echo "make bench   benchmarks with figures (not part of make test)"
	@echo "make validate  sam validate --lint"
	@echo "make build   sam build"
	@echo "make deploy  sam build + sam deploy (samconfig.toml; the first time: make deploy GUIDED=1)"
	@echo "make lock    re-resolve layers/oomcheck/requirements.txt from pyproject (UPGRADE=1: newest)"
	@echo "make invoke  run the Lambda handler locally with EVENT=$(EVENT)"

$(STAMP): pyproject.toml layers/oomcheck/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "oomcheck needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# the tests run what the layer ships: the lock's versions, as constraints (hashes dropped:
	@# pip cannot check hashes of the editable install itself)
	sed -n 's/^\([A-Za-z0-9][^ ]*==[^ ]*\).*/\1/p' layers/oomcheck/requirements.txt > $(VENV)/lock-constraints.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/lock-constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Offline the install fails without failing make: the template checks then skip and say why.
$(SAM_STAMP): tools/sam-requirements.txt
	@rm -rf $(SAM_VENV)
	@if $(PYTHON) -m venv $(SAM_VENV) && $(SAM_BIN)/python -m pip install --quiet \
	    --timeout 20 --retries 1 -r tools/sam-requirements.txt; then \
	  touch $(SAM_STAMP); \
	else \
	  rm -rf $(SAM_VENV); \
	  echo "note: no $(SAM_VENV) (package index unreachable?): SAM template checks will skip"; \
	fi

sam-tools: $(SAM_STAMP)

# The layer's lock: pyproject's runtime dependencies resolved, with every file's sha256, for the
# Lambda's platform (template.yaml: python3.13 on arm64), whatever machine runs it. Versions
# already in the lock are kept unless UPGRADE=1.
LOCK_VENV ?= .venv-lock
LOCK      := layers/oomcheck/requirements.txt
LOCK_ARGS := pyproject.toml --generate-hashes --python-version 3.13 \
             --python-platform aarch64-manylinux2014 --output-file $(LOCK)

$(LOCK_VENV)/.installed: tools/lock-requirements.txt
	@rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet -r tools/lock-requirements.txt
	@touch $@

lock: $(LOCK_VENV)/.installed
	$(LOCK_VENV)/bin/uv pip compile --quiet $(LOCK_ARGS) $(if $(UPGRADE),--upgrade) \
	  --custom-compile-command "make lock (uv pip compile $(LOCK_ARGS))"

demo: $(STAMP)
	$(BIN)/oomcheck demo

demo-memory: $(STAMP)
	$(BIN)/oomcheck demo --memory

demo-beat: $(STAMP)
	$(BIN)/oomcheck demo --beat

# The suite runs in TEST_WORKERS pytest-xdist processes, a test file per worker at a time (a file's
# module-scoped fixtures, such as the `sam build` of tests/template/test_build.py, are made once).
# Most of its time is spent waiting (on Celery workers, heartbeats, timeouts, moto), not computing:
# 4 workers suit a 2-core machine. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 4

# The gates (ruff's complexity limits, mypy) first: CI runs `make test` (.ci/run).
test: lint sam-tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

validate: sam-tools
	$(SAM_ENV) $(SAM_BIN)/sam validate --lint

build: sam-tools
	$(SAM_ENV) $(SAM_BIN)/sam build

# samconfig.toml holds the stack name, capabilities and the S3 bucket choice; the first deploy
# asks for the parameters (GUIDED=1) and saves them there.
deploy: build
	$(SAM_ENV) $(SAM_BIN)/sam deploy $(if $(GUIDED),--guided)

# With SnapStart on, each retained version keeps a cached snapshot (charged until deleted):
# delete those no alias names, the newest KEEP aside (FUNCTION: the stack's FunctionName output).
KEEP ?= 1
prune-versions: $(STAMP)
	$(BIN)/python -m oomcheck.entry.versions $(FUNCTION) --keep $(KEEP)

invoke: $(STAMP)
	$(BIN)/python -m oomcheck.demo.invoke $(EVENT)

clean:
	rm -rf $(VENV) $(SAM_VENV) $(LOCK_VENV) .aws-sam .mypy_cache .ruff_cache
