# bioprop: `make demo` and `make test` create .venv with pip on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint serve mlflow-ui clean

# The same two install steps as deploy/Dockerfile: dependencies from pyproject.toml first,
# then the project with --no-deps (editable here).
$(STAMP): pyproject.toml deploy/pip_deps.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python deploy/pip_deps.py -q dev
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bioprop demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

serve: $(STAMP)
	$(BIN)/bioprop serve

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///bioprop-runs/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf bioprop-runs .pytest_cache
