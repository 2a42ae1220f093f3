# tunlab: `make demo` and `make test` do all of their own set-up (as root on Debian/Ubuntu).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# the install is redone when the project's metadata or its compiled core change
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py tunlab/devices/offload/_fast.c | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: all demo test lint format typecheck unit windows-cpython bench sanitize docs clean system-deps venv

all: test

system-deps:
	@./.ci/install-system-deps

$(STAMP): pyproject.toml setup.py tunlab/devices/offload/_fast.c
	@echo "tunlab: installing into $(VENV) (pip from PyPI; about half a minute the first time)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "tunlab: installed"

venv: $(STAMP)

demo: system-deps $(STAMP)
	$(VENV)/bin/tunlab demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/actionlint .github/workflows/ci.yml
	@VULTURE=$(VENV)/bin/vulture ./.ci/dead-code

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# container tests need a docker engine: started here when none runs, stopped afterwards
unit: system-deps $(STAMP)
	@./.ci/docker-up
	@$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; ./.ci/docker-down; exit $$rc

# the portable suite on Windows' own CPython, under wine (.ci/windows-cpython; docs/development.md)
windows-cpython: $(STAMP)
	@PYTHON=$(abspath $(PY)) ./.ci/windows-cpython

test: lint typecheck unit windows-cpython

bench: system-deps $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	@./.ci/docker-up
	@$(PY) -m benchmarks; rc=$$?; ./.ci/docker-down; exit $$rc

# the documentation site (mkdocs.yml): guides and the API reference, strict and offline, into site/
docs: $(STAMP)
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo "tunlab: the site is in site/ (open site/index.html)"

# the compiled core under ASan + UBSan, through the differential fuzz (docs/development.md)
sanitize: $(STAMP)
	@./.ci/sanitize $(PY)

clean:
	rm -rf $(VENV) build site *.egg-info .mypy_cache .ruff_cache .pytest_cache
