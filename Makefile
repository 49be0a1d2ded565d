# adrec: visually similar ad recommendations. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .cache/venv/bin/python
UV := $(HOME)/.cache/adrec/tools/bin/uv
export HF_HUB_OFFLINE := 1
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: help bootstrap bootstrap-milvus demo up stop status test test-fast lock helm-version clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

bootstrap: ## install everything (venv, weights, Kafka jars, redis, helm, feast apply); idempotent, cached
	@scripts/bootstrap.sh

bootstrap-milvus: ## also install the embedded real Milvus 2.3.5 (own venv) for benchmarks
	@scripts/bootstrap.sh milvus

demo: bootstrap ## the platform with the demo catalogue indexed and an A/B test running; prints the URLs (trains the model once; Ctrl-C stops all)
	@$(PY) -m services.localstack.demo $(DEMO_ARGS)

up: bootstrap ## run the local platform on its embedded defaults (Ctrl-C stops everything)
	@$(PY) -m services.localstack up

stop: ## stop processes left behind by a crashed `make up`
	@$(PY) -m services.localstack stop

status: ## show what `make up` is running
	@$(PY) -m services.localstack status

test: bootstrap-milvus ## install what is missing, then run the whole test suite
	@$(PY) -m pytest $(PYTEST_ARGS)

test-fast: ## run the tests that need no broker/redis (no bootstrap)
	@$(PY) -m pytest -m "not kafka and not redis and not slow" $(PYTEST_ARGS)

lock: ## re-resolve requirements/main.in into requirements/main.lock
	@$(UV) pip compile --python-version 3.11 requirements/main.in -o requirements/main.lock

helm-version: bootstrap ## print the helm built by the bootstrap
	@.cache/bin/helm version

clean: ## remove local platform state (.cache/run); keeps the venv and downloads
	@rm -rf .cache/run

-include mk/*.mk

bench-ingest: bootstrap-milvus ## ingest events/s and freshness p50/p99 (precomputed vectors; +embedder with EMBEDDER_URL=)
	@$(PY) -m benchmarks.ingest.bench $(if $(EMBEDDER_URL),--embedder-url $(EMBEDDER_URL),) $(BENCH_ARGS)

bench-api: bootstrap-milvus ## recommender endpoint vs raw pymilvus (p50/p99, QPS) on 100k and 1M vectors, Milvus 2.3.5
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
	@$(PY) -m benchmarks.api.bench $(BENCH_ARGS)

bench: bench-ingest bench-api bench-embedder ## every benchmark, then one summary table (benchmarks/results/summary.md)
	@$(PY) -m benchmarks.summary
