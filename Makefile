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

.PHONY: install plugin browser test demo docs lint bench clean

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

# The report tests drive the system's headless Chromium (Debian's package `chromium`, driven by
# Playwright; no browser is downloaded at test time). They fail without it, so a machine that lacks
# it gets it here: root runs apt-get itself, anyone else through sudo. SHIELDKIT_CHROMIUM names
# another Chromium instead.
browser:
	@if [ -z "$$SHIELDKIT_CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1 \
	    && ! command -v chromium-browser >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  echo "installing Debian's chromium for the report tests ($${SUDO:+$$SUDO }apt-get install chromium)"; \
	  $$SUDO apt-get install -y --no-install-recommends chromium >/dev/null \
	    || { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends chromium >/dev/null; } \
	    || { echo "make browser: could not install chromium; install Debian's chromium or set SHIELDKIT_CHROMIUM" >&2; exit 1; }; \
	fi

# Every test runs: a missing browser or test dependency fails its test, saying what to install.
test: install plugin browser
	$(BIN)/python -m pytest -q --durations=15 tests plugins/shieldkit-example/tests
	$(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

# DEMO_ARGS adds options to the demo's command line, e.g. `make demo DEMO_ARGS="--out /tmp/demo"`.
demo: install plugin
	$(BIN)/shieldkit evaluate $(DEMO_ARGS)

docs: install
	$(BIN)/mkdocs build --strict --site-dir site

lint: install
	$(BIN)/ruff check shieldkit plugins tests bench examples

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) site
