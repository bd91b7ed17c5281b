# The two commands of the README: `make demo` and `make test`. Both set up what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# a stock OpenAPI client generator for the contract test, in a virtualenv of its own
TOOLS := $(VENV)/tools
TOOLS_STAMP := $(TOOLS)/.installed
# browser libraries the portal's tests load into pages (axe-core), from the npm registry, git-ignored
BROWSER_LIBS := tests/browser/node_modules/.installed
# browser libraries the portal serves (tus-js-client), copied from there into the package, git-ignored
PORTAL_ASSETS := src/levere/web/assets/tus.min.js

# the OpenID Connect provider the sign-in tests run (npm package oidc-provider, tests/oidc)
OIDC_STAMP := tests/oidc/node_modules/.installed

.PHONY: demo test lint bench install-test-deps clean portal-assets

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q src  # as a package install would (see scripts/run-bench.sh)
	touch $(STAMP)

$(TOOLS_STAMP): Makefile
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet 'openapi-python-client>=0.29,<0.30'
	touch $(TOOLS_STAMP)

$(OIDC_STAMP): tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund
	touch $(OIDC_STAMP)

## make demo: the whole delivery on the embedded default (SQLite + local folders), step by step
demo: $(STAMP)
	@# the portal's browser upload needs tus-js-client from npm; the demo runs without it
	@if [ -f $(PORTAL_ASSETS) ] || command -v npm >/dev/null; then $(MAKE) --no-print-directory portal-assets; \
	else echo "npm is not installed: the portal will run without browser upload (make portal-assets adds it)"; fi
	$(BIN)/python scripts/demo.py

## make test: lint, then the whole suite on SQLite and on PostgreSQL, with real S3 and SMTP servers
test: $(STAMP) $(TOOLS_STAMP) install-test-deps $(OIDC_STAMP) $(BROWSER_LIBS) $(PORTAL_ASSETS) lint
	scripts/run-tests.sh

$(BROWSER_LIBS): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund
	touch $(BROWSER_LIBS)

## make portal-assets: the browser libraries the portal serves (tus-js-client for uploads from the
## delivery page), from the npm registry into the package's git-ignored assets folder
portal-assets: $(PORTAL_ASSETS)

$(PORTAL_ASSETS): $(BROWSER_LIBS)
	mkdir -p src/levere/web/assets
	cp tests/browser/node_modules/tus-js-client/dist/tus.min.js $@

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

install-test-deps:
	scripts/install-test-deps.sh

## make bench: throughput and memory against baselines (nginx, rsync, rclone); see docs/benchmarks.md
bench: $(STAMP) install-test-deps
	scripts/run-bench.sh

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache tests/oidc/node_modules
