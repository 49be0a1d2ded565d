"""Gate decision, registry, sharding: the step logic without KFP."""

import json
from datetime import UTC, datetime

import pytest

from pipelines.kfp import ops


def ev(finetuned: float, imagenet: float) -> dict:
    def m(v):
        return {"catalogue": {ops.PRIMARY_TASK: {"p@1": v}}, "heldout": {ops.PRIMARY_TASK: {"p@1": v - 0.1}}}

    return {"protocol": "catalogue", "models": {"finetuned": m(finetuned), "imagenet": m(imagenet)}}


def test_gate_needs_to_beat_imagenet_by_the_margin():
    assert ops.gate(ev(0.80, 0.70))["passed"]
    assert not ops.gate(ev(0.70, 0.70))["passed"]  # equal is not better
    assert not ops.gate(ev(0.74, 0.70), margin=0.05)["passed"]
    assert ops.gate(ev(0.76, 0.70), margin=0.05)["passed"]


def test_gate_needs_to_beat_the_deployed_model():
    g = ops.gate(ev(0.80, 0.70), deployed_metric=0.82, deployed_source="parameter")
    assert not g["passed"] and g["checks"]["imagenet"]["passed"] and not g["checks"]["deployed"]["passed"]
    assert "deployed 0.820" in ops.gate_message(g) and "FAILED" in ops.gate_message(g)
    assert ops.gate(ev(0.80, 0.70), deployed_metric=0.78)["passed"]
    assert "deployed" not in ops.gate(ev(0.80, 0.70), deployed_metric=-1)["checks"]  # unknown: ImageNet only


def test_evaluate_and_gate_reads_deployed_metric_from_registry(tmp_path, monkeypatch):
    reg = tmp_path / "registry" / "adrec-visual-embedder"
    (reg / "v1").mkdir(parents=True)
    (reg / "v1" / "model_card.json").write_text(json.dumps(
        {"metrics": {"protocol": "catalogue", "finetuned": {ops.PRIMARY_TASK: {"p@1": 0.9}}}}))
    (reg / "deployed.json").write_text(json.dumps({"version": "v1", "uri": "x"}))
    card, version = ops.deployed_card_from_registry(str(tmp_path / "registry"), "adrec-visual-embedder")
    assert (ops.deployed_metric_from_card(card), version) == (0.9, "v1")

    class Cfg:
        name = "adrec-visual-embedder"

    monkeypatch.setattr(ops, "evaluate", lambda cfg, model_dir, out_dir: ev(0.85, 0.70))
    with pytest.raises(ops.GateFailed, match="deployed 0.900"):
        ops.evaluate_and_gate(Cfg(), tmp_path, tmp_path / "eval", registry_root=str(tmp_path / "registry"))
    g = json.loads((tmp_path / "eval" / "gate.json").read_text())
    assert g["checks"]["deployed"]["source"] == "registry:v1" and not g["passed"]
    # an explicit parameter wins over the registry
    assert ops.evaluate_and_gate(Cfg(), tmp_path, tmp_path / "eval", deployed_metric=0.8,
                                 registry_root=str(tmp_path / "registry"))["passed"]


def test_shards_partition_the_catalogue():
    rows = [{"listing_id": str(i)} for i in range(10)]
    for n in (1, 3, 4, 10):
        parts = [ops.shard_rows(rows, s, n) for s in range(n)]
        assert [r for p in parts for r in p] == rows
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_model_version_and_register(tmp_path):
    card = {"name": "m", "version": "0.1.0", "embedding_dim": 8}
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    assert ops.model_version(card, now=now) == "0.1.0-20261125120000"
    assert ops.model_version(card, "v7") == "v7"
    with pytest.raises(ValueError):
        ops.model_version(card, "bad version/../x")
    exp = tmp_path / "export"
    exp.mkdir()
    (exp / "model_card.json").write_text(json.dumps(card))
    (exp / "model.onnx").write_bytes(b"onnx")
    e = ops.register(exp, export_uri="gs://pipeline-root/x/onnx_model", registry_root=str(tmp_path / "reg"),
                     registry_uri="gs://adrec-models/vision", version="v7")
    assert e["uri"] == "gs://adrec-models/vision/m/v7"
    assert (tmp_path / "reg" / "m" / "v7" / "model.onnx").read_bytes() == b"onnx"
    assert json.loads((tmp_path / "reg" / "m" / "latest.json").read_text())["version"] == "v7"
    assert ops.register(exp, export_uri="gs://root/onnx", version="v8")["uri"] == "gs://root/onnx"


def test_gate_fails_without_an_imagenet_baseline():
    e = ev(0.80, 0.70)
    del e["models"]["imagenet"]
    e["baselines"] = {"imagenet": {"error": "no ImageNet baseline: no pretrained weights load into 'x'"}}
    g = ops.gate(e)
    assert not g["passed"] and not g["checks"]["imagenet"]["passed"]
    assert "no ImageNet baseline" in g["checks"]["imagenet"]["reason"] and "no ImageNet baseline" in ops.gate_message(g)
    e["baselines"] = {"imagenet": {"weights": "packaged:efficientnet_lite0", "source": "file"}}
    e["models"]["imagenet"] = ev(0.80, 0.70)["models"]["imagenet"]
    assert ops.gate(e)["checks"]["imagenet"]["weights"] == "packaged:efficientnet_lite0"


@pytest.mark.parametrize("card_metrics,card_hash,why", [
    ({"protocol": "heldout"}, "h1", "protocol 'heldout' != candidate's 'catalogue'"),
    ({"protocol": "catalogue"}, "h0", "data hash h0 != candidate's h1"),
    ({}, "h1", "records no metrics protocol"),
])
def test_deployed_model_on_another_protocol_or_data_is_not_compared(tmp_path, monkeypatch, card_metrics, card_hash, why):
    reg = tmp_path / "registry" / "m"
    (reg / "v1").mkdir(parents=True)
    (reg / "v1" / "model_card.json").write_text(json.dumps(
        {"data_hash": card_hash, "metrics": {**card_metrics, "finetuned": {ops.PRIMARY_TASK: {"p@1": 0.9}}}}))
    (reg / "deployed.json").write_text(json.dumps({"version": "v1", "uri": "x"}))

    class Cfg:
        name = "m"

    monkeypatch.setattr(ops, "evaluate", lambda cfg, model_dir, out_dir: {**ev(0.85, 0.70), "data_hash": "h1"})
    g = ops.evaluate_and_gate(Cfg(), tmp_path, tmp_path / "eval", registry_root=str(tmp_path / "registry"))
    assert g["passed"] and "deployed" not in g["checks"]  # neither passed nor failed against 0.9 ...
    assert g["skipped"]["deployed"].startswith("registry:v1: ") and why in g["skipped"]["deployed"]  # ... but recorded
    assert json.loads((tmp_path / "eval" / "gate.json").read_text())["skipped"] == g["skipped"]
    assert "deployed comparison skipped" in ops.gate_message(g)
    # same protocol and data: the deployed number is used
    (reg / "v1" / "model_card.json").write_text(json.dumps(
        {"data_hash": "h1", "metrics": {"protocol": "catalogue", "finetuned": {ops.PRIMARY_TASK: {"p@1": 0.9}}}}))
    with pytest.raises(ops.GateFailed, match="deployed 0.900"):
        ops.evaluate_and_gate(Cfg(), tmp_path, tmp_path / "eval", registry_root=str(tmp_path / "registry"))


def test_the_alias_waits_for_the_new_model_to_serve_all_traffic() -> None:
    blocked = ops.alias_switch_blocked({"mode": "apply", "new_model_traffic_percent": 10})
    assert "10% of the embedder's traffic" in blocked and "pipelines.kfp.cli promote" in blocked
    assert ops.alias_switch_blocked({"mode": "apply", "new_model_traffic_percent": 100}) == ""
    assert ops.alias_switch_blocked({"mode": "skip"}) == ""  # the pipeline did not deploy: nothing split
    assert ops.alias_switch_blocked({"mode": "dry-run", "new_model_traffic_percent": 10}) == ""


def test_cli_promote_switches_with_the_given_plan(monkeypatch, tmp_path, capsys) -> None:
    from pipelines.kfp import cli

    calls = []
    monkeypatch.setattr(ops, "promote", lambda plan, **kw: calls.append((plan, kw)) or {"collection": "listings_v2"})
    assert cli.main(["promote", "--plan", str(tmp_path), "--milvus-uri", "http://127.0.0.1:19530",
                     "--feast-config", '{"registry_path": "r.db"}', "--min-fraction", "0.9"]) == 0
    assert calls == [(str(tmp_path), {"milvus_uri": "http://127.0.0.1:19530", "alias": "listings",
                                      "feast_config": {"registry_path": "r.db"}, "min_fraction": 0.9})]
    assert json.loads(capsys.readouterr().out) == {"collection": "listings_v2"}
