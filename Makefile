# `make test` works on a fresh clone: it creates .venv, installs under constraints.txt, runs ruff and pytest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test test-fast system-packages lint constraints bench clean demo airflow mwaa matrix

# Everything, as CI runs it: ruff, then the whole suite with the end-to-end deployment (Postgres,
# Chromium and the docker-compose client come from Debian when missing).
test: $(VENV)/.installed system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# The edit loop: ruff and every test but the end-to-end deployment (about 12 minutes).
test-fast: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not e2e"

system-packages:
	scripts/install-system-packages

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt --editable ".[test]"
	touch $@

# Re-resolve the newest versions into constraints.txt (on purpose, then commit it).
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install --quiet --upgrade pip
	.venv-constraints/bin/pip install --quiet --editable ".[test]"
	.venv-constraints/bin/pip freeze --exclude-editable | grep -v '^airflow-smx' > constraints.txt
	rm -rf .venv-constraints

bench: $(VENV)/.installed
	$(BIN)/python bench/split.py

clean:
	rm -rf $(VENV)

# The one-command demo: local backend, real training, no AWS (see examples/run_demo.py).
demo: $(VENV)/.installed
	$(BIN)/python examples/run_demo.py

# Airflow on this machine (standalone, SQLite under .demo/) with the DAG loaded: http://localhost:8080
airflow: $(VENV)/.installed
	$(BIN)/python examples/run_airflow.py

# The Amazon MWAA bundle for one image (plugins.zip with the wheel and the image's constraints,
# requirements.txt, the DAG) in build/mwaa/. AIRFLOW: 2.11.2, 3.0.6, 3.2.1 or 3.3.1 (the default).
AIRFLOW ?= 3.3.1
mwaa: $(VENV)/.installed
	$(BIN)/python deploy/mwaa/build.py --airflow $(AIRFLOW)

# Every MWAA image, each in a Python 3.12 venv installed as its users do, running the DAG-level
# tests, two images at a time (venvs cached in ~/.cache/airflow-smx/matrix/; see scripts/matrix.py).
MATRIX_JOBS ?= 2
matrix: $(VENV)/.installed
	$(BIN)/python scripts/matrix.py --jobs $(MATRIX_JOBS)
