"""The demo's model (reused only when trained from its config) and what counts as already indexed
(rows of this artifact, not of another one with the same card version): unit level, nothing started."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.localstack import registry
from services.localstack.demo import catalogue as demo_catalogue
from services.localstack.demo import checks
from services.localstack.demo.cli import pin_model_version
from services.localstack.demo.settings import DemoError, DemoSettings

RECIPE = "name: adrec-visual-embedder\nversion: 0.1.0\nmodel: {weights: none, embedding_dim: %d}\n"


def _config(tmp_path: Path, dim: int) -> Path:
    path = tmp_path / f"recipe-{dim}.yaml"
    path.write_text(RECIPE % dim)
    return path


def _export(model_dir: Path, config_hash: str | None, onnx: bytes = b"onnx-1", dim: int = 256) -> dict:
    """What pipelines.vision.export writes, as far as the demo reads it."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.onnx").write_bytes(onnx)
    card = {"name": "adrec-visual-embedder", "version": "0.1.0", "embedding_dim": dim, "files": {"onnx": "model.onnx"}}
    if config_hash is not None:
        card["config_hash"] = config_hash
    (model_dir / "model_card.json").write_text(json.dumps(card))
    return card


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo's own model dir (out/vision-demo, not one chosen by ADREC_EMBEDDER__MODEL_DIR)."""
    model_dir = tmp_path / "vision-demo"
    monkeypatch.delenv("ADREC_EMBEDDER__MODEL_DIR", raising=False)
    monkeypatch.setattr(registry, "_model_dir", lambda: str(model_dir))
    return model_dir


@pytest.fixture
def training(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """`pipelines.vision.cli run` replaced by an export of a new artifact with the config's hash."""
    calls: list[list[str]] = []

    def run(argv, **_kw):
        calls.append(argv)
        config, out = Path(argv[argv.index("--config") + 1]), Path(argv[argv.index("--out") + 1])
        _export(out, checks.train_config_hash(config), onnx=b"onnx-retrained", dim=128)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(checks.subprocess, "run", run)
    return calls


def test_a_model_trained_from_the_config_is_reused_with_an_artifact_version(tmp_path, demo_dir, training):
    config = _config(tmp_path, 128)
    _export(demo_dir, checks.train_config_hash(config))
    card = checks.ensure_model(DemoSettings(train_config=config), lambda _m: None)
    assert training == []
    assert card["artifact_version"] == "0.1.0+" + hashlib.sha256(b"onnx-1").hexdigest()[:8]


def test_a_model_of_another_recipe_is_retrained_not_reused(tmp_path, demo_dir, training):
    old, new = _config(tmp_path, 256), _config(tmp_path, 128)
    assert checks.train_config_hash(old) != checks.train_config_hash(new)  # same name and version 0.1.0
    _export(demo_dir, checks.train_config_hash(old))
    said: list[str] = []
    card = checks.ensure_model(DemoSettings(train_config=new), said.append)
    assert len(training) == 1 and training[0][-4:] == ["--config", str(new), "--out", str(demo_dir)]
    assert "was not trained from" in said[0] and "retraining" in said[0]
    assert card["embedding_dim"] == 128 and card["config_hash"] == checks.train_config_hash(new)
    assert card["artifact_version"] == "0.1.0+" + hashlib.sha256(b"onnx-retrained").hexdigest()[:8]


def test_a_model_without_config_hash_is_not_reused(tmp_path, demo_dir, training):
    _export(demo_dir, None)  # exported before cards recorded it
    with pytest.raises(DemoError, match="was not trained from .* and --no-train given: retrain it"):
        checks.ensure_model(DemoSettings(train_config=_config(tmp_path, 128), train=False), lambda _m: None)
    assert training == []


def test_a_chosen_model_dir_of_another_recipe_is_refused_not_overwritten(tmp_path, monkeypatch, training):
    chosen = tmp_path / "chosen"
    _export(chosen, checks.train_config_hash(_config(tmp_path, 256)))
    monkeypatch.setenv("ADREC_EMBEDDER__MODEL_DIR", str(chosen))
    with pytest.raises(DemoError, match="set ADREC_DEMO_TRAIN_CONFIG to the config it was trained from"):
        checks.ensure_model(DemoSettings(train_config=_config(tmp_path, 128)), lambda _m: None)
    assert training == [] and (chosen / "model.onnx").read_bytes() == b"onnx-1"


class FakeStore:
    """Milvus rows: listing id -> model_version."""

    rows: dict[str, str] = {}
    collection_dim = 256

    def __init__(self, cfg, client=None):
        self.cfg = cfg

    def dim(self, collection=None):
        return self.collection_dim

    def get(self, ids, with_vectors=False):
        return [{"listing_id": i, "model_version": self.rows[i], "active": True} for i in ids if i in self.rows]

    def close(self):
        pass


@pytest.fixture
def indexing(monkeypatch: pytest.MonkeyPatch) -> dict:
    import services.common.milvus_store
    import services.ingest.catalogue

    seen: dict = {}
    monkeypatch.setattr(services.common.milvus_store, "ListingVectorStore", FakeStore)
    monkeypatch.setattr(services.ingest.catalogue, "publish", lambda _cfg, events: seen.setdefault("published", events))
    monkeypatch.setattr(demo_catalogue, "wait_searchable",
                        lambda _sup, _store, ids, version, *_a: seen.update(waited=ids, version=version) or [])
    return seen


def _index(events: list, card: dict) -> None:
    sup = SimpleNamespace(endpoints={"ADREC_MILVUS__URI": "http://milvus", "ADREC_KAFKA__BOOTSTRAP_SERVERS": "k:1"},
                          services=[SimpleNamespace(name="ingest", url="http://ingest")])
    demo_catalogue.index_catalogue(sup, events, card, DemoSettings(), lambda _m: None)


def test_rows_of_another_artifact_with_the_same_version_are_not_searchable(tmp_path, demo_dir, indexing, monkeypatch):
    config = _config(tmp_path, 256)
    _export(demo_dir, checks.train_config_hash(config), onnx=b"onnx-now")
    card = checks.ensure_model(DemoSettings(train_config=config), lambda _m: None)
    events = [SimpleNamespace(id=f"fp-{i}") for i in range(4)]
    # fp-0, fp-1: an earlier model's vectors, card version 0.1.0 too (bare, or of another artifact); fp-2: this one's
    monkeypatch.setattr(FakeStore, "rows", {"fp-0": "0.1.0", "fp-1": "0.1.0+" + "0" * 8,
                                            "fp-2": card["artifact_version"]})
    _index(events, card)
    assert [e.id for e in indexing["published"]] == ["fp-0", "fp-1", "fp-3"]
    assert indexing["waited"] == ["fp-0", "fp-1", "fp-3"] and indexing["version"] == card["artifact_version"]
    assert demo_catalogue.searchable(FakeStore(None), ["fp-0", "fp-1", "fp-2"], card["artifact_version"]) == {"fp-2"}


def test_a_collection_of_another_dimension_is_a_clear_error(indexing, monkeypatch):
    monkeypatch.setattr(FakeStore, "rows", {})
    card = {"version": "0.1.0", "artifact_version": "0.1.0+12345678", "embedding_dim": 128}
    with pytest.raises(DemoError, match="holds 256-dim vectors, model 0.1.0\\+12345678 makes 128-dim ones: .*--fresh"):
        _index([SimpleNamespace(id="fp-0")], card)
    assert "published" not in indexing


def test_the_ingest_worker_writes_the_artifact_version():
    before = registry.services()
    after = pin_model_version(before, "0.1.0+1a2b3c4d")
    assert [s.name for s in after] == [s.name for s in before]
    for old, new in zip(before, after):
        if old.name == "ingest":
            env = new.env_fn()
            assert env["ADREC_INGEST__MODEL_VERSION"] == "0.1.0+1a2b3c4d" and "ADREC_METRICS_PORT" in env
        else:
            assert new is old
