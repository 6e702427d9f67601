# ca4: every target sets up what it needs on a fresh machine (see README.md).
#   make run    execute the notebook headlessly into build/ca4.ipynb and export build/ca4.pdf
#   make test   run the test suite
#   make lab    open the notebook in JupyterLab
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
BUILD := build
CA4_PROFILE ?= full
export CA4_PROFILE
# The environment is rebuilt whenever requirements.txt changes: its hash names the stamp.
REQUIREMENTS_HASH := $(shell sha256sum requirements.txt | cut -c1-16)
VENV_STAMP := $(VENV)/.installed-$(REQUIREMENTS_HASH)
PDF_PACKAGES := texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc
# The browser test (tests/test_browser.py) drives Debian's Chromium with Playwright.
BROWSER_PACKAGES := chromium
# Extra options for `make lab`, for example LAB_ARGS="--port=8899 --no-browser".
LAB_ARGS ?=

.PHONY: help venv test run execute pdf pdf-tools browser-tools lab lint bench clean distclean

help:
	@echo "make run        full assignment (CA4_PROFILE=full|fast) -> build/ca4.ipynb, build/ca4.pdf"
	@echo "make test       run the tests (creates .venv if needed)"
	@echo "make lab        open ca4.ipynb in JupyterLab (the latent-space explorer works there)"
	@echo "make pdf        export build/ca4.ipynb to build/ca4.pdf again"
	@echo "make bench      training, whole-epoch, latent-grid and op-type benchmarks -> build/bench.json, build/op_profile.{json,png}"
	@echo "make lint       ruff over the Python files and the notebook"
	@echo "make clean      remove build/ (outputs and the trained-model cache)"
	@echo "make distclean  clean, and remove .venv"

venv: $(VENV_STAMP)

# The installer: uv where it is on PATH or pip can install it into the new environment (no
# uv needed beforehand, no --user, as root or not), else pip, and pip again if uv fails; one
# line says which. CA4_INSTALLER=pip always uses pip. uv reads none of pip's settings
# (pip.conf, PIP_* variables): it installs from PyPI, or from UV_INDEX_URL and the like. It
# trusts the system's certificates, as pip does (else a proxy that only they trust fails it).
CA4_INSTALLER ?= auto
PIP_INSTALL := $(VPY) -m pip install --quiet --disable-pip-version-check
UV_TLS := UV_NATIVE_TLS=$${UV_NATIVE_TLS:-1} UV_SYSTEM_CERTS=$${UV_SYSTEM_CERTS:-1}

$(VENV_STAMP): requirements.txt
	@if [ ! -x $(VPY) ] || ! $(VPY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then \
	  echo "creating $(VENV) with $(PYTHON)"; rm -rf $(VENV); $(PYTHON) -m venv $(VENV); fi
	@$(VPY) -c 'import sys; sys.version_info[:2] == (3, 11) or print("warning: ca4 is pinned for Python 3.11, this is", sys.version.split()[0])'
	@uv=""; why=""; \
	if [ "$(CA4_INSTALLER)" = pip ]; then why="CA4_INSTALLER=pip"; \
	elif command -v uv >/dev/null; then uv=$$(command -v uv); \
	elif [ -x $(VENV)/bin/uv ]; then uv=$(VENV)/bin/uv; \
	elif $(PIP_INSTALL) --retries 1 --timeout 30 uv >/dev/null 2>&1 && [ -x $(VENV)/bin/uv ]; then \
	  uv=$(VENV)/bin/uv; why="installed into $(VENV) with pip"; \
	else why="uv is not on PATH and pip could not install it"; fi; \
	if [ -n "$$uv" ]; then \
	  echo "installing the pinned packages of requirements.txt into $(VENV) with uv: $$uv$${why:+ ($$why)}"; \
	  if ! $(UV_TLS) "$$uv" pip install --quiet --compile-bytecode --python $(VPY) -r requirements.txt; then \
	    echo "uv failed (see above): installing with pip instead (a few minutes the first time)"; \
	    $(PIP_INSTALL) -r requirements.txt; fi; \
	else \
	  echo "installing the pinned packages of requirements.txt into $(VENV) with pip ($$why; a few minutes the first time)"; \
	  $(PIP_INSTALL) -r requirements.txt; fi
	rm -f $(VENV)/.installed-*
	touch $@

test: venv browser-tools
	$(VPY) -m pytest

# PDF export needs xelatex and pandoc: install them when we may (root with apt), else say how.
pdf-tools:
	@missing=""; for tool in xelatex pandoc; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing the PDF tools ($$missing ) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(PDF_PACKAGES) >/dev/null; \
	  else \
	    echo "error: PDF export needs$$missing. Install them with:"; \
	    echo "  sudo apt-get install --no-install-recommends $(PDF_PACKAGES)"; \
	    echo "(other systems: a TeX distribution with xelatex, and pandoc)"; exit 1; \
	  fi; \
	fi

# The browser test needs Chromium: install Debian's when we may (root with apt), else say how
# (the test then skips, except in CI, where CA4_REQUIRE_BROWSER=1 makes it fail).
browser-tools:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium for the browser test ($(BROWSER_PACKAGES)) with apt-get"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; } \
	      || echo "warning: could not install $(BROWSER_PACKAGES); the browser test will be skipped"; \
	  else \
	    echo "note: the browser test needs Chromium and will be skipped. Install it with:"; \
	    echo "  sudo apt-get install --no-install-recommends $(BROWSER_PACKAGES)"; \
	  fi; \
	fi

run: venv pdf-tools
	$(VPY) -m tools.build run --profile $(CA4_PROFILE)

execute: venv
	$(VPY) -m tools.build execute --profile $(CA4_PROFILE)

pdf: venv pdf-tools
	$(VPY) -m tools.build pdf

# The kernel is this environment's Python (ipykernel's own "python3" kernel), so the notebook
# sees the pinned packages and the same trained-model cache as make run. JupyterLab refuses to
# start as root without --allow-root; in a container, a cloud notebook or CI the user is root.
lab: venv
	@$(VPY) -c 'import os, sys; from jupyter_client.kernelspec import KernelSpecManager; \
	  spec = KernelSpecManager().get_kernel_spec("python3"); command = spec.argv[0]; \
	  command = sys.executable if command in ("python", "python3", "python3.11") else command; \
	  ours = os.path.realpath(command) == os.path.realpath(sys.executable); \
	  print(f"make lab: the notebook kernel {spec.display_name!r} runs {command}" + ("" if ours else \
	    f", not this environment'"'"'s Python: remove {spec.resource_dir} or choose another kernel"))'
	@echo "make lab: trained models are shared with make run through $${CA4_BUILD_DIR:-$(BUILD)}/cache/"
	@if [ "$$(id -u)" = 0 ]; then \
	  echo "make lab: running as root (a container, cloud notebook or CI machine), so JupyterLab starts with --allow-root"; \
	  allow_root=--allow-root; else allow_root=; fi; \
	echo "make lab: starting JupyterLab on ca4.ipynb; open the http://... URL with ?token= that it prints below (Ctrl-C twice stops it)"; \
	exec $(VENV)/bin/jupyter lab ca4.ipynb $$allow_root $(LAB_ARGS)

lint: venv
	$(VENV)/bin/ruff check ca4_helpers.py tools tests benchmarks experiments ca4.ipynb

bench: venv
	$(VPY) benchmarks/bench_training.py
	$(VPY) benchmarks/op_profile.py

clean:
	rm -rf $(BUILD)

distclean: clean
	rm -rf $(VENV)
