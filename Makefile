# The front door: every command the README names is a target here, and CI runs the same ones.
SHELL := /bin/bash
.DEFAULT_GOAL := help

STAGE ?= dev
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
CDK := node_modules/.bin/cdk

# Offline and quiet: no version check, no update notifier, no telemetry (cdk.json), a local CLI home.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export CDK_DISABLE_VERSION_CHECK := 1
export npm_config_update_notifier := false
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_HOME := $(CURDIR)/.cdk-home

.PHONY: help setup run test audit synth deploy destroy bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt etl_job/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed $(CHECKOV_VENV)/.installed node_modules/.installed ## Install Python, checkov and CDK CLI dependencies (idempotent)

run: setup ## Synthesize the stack and summarize it, then run the job on a local BigQuery
	$(CDK) synth --no-lookups --quiet -c stage=$(STAGE)
	$(PY) -m dev.summary cdk.out/EtlPipeline-$(STAGE).template.json
	$(PY) -m dev.demo

test: setup ## Run every test, then the audit gates
	$(PY) -m pytest
	$(MAKE) --no-print-directory audit

audit: setup ## cdk-nag, cfn-lint, checkov and hadolint; report in cdk.out/audit/
	$(PY) -m dev.audit

synth: setup ## Synthesize the CloudFormation template into cdk.out/ (STAGE=dev|prod)
	$(CDK) synth --no-lookups --quiet -c stage=$(STAGE)
	@echo "cdk.out/EtlPipeline-$(STAGE).template.json"

deploy: setup ## Deploy the stage to the AWS account of your credentials (needs Docker)
	$(CDK) deploy -c stage=$(STAGE) EtlPipeline-$(STAGE)

destroy: setup ## Delete the stage's stack (the Google key secret is kept)
	$(CDK) destroy -c stage=$(STAGE) EtlPipeline-$(STAGE)

bench: setup ## Benchmark the job against the tutorial's algorithm and the backend's floor
	$(PY) -m dev.bench

clean: ## Remove build output (keeps the installed environments)
	rm -rf cdk.out .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)*' -not -path './node_modules/*' -prune -exec rm -rf {} +
