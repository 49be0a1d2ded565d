import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipelines.vision.config import load_config
from pipelines.vision.export import config_hash, export_all, model_card
from pipelines.vision.model import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    cfg = load_config(None, ["model.weights=none", "model.embedding_dim=24", "input.height=48", "input.width=40"])
    torch.manual_seed(0)
    model, _ = build_model(cfg, {"a": 3, "b": 5})
    model.eval()
    card = export_all(model.embedding_net(), cfg, out, card_kwargs=dict(
        embedding_dim=24, heads=[{"name": "a", "num_classes": 3}, {"name": "b", "num_classes": 5}],
        metrics={"p@1": 0.5}, data_hash="abc"))
    return out, model, card


def test_onnx_parity_dynamic_batch_and_contract(exported):
    out, model, card = exported
    m = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in m.graph.input] == ["images"] and [o.name for o in m.graph.output] == ["embedding"]
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # symbolic batch dimension
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, 3, 48, 40)).astype(np.float32)
        got = sess.run(["embedding"], {"images": x})[0]
        with torch.no_grad():
            ref = model.embedding_net()(torch.from_numpy(x)).numpy()
        assert got.shape == (n, 24)
        assert np.abs(got - ref).max() < 1e-4
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_torchscript_parity(exported):
    out, model, _ = exported
    ts = torch.jit.load(str(out / "model.torchscript.pt"))
    x = torch.randn(3, 3, 48, 40)
    with torch.no_grad():
        assert (ts(x) - model.embedding_net()(x)).abs().max().item() < 1e-4


def test_model_card_fields(exported):
    out, _, card = exported
    on_disk = json.loads((out / "model_card.json").read_text())
    assert on_disk["embedding_dim"] == 24 and on_disk["data_hash"] == "abc" and on_disk["onnx_opset"] == 18
    assert on_disk["files"] == {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
    for key in ("name", "version", "backbone", "input", "heads_trained", "metrics", "created_at"):
        assert key in on_disk
    inp = on_disk["input"]
    assert inp["size"] == [48, 40] and inp["mean"] == [0.5, 0.5, 0.5] and inp["channel_order"] == "RGB"
    assert inp["resize"] == "letterbox" and on_disk["parity"]["ok"] is True
    assert on_disk["parity"]["onnx_max_abs_diff"] < 1e-4 and on_disk["parity"]["torchscript_max_abs_diff"] < 1e-4
    assert "heads" not in str(onnx.load(str(out / "model.onnx")).graph.initializer[-1].name)


def test_model_card_lists_only_exported_files(tmp_path):
    cfg = load_config(None, ["model.weights=none", "model.embedding_dim=8", "input.height=32", "input.width=32",
                             "export.torchscript=false"])
    model, _ = build_model(cfg, {"a": 3})
    (tmp_path / "model.torchscript.pt").write_bytes(b"stale")  # left by an earlier export
    card = export_all(model.eval().embedding_net(), cfg, tmp_path, card_kwargs=dict(
        embedding_dim=8, heads=[{"name": "a", "num_classes": 3}], metrics={}, data_hash="abc"))
    on_disk = json.loads((tmp_path / "model_card.json").read_text())
    assert card["files"] == on_disk["files"] == {"onnx": "model.onnx"}
    assert not (tmp_path / "model.torchscript.pt").exists()
    assert "torchscript_max_abs_diff" not in on_disk["parity"]


def test_model_card_records_the_training_config_hash():
    cfg = load_config(None, ["model.weights=none", "model.embedding_dim=24"])
    card = model_card(cfg, embedding_dim=24, heads=[], metrics={}, data_hash="abc")
    assert card["config_hash"] == config_hash(cfg) == config_hash(load_config(None, ["model.embedding_dim=24",
                                                                                       "model.weights=none"]))
    # another recipe with the same name and version: another hash; where the data or cache live: the same
    assert config_hash(load_config(None, ["model.weights=none", "model.embedding_dim=32"])) != card["config_hash"]
    assert config_hash(load_config(None, ["model.weights=none", "model.embedding_dim=24", "train.stage2.epochs=9"])) \
        != card["config_hash"]
    assert config_hash(load_config(None, ["model.weights=none", "model.embedding_dim=24", "data.root=/elsewhere",
                                          "data.cache_dir=/tmp/c"])) == card["config_hash"]
