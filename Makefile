# `make test` and `make demo` each set themselves up from nothing in .venv.
# TORCH picks the torch build: the default is the CPU wheel available locally;
# a GPU user can say e.g. `make test TORCH="torch==2.13.0"` with a CUDA index configured.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.shieldkit-installed
export SHIELDKIT_DATA ?= $(abspath ../shared/data)

.PHONY: install plugin test demo docs lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt plugins/shieldkit-example/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=23" setuptools wheel
	$(PIP) install --quiet -c constraints.txt "$(TORCH)"
	$(PIP) install --quiet -c constraints.txt -e ".[all]"
	touch $(STAMP)

# The example plugin is installed for real (not editable), as a user would, on every run.
plugin: install
	$(PIP) install --quiet --no-build-isolation --no-deps ./plugins/shieldkit-example

test: install plugin
	$(BIN)/python -m pytest -q --durations=15 tests plugins/shieldkit-example/tests
	$(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

demo: install plugin
	$(BIN)/shieldkit evaluate

docs: install
	$(BIN)/mkdocs build --strict --site-dir site

lint: install
	$(BIN)/ruff check shieldkit plugins tests bench examples

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) site
