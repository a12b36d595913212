# The two commands of the README:
#   make report   run the whole tutorial on the built-in data into reports/demo
#   make test     run the test suite (unit tests + notebooks)
# Both create .venv and install the project (editable, with dev extras) on first use.

PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= reports/demo
PYTEST_ARGS ?=

.PHONY: install test test-fast report docs lint format clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

report: $(STAMP)
	$(BIN)/mmae-report --data demo --out $(OUT)

# regenerate the README's results and docs figures from a finished report
docs: $(STAMP)
	$(BIN)/python docs/update_results.py $(OUT)

lint: $(STAMP)
	$(BIN)/ruff check mmae_utils tests benchmarks docs notebooks
	$(BIN)/ruff format --check mmae_utils tests benchmarks docs notebooks

format: $(STAMP)
	$(BIN)/ruff format mmae_utils tests benchmarks docs notebooks
	$(BIN)/ruff check --fix mmae_utils tests benchmarks docs notebooks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
