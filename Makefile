# OncoStruct — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEPS_STAMP := .local/.system-deps
REQUIREMENTS := requirements/dev.txt requirements/constraints.txt shared/pyproject.toml \
                $(wildcard services/*/pyproject.toml) tools/pyproject.toml
SERVICES := clinical imaging annotations reconstruction
VERSION  ?= 0.1.0
SCOPES   ?=
PYTEST_ARGS ?=

.PHONY: help run start stop token migrate test lint format bench images charts deps venv clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(DEPS_STAMP): tools/install-system-deps.sh
	@bash tools/install-system-deps.sh
	@mkdir -p $(dir $@) && touch $@

deps: $(DEPS_STAMP) ## install missing system packages (PostgreSQL …) with apt

$(STAMP): $(REQUIREMENTS) | $(DEPS_STAMP)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt -c requirements/constraints.txt
	@touch $@

venv: $(STAMP) ## create .venv with every service and the test tools

run: venv ## start the whole suite in the foreground (Ctrl-C stops it)
	$(PY) -m oncostruct_devtools.devstack run

start: venv ## start the whole suite in the background (make stop stops it)
	$(PY) -m oncostruct_devtools.devstack start

stop: venv ## stop a suite started with make start
	$(PY) -m oncostruct_devtools.devstack stop

token: venv ## print a development bearer token (SCOPES="a b" to narrow it)
	@$(PY) -m oncostruct_devtools.devstack token --scopes "$(SCOPES)"

migrate: venv ## apply every service's database migrations to the local cluster
	$(PY) -m oncostruct_devtools.devstack migrate

test: venv ## run the test suite (real PostgreSQL, live services, chart rendering)
	$(PY) -m tests.npm_packages
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services tools

format: venv ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

BENCH ?=
bench: venv ## run the benchmarks and print their tables (BENCH="imaging" for one; not part of make test)
	@bash tools/install-system-deps.sh --bench
	$(PY) -m bench $(BENCH)

charts: venv ## render the Helm chart offline, lint it and validate every manifest
	$(PY) tools/charts.py

images: ## build the docker/ images (needs a Docker engine)
	@docker info >/dev/null 2>&1 || { echo "make images: no Docker engine answers (docker info failed)" >&2; exit 1; }
	@for svc in $(SERVICES) devissuer; do \
	  docker build -f docker/Dockerfile.$$svc -t oncostruct/$$svc:$(VERSION) . || exit 1; done

clean: ## remove the virtualenv and caches (keeps .local data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## also remove .local (databases, keys, stored images)
	rm -rf .local
