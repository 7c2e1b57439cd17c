# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Two install stamps: what running needs (`make run`, `make demo`), and that plus the dev tools
# (`make test`, `make lint`, `make bench`). Either is redone when pyproject.toml changes.
RUNTIME = $(VENV)/.installed-runtime
DEV     = $(VENV)/.installed-dev
HOST   ?= 127.0.0.1
PORT   ?= 8080
DATABASE ?= $(or $(CONNECTLINK_DATABASE_URL),sqlite:///var/connectlink.db)

.PHONY: install install-dev browser run demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# ".[dev]" holds the runtime dependencies too, so it stamps both.
$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(RUNTIME) $@

install: $(RUNTIME)
install-dev: $(DEV)

## Debian's Chromium, for the browser tests (Playwright drives it; it downloads no browser).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && apt-get install -y -qq chromium; }

## Serve the emulator on SQLite; on an empty database, create and print a demo retailer.
run: $(RUNTIME)
	mkdir -p var
	$(BIN)/connectlink serve --migrate --host $(HOST) --port $(PORT) --database $(DATABASE)

## ConnectLink and the example storefront together; prints where to go and how to log in.
demo: $(RUNTIME)
	PYTHONPATH=examples $(BIN)/python examples/storefront/demo.py

## Every test (about 9 minutes on 2 cores), browser and two-host tests included, a worker a core.
test: $(DEV) browser
	$(BIN)/pytest -n auto

## Static checks: ruff, mypy --strict, and the OpenAPI document of each profile through Spectral
## (npm fetches the pinned version once).
SPECTRAL ?= npm exec --yes --package=@stoplight/spectral-cli@6.16.3 -- spectral
lint: $(DEV)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy
	mkdir -p var
	for profile in emulator production; do \
	    $(BIN)/connectlink openapi --profile $$profile > var/openapi-$$profile.json && \
	    $(SPECTRAL) lint --ruleset .spectral.yaml --fail-severity hint \
	        var/openapi-$$profile.json || exit 1; \
	done

## The benchmark (about six minutes): ratios to a bare ASGI baseline and to Prism. ARGS="--scale N --direct-writes --granian"
bench: $(DEV)
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
