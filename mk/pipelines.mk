# Kubeflow pipeline targets (issue 4). Included from the top-level Makefile; expects $(PY) = .cache/venv/bin/python.
PY ?= .cache/venv/bin/python
PIPELINES_OUT ?= out/pipelines
PIPELINE_IMAGE ?= adrec/platform:0.1.0
PIPELINE_LOCAL_OUT ?= out/pipeline-local
KFP_HOST ?=
KFP_EXPERIMENT ?= adrec-visual-embedder
KFP_VARIANT ?= gpu
KFP_PARAMS ?=
PIPELINES_ENV = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
PIPELINES_CLI = $(PIPELINES_ENV) $(PY) -m pipelines.kfp.cli

.PHONY: pipelines pipeline-local pipeline-submit test-pipelines

pipelines: ## compile the KFP pipelines (GPU + CPU variants) to $(PIPELINES_OUT)/*.yaml for the Kubeflow UI
	$(PIPELINES_CLI) compile --out-dir $(PIPELINES_OUT) --image $(PIPELINE_IMAGE)

pipeline-local: ## run the whole CPU pipeline locally on small shared data (kfp.local, no Docker) into $(PIPELINE_LOCAL_OUT)
	$(PIPELINES_CLI) local --out $(PIPELINE_LOCAL_OUT)

pipeline-submit: pipelines ## create a run on KFP_HOST (KFP_EXPERIMENT, KFP_VARIANT, KFP_PARAMS='--param k=v ...')
	@test -n "$(KFP_HOST)" || { echo "set KFP_HOST=http://<kfp endpoint>"; exit 2; }
	$(PIPELINES_CLI) submit --host $(KFP_HOST) --experiment $(KFP_EXPERIMENT) --variant $(KFP_VARIANT) \
		--package $(PIPELINES_OUT)/vision-pipeline-$(KFP_VARIANT).yaml $(KFP_PARAMS)

test-pipelines: ## run the KFP pipeline tests (compile, deploy, gate, local run)
	$(PIPELINES_ENV) $(PY) -m pytest -q tests/pipelines/kfp
