# Two commands set everything up on a fresh machine:
#   make run    installs into .venv, creates the dev PKI if missing, starts the broker (SQLite)
#   make test   installs into .venv and runs every check and test (SQLite and PostgreSQL)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Node.js conformance client's dependencies, from its committed lockfile (npm ci).
INTEROP := tests/interop/node_modules/.package-lock.json

.PHONY: run test lint proto bench clean interop

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/isb pki dev --dir certs/dev
	$(BIN)/isb serve --dev

lint: $(STAMP)
	$(BIN)/python scripts/gen_proto.py --check
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

$(INTEROP): tests/interop/package.json tests/interop/package-lock.json
	cd tests/interop && npm ci --no-audit --no-fund
	touch $(INTEROP)

interop: $(INTEROP)

# The PostgreSQL pass runs the cut-and-resume attachment test at 256 MiB (the SQLite pass runs it at 2 GiB)
# to keep CI under 20 minutes.
test: lint $(INTEROP)
	$(BIN)/python -m pytest -q
	ISB_TEST_DATABASE=postgresql ISB_TEST_ATTACHMENT_MIB=256 $(BIN)/python -m pytest -q tests/e2e

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache tests/interop/node_modules
