# Two entry points: `make demo` (the end-to-end job on the offline default) and `make test`.
# Both create or reuse a virtualenv ($(VENV), default .venv) and install what they need.
# CI may point VENV at a cached one outside the clone, keyed on pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPS_KEY := $(shell $(PYTHON) -c "import hashlib;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:16])")
DEPS_STAMP := $(VENV)/.deps-$(DEPS_KEY)
PYTEST_ARGS ?=

.PHONY: demo test lint install bench-convert

install: $(DEPS_STAMP)
	@$(BIN)/pip install --quiet --no-deps --no-build-isolation --force-reinstall .

$(DEPS_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=68" wheel
	$(BIN)/pip install --quiet ".[test]"
	@rm -f $(VENV)/.deps-* && touch $@

demo: install
	$(BIN)/binarize demo

# ruff and mypy (pinned in the `test` extra, configured in pyproject.toml) over binarize/ and cli/
lint: install
	$(BIN)/ruff check
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest -m "not slow" -n 2 -q $(PYTEST_ARGS)

bench-convert: install
	$(BIN)/python benchmarks/torchvision_convert.py
