# The two commands of the README:
#   make report   run the whole tutorial on the built-in data into reports/demo
#   make test     run the test suite (unit tests + notebooks)
# Both create .venv and install the project (editable, with dev extras) on first use.

PYTHON ?= python3.12
PY312 := sh -c '"$$0" -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))"'
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= reports/demo
PYTEST_ARGS ?=
# make test runs the tests in this many processes (pytest-xdist, each with its share of the
# CPUs' threads: benchmarks/README.md, "The test suite in two processes"); 0 runs them in one
TEST_WORKERS ?= 2

.PHONY: install test test-fast report docs lint format clean

# The project runs on Python 3.12 only. Under pyenv, a bare python3.12 fails while another
# version is global: PYENV_VERSION=3.12 picks the newest installed 3.12 there. A .venv of
# another Python (an older checkout's 3.11) is made anew.
$(STAMP): pyproject.toml
	@$(PY312) $(BIN)/python 2>/dev/null || { rm -rf $(VENV); \
	  $(PYTHON) -m venv $(VENV) 2>/dev/null || PYENV_VERSION=3.12 python3.12 -m venv $(VENV); }
	@$(PY312) $(BIN)/python || { echo "$(VENV) needs Python 3.12: set PYTHON=/path/to/python3.12" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

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
