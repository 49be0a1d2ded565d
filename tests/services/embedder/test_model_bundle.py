"""Model card loading, settings from the environment, ONNX vs TorchScript runtimes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from services.embedder.model_bundle import ModelBundleError, load_bundle, resolve_model_dir
from services.embedder.runtime import create_backend
from services.embedder.settings import EmbedderSettings

from .conftest import DIM, HEIGHT, MODEL_NAME, MODEL_VERSION, WIDTH


def test_bundle_from_the_card(model_dir):
    b = load_bundle(resolve_model_dir(f"file://{model_dir}"))
    assert (b.name, b.version, b.embedding_dim) == (MODEL_NAME, MODEL_VERSION, DIM)
    assert b.input_shape == (3, HEIGHT, WIDTH) and (b.input_name, b.output_name) == ("images", "embedding")
    assert b.spec.resize == "letterbox" and b.file("onnx").name == "model.onnx"


def test_bundle_errors(tmp_path, model_dir):
    with pytest.raises(ModelBundleError, match="no model_card.json"):
        load_bundle(tmp_path)
    (tmp_path / "model_card.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelBundleError, match="invalid model card"):
        load_bundle(tmp_path)
    shutil.copy(model_dir / "model_card.json", tmp_path / "model_card.json")
    with pytest.raises(ModelBundleError, match="onnx model file"):
        load_bundle(tmp_path).file("onnx")
    with pytest.raises(ModelBundleError, match="kserve-storage"):
        resolve_model_dir("s3://bucket/model")
    # a card without a TorchScript export: a model.torchscript.pt lying beside it is not this model
    card = json.loads((model_dir / "model_card.json").read_text())
    card["files"] = {"onnx": "model.onnx"}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    shutil.copy(model_dir / "model.torchscript.pt", tmp_path / "model.torchscript.pt")
    with pytest.raises(ModelBundleError, match="lists no torchscript export"):
        load_bundle(tmp_path).file("torchscript")


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("ADREC_EMBEDDER__MAX_BATCH_SIZE", "64")
    monkeypatch.setenv("ADREC_EMBEDDER__PROVIDER", "cuda")
    monkeypatch.setenv("ADREC_EMBEDDER__MAX_IMAGE_PIXELS", "1000")
    monkeypatch.setenv("ADREC_LOG_LEVEL", "DEBUG")
    s = EmbedderSettings()
    assert (s.embedder.max_batch_size, s.embedder.provider, s.embedder.max_image_pixels) == (64, "cuda", 1000)
    assert s.log_level == "DEBUG" and s.service_name == "embedder"


def test_onnx_and_torchscript_runtimes_agree(model_dir):
    b = load_bundle(model_dir)
    x = np.random.default_rng(0).standard_normal((5, *b.input_shape)).astype(np.float32)
    onnx = create_backend(b, "onnx", provider="cpu", intra_op_threads=1).run(x)
    ts = create_backend(b, "torchscript", provider="cpu", intra_op_threads=1).run(x)
    assert onnx.shape == ts.shape == (5, DIM)
    assert np.abs(onnx - ts).max() < 1e-4  # the export's own parity tolerance (model card `parity.atol`)


def test_cuda_requested_without_cuda_fails_clearly(model_dir):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA build of onnxruntime is installed")
    with pytest.raises(RuntimeError, match="CUDA provider requested"):
        create_backend(load_bundle(model_dir), "onnx", provider="cuda")
