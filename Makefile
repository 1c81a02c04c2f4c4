# The same targets for people and for CI. `make run` and `make test` set everything up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: run test lint fmt typecheck migrate bench load floor clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/deepref run

test: $(STAMP) lint typecheck
	$(BIN)/pytest -n $(PYTEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

migrate: $(STAMP)
	$(BIN)/deepref migrate

bench: $(STAMP)
	$(BIN)/python -m loadtests.bench

load: $(STAMP)
	$(BIN)/python -m loadtests.load

floor: $(STAMP)
	$(BIN)/python -m loadtests.floor

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .coverage*
