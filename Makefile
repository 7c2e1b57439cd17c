# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080
DATABASE ?= sqlite:///var/connectlink.db

.PHONY: install browser run demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Debian's Chromium, for the browser tests (Playwright drives it; it downloads no browser).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && apt-get install -y -qq chromium; }

## Serve the emulator on SQLite; on an empty database, create and print a demo retailer.
run: install
	mkdir -p var
	$(BIN)/connectlink serve --migrate --host $(HOST) --port $(PORT) --database $(DATABASE)

## ConnectLink and the example storefront together; prints where to go and how to log in.
demo: install
	PYTHONPATH=examples $(BIN)/python examples/storefront/demo.py

## Every test (about 2 minutes on 2 cores), browser tests included, one worker per core.
test: install browser
	$(BIN)/pytest -n auto

## Static checks: ruff and mypy --strict.
lint: install
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy

## The benchmark (about 5 minutes): ratios to a bare ASGI baseline and to Prism. ARGS=--scale N
bench: install
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
