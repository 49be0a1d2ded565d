# Vision model targets (issue 3). Included from the top-level Makefile; expects $(PY) = .cache/venv/bin/python.
PY ?= .cache/venv/bin/python
VISION_CONFIG ?= configs/vision/demo.yaml
VISION_OUT ?= out/vision-demo
VISION_ENV = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
VISION_CLI = $(VISION_ENV) $(PY) -m pipelines.vision.cli

.PHONY: train-demo eval-demo export-demo report-demo weak-label-ablation generative-smoke vision-demo-all test-vision

train-demo: bootstrap ## fine-tune on ../shared/data (CPU, 2 cores), evaluate vs ImageNet + random baselines, export ONNX/TorchScript, report
	$(VISION_CLI) run --config $(VISION_CONFIG) --out $(VISION_OUT)

weak-label-ablation: ## retrain $(VISION_OUT)'s recipe without the title-cluster head; adds the comparison to the report
	$(VISION_CLI) ablate-weak-labels --config $(VISION_CONFIG) --out $(VISION_OUT)

vision-demo-all: ## train-demo + weak-label ablation in one process (shares cached activations; ~2.5 min more)
	$(VISION_CLI) run --config $(VISION_CONFIG) --out $(VISION_OUT) --ablate-weak-labels

eval-demo: ## re-evaluate $(VISION_OUT)/model.pt against both baselines and rebuild the report
	$(VISION_CLI) evaluate --config $(VISION_CONFIG) --out $(VISION_OUT)
	$(VISION_CLI) report --config $(VISION_CONFIG) --out $(VISION_OUT)

export-demo: ## re-export $(VISION_OUT)/model.pt (ONNX + TorchScript + model card, with parity check)
	$(VISION_CLI) export --config $(VISION_CONFIG) --out $(VISION_OUT) --metrics $(VISION_OUT)/evaluation.json

report-demo: ## rebuild the report (JSON, Markdown, plots) from $(VISION_OUT)'s evaluation
	$(VISION_CLI) report --config $(VISION_CONFIG) --out $(VISION_OUT)

generative-smoke: ## text-to-image evaluation code path with a tiny random diffusers pipeline (no weights)
	$(VISION_CLI) generative-eval --config $(VISION_CONFIG) --out $(VISION_OUT) --tiny

test-vision: ## run the vision model tests
	$(VISION_ENV) $(PY) -m pytest -q tests/pipelines/vision
