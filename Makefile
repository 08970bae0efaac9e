# copier-ml: the template repository.
#   make demo   render a classical project with defaults into build/demo, install it, run its
#               pipeline, start its API, send one prediction, print it, stop the server
#   make test   create .venv and run the whole template test suite
PYTHON_BIN ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEMO := build/demo
DEMO_PORT ?= 8765

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint locks docs docs-serve clean

help:
	@echo "make demo   render + run a classical project (build/demo)"
	@echo "make test   run the template test suite"
	@echo "make lint   ruff on the template's own code"
	@echo "make locks  remake the rendered projects' uv.lock files (UPGRADE=1: newest releases)"
	@echo "make docs   build the documentation site into site/ (docs-serve: live preview)"

$(PY): pyproject.toml
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet --group dev
	touch $(PY)

venv: $(PY)

demo: $(PY)
	rm -rf $(DEMO)
	$(VENV)/bin/copier copy --trust --defaults --vcs-ref HEAD . $(DEMO)
	$(PY) hooks/demo.py $(DEMO) --port $(DEMO_PORT)

# Two workers: most tests wait on a rendered project's own processes, so two make good use of
# two cores. WORKERS=0 runs the suite in one process.
WORKERS ?= 2
# The template's plain-Python files, linted in place (the .jinja ones are linted as rendered).
TEMPLATE_PYTHON := "template/src/{{package_name}}" "template_deep_learning/src/{{package_name}}" \
	template/benchmarks/benchkit.py template/tests/testkit.py
test: $(PY)
	$(PY) -m pytest $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadgroup)

lint: $(PY)
	$(PY) -m ruff check hooks tests docs scripts
	$(PY) -m ruff format --check hooks tests docs scripts
	$(PY) -m ruff check --config scripts/ruff-template-trees.toml $(TEMPLATE_PYTHON)
	$(PY) -m ruff check --config scripts/ruff-template-trees.toml --target-version py313 $(TEMPLATE_PYTHON)
	$(PY) -m ruff format --check --config scripts/ruff-template-trees.toml $(TEMPLATE_PYTHON)

# Every rendered project ships a uv.lock: one per project type and Python version, kept in
# includes/locks/. After changing a pyproject template: `make locks`; UPGRADE=1 moves every
# package to its newest allowed release. The tests fail while a lock is stale.
locks: $(PY)
	$(PY) scripts/locks.py $(if $(filter 1,$(UPGRADE)),--upgrade)

# The documentation site (mkdocs.yml); the question reference is generated from copier.yml.
docs: $(PY)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: $(PY)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

clean:
	rm -rf build $(VENV)
