# Set-up is idempotent: a second run only checks stamps and takes seconds.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
SYSTEM_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 chromium
STAMP  := $(VENV)/.vlarft-installed

export MUJOCO_GL ?= egl
export GRADIO_ANALYTICS_ENABLED = False
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1

.PHONY: setup system venv studio test test-fast bench lint fmt clean help

help:
	@echo "make studio   set up, then run the studio (http://127.0.0.1:8000)"
	@echo "make test     set up, then run the test suite"
	@echo "make bench    run the benchmarks (writes bench/out/*.json)"
	@echo "make lint     ruff"

setup: system venv

system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages; run as root:"; \
	    echo "  sudo apt-get install -y --no-install-recommends$$missing"; \
	    exit 1; \
	  fi; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first: the local CPU wheel. An existing torch (e.g. a CUDA build) is kept.
$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test,cluster,lerobot]"
	$(PIP) install -q --no-deps "lerobot-dataset==0.4.4"
	@touch $(STAMP)

venv: $(STAMP)

studio: setup
	$(VENV)/bin/vlarft studio

test: setup
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow and not browser"

bench: setup
	$(PY) -m bench.run_all

lint: setup
	$(VENV)/bin/ruff check .

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf .vlarft .pytest_cache bench/out
