# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
EXTRAS ?= test
BIN := $(VENV)/bin
RUN ?= runs/demo
# Test processes (pytest-xdist): the 2-core CI machine runs the suite on both cores.
JOBS ?= 2

.PHONY: help install demo test lint format clean

help:
	@echo "make demo    set up .venv and run the demo (digits, every line measured) into $(RUN)"
	@echo "make test    set up .venv and run the test suite (CPU, ~minutes)"
	@echo "make lint    ruff check + format check"

$(BIN)/steplines: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $@

install: $(BIN)/steplines

demo: install
	$(BIN)/steplines run --preset demo --out $(RUN)

test: install
	$(BIN)/ruff check src tests bench examples docs/results docs/readme_numbers.py
	$(BIN)/ruff format --check src tests bench examples docs/results docs/readme_numbers.py
	$(BIN)/python -m pytest -q -n $(JOBS)

lint: install
	$(BIN)/ruff check src tests bench examples docs/results docs/readme_numbers.py
	$(BIN)/ruff format --check src tests bench examples docs/results docs/readme_numbers.py

format: install
	$(BIN)/ruff format src tests bench examples docs/results docs/readme_numbers.py
	$(BIN)/ruff check --fix src tests bench examples docs/results docs/readme_numbers.py

clean:
	rm -rf $(VENV) runs .pytest_cache
