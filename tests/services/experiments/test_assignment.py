"""Experiment config validation and salted-hash assignment."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from services.experiments.assignment import Assigner, bucket
from services.experiments.config import ExperimentConfigError, ExperimentsConfig, load_experiments

CONFIG = """
layers:
  - id: ranking
    salt: layer-ranking-1
    experiments:
      - id: diversity
        salt: div-1
        traffic: 0.5
        variants:
          - {name: control, weight: 50}
          - {name: one-per-shop, weight: 50, params: {max_per_shop: 1}}
      - id: overfetch
        salt: of-1
        traffic: 0.3
        variants:
          - {name: control, weight: 1}
          - {name: wide, weight: 1, params: {overfetch: 8}}
  - id: model
    salt: layer-model-1
    experiments:
      - id: model-v2
        salt: mv2-1
        variants:
          - {name: v1, weight: 80}
          - {name: v2, weight: 20, params: {collection: listings_v2}}
"""


@pytest.fixture
def assigner(tmp_path: Path) -> Assigner:
    p = tmp_path / "experiments.yaml"
    p.write_text(CONFIG)
    return Assigner(load_experiments(p))


def test_assignment_is_deterministic_and_sticky(assigner: Assigner) -> None:
    a = assigner.assign("user-123")
    assert a == assigner.assign("user-123") == Assigner(assigner.config).assign("user-123")
    assert bucket("s", "u") == bucket("s", "u") and 0 <= bucket("s", "u") < 10_000


def test_layers_exclusive_inside_independent_across(assigner: Assigner) -> None:
    users = [f"u{i}" for i in range(20_000)]
    per_layer = Counter()
    variants = Counter()
    for u in users:
        got = {a.experiment_id: a.variant for a in assigner.assign(u).assignments}
        assert not ({"diversity", "overfetch"} <= set(got))  # one experiment per layer
        assert "model-v2" in got  # the model layer takes all traffic
        per_layer.update(k for k in got if k != "model-v2")
        variants.update(f"{k}={v}" for k, v in got.items())
    n = len(users)
    assert per_layer["diversity"] / n == pytest.approx(0.5, abs=0.02)
    assert per_layer["overfetch"] / n == pytest.approx(0.3, abs=0.02)
    assert variants["model-v2=v2"] / n == pytest.approx(0.2, abs=0.015)
    assert variants["diversity=one-per-shop"] / per_layer["diversity"] == pytest.approx(0.5, abs=0.03)


def test_variant_params_are_merged(assigner: Assigner) -> None:
    for i in range(2000):
        a = assigner.assign(f"p{i}")
        got = {x.experiment_id: x.variant for x in a.assignments}
        if got.get("diversity") == "one-per-shop" and got.get("model-v2") == "v2":
            assert a.params.max_per_shop == 1 and a.params.collection == "listings_v2"
            return
    pytest.fail("no user in both treatment variants")


def test_changing_weights_moves_only_the_boundary_users(assigner: Assigner) -> None:
    users = [f"w{i}" for i in range(10_000)]
    before = {u: {a.experiment_id: a.variant for a in assigner.assign(u).assignments}.get("model-v2") for u in users}
    cfg = assigner.config.model_copy(deep=True)
    cfg.layers[1].experiments[0].variants[0].weight = 70  # v1 80 -> 70: users in buckets 7000..7999 move to v2
    cfg.layers[1].experiments[0].variants[1].weight = 30
    after = {u: {a.experiment_id: a.variant for a in Assigner(cfg).assign(u).assignments}.get("model-v2")
             for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert all(before[u] == "v1" and after[u] == "v2" for u in moved)
    assert len(moved) / len(users) == pytest.approx(0.1, abs=0.015)


@pytest.mark.parametrize("text, fragment", [
    ("layers: [{id: a, salt: s, experiments: [{id: e, salt: x, traffic: 0.7, variants: [{name: a, weight: 1}, "
     "{name: b, weight: 1}]}, {id: f, salt: y, traffic: 0.5, variants: [{name: a, weight: 1}, {name: b, weight: 1}]}]}]",
     "max 1.0"),
    ("layers: [{id: a, salt: s, experiments: [{id: e, salt: x, variants: [{name: a, weight: 1}]}]}]", "at least 2"),
    ("layers: [{id: a, salt: s, experiments: [{id: e, salt: x, variants: [{name: a, weight: 1}, "
     "{name: a, weight: 2}]}]}]", "duplicate variant"),
    ("layers: [{id: a, salt: s, experiments: [{id: e, salt: x, variants: [{name: a, weight: 0}, "
     "{name: b, weight: 2}]}]}]", "greater than 0"),
    ("layers: [{id: a, salt: s, experiments: [{id: e, salt: x, variants: [{name: a, weight: 1, params: {k: 0}}, "
     "{name: b, weight: 2}]}]}]", "k"),
    ("layers: [{id: a, salt: s, experiments: [{id: e, salt: s, variants: [{name: a, weight: 1}, "
     "{name: b, weight: 1}]}]}]", "experiment e reuses the salt 's' of layer a"),
    ("layers: [{id: a, salt: s, experiments: [{id: e, salt: x, variants: [{name: a, weight: 1}, {name: b, weight: 1}]}]}, "
     "{id: b, salt: t, experiments: [{id: f, salt: x, variants: [{name: a, weight: 1}, {name: b, weight: 1}]}]}]",
     "experiment f reuses the salt 'x' of experiment e"),
    ("layers: [{id: a, salt: s}, {id: a, salt: t}]", "layer ids must be unique"),
    ("layers: [[", "invalid experiments file"),
])
def test_invalid_config_is_rejected_with_a_reason(tmp_path: Path, text: str, fragment: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ExperimentConfigError) as err:
        load_experiments(p)
    assert fragment in str(err.value)


def test_no_file_means_no_experiments(tmp_path: Path) -> None:
    assert Assigner(load_experiments(None)).assign("u").assignments == []
    with pytest.raises(ExperimentConfigError, match="not found"):
        load_experiments(tmp_path / "missing.yaml")
    assert isinstance(load_experiments(None), ExperimentsConfig)
