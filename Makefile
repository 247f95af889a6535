# The README's two commands are `make figures` and `make test`; both set up .venv/ on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Notebooks run under `make test` write their (QUICK) figures here, not over the committed ones.
TEST_FIGURES := build/test-figures

.PHONY: venv test test-fast figures lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Two pytest-xdist workers for the quick loop; --dist loadscope keeps each test module in one
# worker. The whole suite runs in one process: its Dask tests fork worker processes, and a fork
# of an xdist worker (which runs execnet's I/O thread) once hung (see the README).
PYTEST_WORKERS := -n 2 --dist loadscope

# The whole suite: the docstrings' examples, unit tests (the slow ones included) and every
# notebook through nbval.
test: venv
	$(BIN)/ruff check .
	QUICK=1 TQDM_DISABLE=1 ANALYSIS_LIB_FIGURES=$(TEST_FIGURES) \
		$(BIN)/python -m pytest --nbval-lax --nbval-current-env \
		--doctest-modules analysis_lib tests notebooks

# The quick loop while editing: the unit tests not marked `slow` and the docstrings' examples,
# no notebooks.
test-fast: venv
	QUICK=1 TQDM_DISABLE=1 ANALYSIS_LIB_FIGURES=$(TEST_FIGURES) \
		$(BIN)/python -m pytest $(PYTEST_WORKERS) -m "not slow" --doctest-modules analysis_lib tests

figures: venv
	$(BIN)/python scripts/run_notebooks.py notebooks

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check analysis_lib tests benchmarks scripts

bench: venv
	$(BIN)/python benchmarks/bench_optimizers.py

clean:
	rm -rf build .pytest_cache .ruff_cache
