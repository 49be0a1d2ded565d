# Embedder service targets (issue 5). Included from the top-level Makefile; expects $(PY).
PY ?= .cache/venv/bin/python
EMBEDDER_MODEL_DIR ?= out/vision-demo
EMBEDDER_BENCH_ARGS ?=

.PHONY: bench-embedder serve-embedder test-embedder

bench-embedder: ## embedder images/s + p50/p99 at 1/8/32 clients vs raw ONNX Runtime (JSON + table in out/bench/embedder)
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.embedder.bench $(EMBEDDER_BENCH_ARGS)

serve-embedder: ## run the embedder on $(EMBEDDER_MODEL_DIR) (REST 127.0.0.1:8080, gRPC :8081; ADREC_EMBEDDER__* settings)
	HF_HUB_OFFLINE=1 ADREC_EMBEDDER__HOST=$${ADREC_EMBEDDER__HOST:-127.0.0.1} $(PY) -m services.embedder --model_dir $(EMBEDDER_MODEL_DIR)

test-embedder: ## run the embedder tests (real server over REST + gRPC)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/services/embedder
