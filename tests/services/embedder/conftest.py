"""Embedder fixtures: a small model exported by the vision package's own code, real JPEGs from
../shared/data, and the server as a real process on free loopback ports (stopped by PID)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from services.common.settings import DATA_DIR as DATA  # noqa: E402
from services.localstack.ports import free_port  # noqa: E402
from services.localstack.process import ManagedProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
MODEL_NAME, MODEL_VERSION, DIM, HEIGHT, WIDTH = "adrec-visual-embedder", "0.0.1-test", 32, 64, 48


def build_model(out: Path) -> Path:
    """Export a small random-init EfficientNet-Lite0 with pipelines.vision (ONNX + TorchScript + card)."""
    import torch

    from pipelines.vision.config import load_config
    from pipelines.vision.export import export_all
    from pipelines.vision.model import build_model as build_vision_model

    cfg = load_config(None, ["model.weights=none", f"model.embedding_dim={DIM}", f"input.height={HEIGHT}",
                             f"input.width={WIDTH}", f"name={MODEL_NAME}", f"version={MODEL_VERSION}"])
    torch.manual_seed(0)
    model, _ = build_vision_model(cfg, {"category": 4})
    model.eval()
    export_all(model.embedding_net(), cfg, out, card_kwargs=dict(
        embedding_dim=DIM, heads=[{"name": "category", "num_classes": 4}], metrics={}, data_hash="test"))
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("embedder-model"))


@pytest.fixture(scope="session")
def card(model_dir: Path) -> dict:
    return json.loads((model_dir / "model_card.json").read_text())


def _jpegs() -> list[Path]:
    fashion = sorted((DATA / "fashion-products" / "images").glob("*.jpg"))[:4]
    clothing = sorted((DATA / "clothing" / "test").glob("*/*.jpg"))[:2]
    return fashion + clothing


@pytest.fixture(scope="session")
def jpeg_paths() -> list[Path]:
    paths = _jpegs()
    if len(paths) < 6:
        pytest.fail(f"real images missing under {DATA} (see ../shared/data/README.md)")
    return paths


@pytest.fixture(scope="session")
def jpegs(jpeg_paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in jpeg_paths]


@dataclass
class EmbedderProcess:
    proc: ManagedProcess
    http_port: int
    grpc_port: int
    model_name: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


SERVER_ENV = {
    "ADREC_EMBEDDER__MAX_IMAGE_BYTES": str(1_000_000),
    "ADREC_EMBEDDER__MAX_IMAGE_PIXELS": str(4_000_000),
    "ADREC_EMBEDDER__MAX_WAIT_MS": "20",
    "ADREC_EMBEDDER__MAX_BATCH_SIZE": "16",
    "ADREC_EMBEDDER__INTRA_OP_THREADS": "1",
    "ADREC_EMBEDDER__DECODE_THREADS": "1",
}


def start_embedder(model_dir: Path, log_dir: Path, extra_env: dict[str, str] | None = None) -> EmbedderProcess:
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "ADREC_EMBEDDER__MODEL_DIR": str(model_dir), "ADREC_EMBEDDER__HOST": "127.0.0.1",
           "ADREC_EMBEDDER__HTTP_PORT": str(http_port), "ADREC_EMBEDDER__GRPC_PORT": str(grpc_port),
           **SERVER_ENV, **(extra_env or {})}
    proc = ManagedProcess("embedder", [sys.executable, "-m", "services.embedder"], env=env, cwd=REPO,
                          log_path=log_dir / "embedder.log")
    proc.start()
    url = f"http://127.0.0.1:{http_port}/v2/health/ready"
    proc.wait_ready(lambda: urllib.request.urlopen(url, timeout=2).status == 200, timeout=120, interval=0.3)
    return EmbedderProcess(proc, http_port, grpc_port, MODEL_NAME)


@pytest.fixture(scope="session")
def embedder(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbedderProcess]:
    server = start_embedder(model_dir, tmp_path_factory.mktemp("embedder-logs"))
    try:
        yield server
    finally:
        server.proc.stop(timeout=20)
