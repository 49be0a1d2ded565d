"""The platform's services as the local supervisor starts them.

Each service issue adds its `ServiceSpec` here. A spec gets the infrastructure endpoints as
environment variables (the ADREC_* names every service's settings read) and must answer its
health URL before the supervisor reports "ready".
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: Callable[[Mapping[str, str]], list[str]]  # endpoints -> command line
    port: int
    health_path: str | None = "/healthz"
    env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 120.0
    env_fn: Callable[[], Mapping[str, str]] | None = None  # computed at start (e.g. from the model card)
    skip_reason: Callable[[], str | None] | None = None  # a reason not to start it now, or None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def python_module(module: str, *args: str) -> Callable[[Mapping[str, str]], list[str]]:
    return lambda _endpoints: [sys.executable, "-m", module, *args]


def model_card(model_dir: str) -> dict | None:
    import json
    from pathlib import Path

    card = Path(model_dir) / "model_card.json"
    return json.loads(card.read_text()) if card.exists() else None


def _model_dir() -> str:
    import os
    from pathlib import Path

    return os.environ.get("ADREC_EMBEDDER__MODEL_DIR") or str(Path(__file__).resolve().parents[2] / "out" / "vision-demo")


def _no_model() -> str | None:
    if model_card(_model_dir()) is None:
        return f"no exported model in {_model_dir()} (run `make train-demo` or set ADREC_EMBEDDER__MODEL_DIR)"
    return None


def _ports() -> tuple[int, int, int, int]:
    import os

    return (int(os.environ.get("ADREC_LOCAL_EMBEDDER_PORT", "18080")),
            int(os.environ.get("ADREC_LOCAL_EMBEDDER_GRPC_PORT", "18081")),
            int(os.environ.get("ADREC_LOCAL_INGEST_METRICS_PORT", "18090")),
            int(os.environ.get("ADREC_LOCAL_RECOMMENDER_PORT", "18000")))


def _model_env() -> dict[str, str]:
    """What the embedder's clients must agree on: served name, vector size, model version."""
    card = model_card(_model_dir()) or {}
    http, _, _, _ = _ports()
    return {"ADREC_EMBEDDER_CLIENT__URL": f"http://127.0.0.1:{http}",
            "ADREC_EMBEDDER_CLIENT__MODEL_NAME": str(card.get("name", "")),
            "ADREC_MILVUS__DIM": str(card.get("embedding_dim", 256)),
            "ADREC_INGEST__MODEL_VERSION": str(card.get("version", "1"))}


def _embedder() -> ServiceSpec:
    """Issue 5: the KServe embedder (REST 18080, gRPC 18081) serving ADREC_EMBEDDER__MODEL_DIR
    (default out/vision-demo, written by `make train-demo`)."""
    http, grpc, _, _ = _ports()
    return ServiceSpec("embedder", python_module("services.embedder", "--host", "127.0.0.1", "--http_port", str(http),
                                                 "--grpc_port", str(grpc)),
                       port=http, health_path="/v2/health/ready", env={"ADREC_EMBEDDER__MODEL_DIR": _model_dir()},
                       skip_reason=_no_model)


def _ingest() -> ServiceSpec:
    """Issue 6: the ingest worker (Kafka listings -> embedder -> Milvus + Feast); /metrics on 18090."""
    _, _, metrics, _ = _ports()
    return ServiceSpec("ingest", python_module("services.ingest"), port=metrics, health_path="/metrics",
                       env_fn=lambda: {**_model_env(), "ADREC_METRICS_PORT": str(metrics)}, skip_reason=_no_model)


def _experiments_file() -> str:
    import os
    from pathlib import Path

    return os.environ.get("ADREC_LOCAL_EXPERIMENTS_FILE") or str(
        Path(__file__).resolve().parents[2] / "configs" / "experiments" / "demo.yaml")


def _demo_env() -> dict[str, str]:
    """The demo page (/demo): images of the shared catalogue, and the link to the first experiment's dashboard."""
    import json
    import os

    from services.experiments.config import load_experiments
    from services.common.settings import DATA_DIR

    ids = [e.id for e in load_experiments(_experiments_file()).all_experiments()]
    port = os.environ.get("ADREC_LOCAL_ABMETRICS_PORT", "18010")
    return {"ADREC_RECOMMEND__IMAGE_ROOTS": json.dumps([str(DATA_DIR)]),
            "ADREC_RECOMMEND__DASHBOARD_URL": f"http://127.0.0.1:{port}/experiments/{ids[0] if ids else ''}"}


def _recommender() -> ServiceSpec:
    """Issue 7: the REST API on 18000 (docs at /docs, demo page at /demo); A/B variants from
    configs/experiments/demo.yaml."""
    _, _, _, port = _ports()
    return ServiceSpec("recommender", python_module("services.recommender"), port=port, health_path="/healthz",
                       env_fn=lambda: {**_model_env(), **_demo_env(), "ADREC_PORT": str(port),
                                       "ADREC_RECOMMEND__EXPERIMENTS_FILE": _experiments_file()})


def _abmetrics() -> ServiceSpec:
    """Issue 8: the A/B aggregator (user-events -> Redis), report API and dashboard on 18010."""
    import os

    port = int(os.environ.get("ADREC_LOCAL_ABMETRICS_PORT", "18010"))
    return ServiceSpec("abmetrics", python_module("services.abmetrics"), port=port, health_path="/healthz",
                       env_fn=lambda: {"ADREC_PORT": str(port),
                                       "ADREC_ABMETRICS__EXPERIMENTS_FILE": _experiments_file()})


def services() -> list[ServiceSpec]:
    """The specs as the environment configures them now (ports, model dir): a test that sets
    ADREC_LOCAL_*_PORT / ADREC_EMBEDDER__MODEL_DIR after import builds its own list here."""
    return [_embedder(), _ingest(), _recommender(), _abmetrics()]


# In start order; each service issue adds its spec here.
SERVICES: list[ServiceSpec] = services()
