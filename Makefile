# The README's two commands are `make figures` and `make test`; both set up .venv/ on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Notebooks run under `make test` write their (QUICK) figures here, not over the committed ones.
TEST_FIGURES := build/test-figures

.PHONY: venv test test-fast figures book serve-book lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,book]'
	@touch $(STAMP)

# Two pytest-xdist workers; --dist loadscope keeps each test module (and its module-scoped
# fixtures, a Dask cluster among them) in one worker. An xdist worker runs execnet's I/O thread,
# so the Dask clusters its tests start take their workers from a forkserver, not a fork of it
# (analysis_lib.cluster.start_method).
PYTEST_WORKERS := -n 2 --dist loadscope

# The whole suite: the docstrings' examples, unit tests (the slow ones included) and every
# notebook through nbval.
test: venv
	$(BIN)/ruff check .
	QUICK=1 TQDM_DISABLE=1 ANALYSIS_LIB_FIGURES=$(TEST_FIGURES) \
		$(BIN)/python -m pytest $(PYTEST_WORKERS) --nbval-lax --nbval-current-env \
		--doctest-modules analysis_lib tests notebooks

# The quick loop while editing: the unit tests not marked `slow` and the docstrings' examples,
# no notebooks.
test-fast: venv
	QUICK=1 TQDM_DISABLE=1 ANALYSIS_LIB_FIGURES=$(TEST_FIGURES) \
		$(BIN)/python -m pytest $(PYTEST_WORKERS) -m "not slow" --doctest-modules analysis_lib tests

figures: venv
	$(BIN)/python scripts/run_notebooks.py notebooks

# The book: the README's overview, the committed notebooks (not re-run) and the API reference
# as a static site in $(BOOK) that works offline; its scripts and fonts come from npm (docs/).
BOOK := build/book/html
BOOK_PORT ?= 8000

book: venv
	$(BIN)/python scripts/build_book.py --out $(BOOK)

# Serves the book (built first if there is none) on http://127.0.0.1:$(BOOK_PORT)/ only.
serve-book: venv
	@test -f $(BOOK)/index.html || $(MAKE) book
	$(BIN)/python -m http.server $(BOOK_PORT) --bind 127.0.0.1 --directory $(BOOK)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check analysis_lib tests benchmarks scripts

bench: venv
	$(BIN)/python benchmarks/bench_optimizers.py

clean:
	rm -rf build .pytest_cache .ruff_cache
