# The front door: every command the README names is a target here, and CI runs the same ones.
SHELL := /bin/bash
.DEFAULT_GOAL := help

STAGE ?= dev
CDK_ARGS ?=
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
# LocalStack 4.12 in its own venv: its pinned dependencies clash with the CDK's (requirements-localstack.in).
LOCALSTACK_VENV := .venv-localstack
LOCALSTACK_STAMP := $(LOCALSTACK_VENV)/.installed
# The job's own dependencies only, compiled to bytecode, as its image has them (etl_job/requirements.txt): the
# processes `make bench` times (without bytecode each would spend about 0.4 s more compiling the BigQuery client).
JOB_VENV := .venv-job
UV_SYNC := $(VENV)/bin/uv pip sync --quiet --require-hashes --compile-bytecode
CDK := node_modules/.bin/cdk

# Offline and quiet: no version check, no update notifier, no telemetry (cdk.json), a local CLI home.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export CDK_DISABLE_VERSION_CHECK := 1
export npm_config_update_notifier := false
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_HOME := $(CURDIR)/.cdk-home

.PHONY: help setup lock run test integration image localstack lint audit synth deploy destroy bench cost run-now stop-runs diff review-templates clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Every requirements*.txt is a lock compiled from its .in file by uv (`make lock`), with hashes checked at install.
# uv (requirements-uv.in) installs each venv's lock, exactly (sync also removes what the lock no longer lists), and
# compiles it to bytecode as pip would (PYTHONDONTWRITEBYTECODE may be set): .venv and .venv-checkov in about 20 s
# where pip took 80 s. The venvs other than .venv need no pip of their own.
$(VENV)/.installed: requirements-uv.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-uv.txt
	$(UV_SYNC) --python $(VENV)/bin/python requirements-dev.txt
	touch $@

# A venv other than .venv, holding exactly its lock (the target's first prerequisite): $(call lock_venv,<directory>).
define lock_venv
python3 -m venv --without-pip $(1)
$(UV_SYNC) --python $(1)/bin/python $<
touch $@
endef

$(CHECKOV_VENV)/.installed: requirements-checkov.txt | $(VENV)/.installed
	$(call lock_venv,$(CHECKOV_VENV))

$(LOCALSTACK_STAMP): requirements-localstack.txt | $(VENV)/.installed
	$(call lock_venv,$(LOCALSTACK_VENV))

$(JOB_VENV)/.installed: etl_job/requirements.txt | $(VENV)/.installed
	$(call lock_venv,$(JOB_VENV))

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed $(CHECKOV_VENV)/.installed node_modules/.installed ## Install Python, checkov and CDK CLI dependencies (idempotent)

lock: $(VENV)/.installed ## Recompile every requirements lock from its .in file with uv (LOCK_ARGS=--upgrade: newest releases)
	$(PY) -m dev.locks compile $(LOCK_ARGS)

run: setup ## Synthesize the stack and summarize it, then run the job on a local BigQuery
	$(CDK) synth --no-lookups --quiet -c stage=$(STAGE) $(CDK_ARGS)
	$(PY) -m dev.summary cdk.out/EtlPipeline-$(STAGE).template.json
	$(PY) -m dev.demo

test: setup ## Lint, run every test, then the audit gates
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest
	$(MAKE) --no-print-directory audit

localstack: $(LOCALSTACK_STAMP) ## Install LocalStack (the local AWS of make integration) into its own venv (idempotent)

integration: setup image $(LOCALSTACK_STAMP) ## Heavier checks against real implementations: the built image, a local AWS (tests/integration)
	$(PY) -m pytest -m integration tests/integration

image: ## Build the job's image with Docker; first installs docker.io, starts dockerd, builds the base (idempotent, root)
	python3 -m dev.image

lint: setup ## ruff (with McCabe complexity), function length and mypy over all Python code (ruff.toml, mypy.ini)
	$(VENV)/bin/ruff check .
	$(PY) -m dev.function_length
	$(VENV)/bin/mypy

audit: setup ## cdk-nag, cfn-lint, checkov and hadolint; report in cdk.out/audit/
	$(PY) -m dev.audit

synth: setup ## Synthesize the CloudFormation template into cdk.out/ (STAGE=dev|prod)
	$(CDK) synth --no-lookups --quiet -c stage=$(STAGE) $(CDK_ARGS)
	@echo "cdk.out/EtlPipeline-$(STAGE).template.json"

deploy: setup ## Deploy the stage to the AWS account of your credentials (needs Docker)
	$(CDK) deploy -c stage=$(STAGE) $(CDK_ARGS) EtlPipeline-$(STAGE)

destroy: setup ## Delete the stage's stack (the Google key secret is kept)
	$(CDK) destroy -c stage=$(STAGE) $(CDK_ARGS) EtlPipeline-$(STAGE)

diff: setup ## Show what this change does to the STAGE's template, offline (against review/)
	$(CDK) synth --no-lookups --quiet -c stage=$(STAGE) $(CDK_ARGS) -o cdk.out/diff-$(STAGE)
	$(PY) -m ops.review normalize cdk.out/diff-$(STAGE)/EtlPipeline-$(STAGE).template.json cdk.out/diff-$(STAGE)/EtlPipeline-$(STAGE).template.json
	$(CDK) diff --app cdk.out/diff-$(STAGE) --template review/EtlPipeline-$(STAGE).template.json EtlPipeline-$(STAGE)

review-templates: setup ## Refresh the committed review/ templates after an infrastructure change
	for stage in dev prod; do \
	  $(CDK) synth --no-lookups --quiet -c stage=$$stage -o cdk.out/review-$$stage && \
	  $(PY) -m ops.review normalize cdk.out/review-$$stage/EtlPipeline-$$stage.template.json review/EtlPipeline-$$stage.template.json || exit 1; \
	done

cost: setup ## Estimate the STAGE's monthly cost beside Glue and a NAT-gateway setup (CDK_ARGS too)
	$(PY) -m ops.cost $(STAGE) $(CDK_ARGS)

run-now: setup ## Start one run of the deployed STAGE now (SHARD=k: rerun one shard; needs AWS credentials)
	$(PY) -m ops.runs start --stage $(STAGE) $(if $(SHARD),--shard=$(SHARD))

stop-runs: setup ## Stop the deployed STAGE's running executions and tasks (the job settles on SIGTERM)
	$(PY) -m ops.runs stop --stage $(STAGE)

bench: setup $(JOB_VENV)/.installed ## Benchmark the job against the tutorial's algorithm and the backend's floor
	$(JOB_VENV)/bin/python -m compileall -q etl_job dev  # as the image compiles the job (PYTHONDONTWRITEBYTECODE aside)
	$(PY) -m dev.bench

clean: ## Remove build output (keeps the installed environments)
	rm -rf cdk.out .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)*' -not -path './node_modules/*' -prune -exec rm -rf {} +
