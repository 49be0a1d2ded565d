"""A variant that switches the model (its own Milvus collection) searches with the seed's vector
from that collection, i.e. in that model's space, not with Feast's vector of the serving model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.common.milvus_store import ListingVector
from services.experiments.assignment import Assigner
from services.experiments.config import load_experiments
from services.recommender.app import build_app

pytestmark = pytest.mark.kafka

EXPERIMENTS = """
layers:
  - id: model
    salt: layer-model-test
    experiments:
      - id: model-v2
        salt: model-v2-test
        variants:
          - {name: v1, weight: 50}
          - {name: v2, weight: 50, params: {collection: %s}}
"""


def test_a_model_variant_searches_its_collection_with_its_own_seed_vector(stack, catalogue, tmp_path: Path) -> None:
    vectors = stack["vectors"]
    v2 = vectors.create_collection(vectors.collection_name("v2test"))
    sample = catalogue[:300]
    # the v2 "model": every listing gets another listing's v1 vector, so neighbours in v2 differ from v1's
    perm = np.random.default_rng(5).permutation(len(sample))
    space = {c["listing_id"]: sample[j]["vector"] for c, j in zip(sample, perm)}
    vectors.upsert([ListingVector(c["listing_id"], space[c["listing_id"]].tolist(), c["shop_id"], c["category"],
                                  c["price"], True, 1, "v2test", c["title"], c["image_uri"]) for c in sample],
                   collection=v2)
    exp_file = tmp_path / "experiments.yaml"
    exp_file.write_text(EXPERIMENTS % v2)
    assigner = Assigner(load_experiments(exp_file))
    in_v2 = next(f"u-{i}" for i in range(1000) if assigner.assign(f"u-{i}").assignments[0].variant == "v2")
    in_v1 = next(f"u-{i}" for i in range(1000) if assigner.assign(f"u-{i}").assignments[0].variant == "v1")
    settings = stack["settings"].model_copy(
        update={"recommend": stack["settings"].recommend.model_copy(update={"experiments_file": str(exp_file)})})

    seed = sample[3]
    eligible = [c for c in sample if c["listing_id"] != seed["listing_id"] and c["shop_id"] != seed["shop_id"]]
    sims = {c["listing_id"]: float(space[c["listing_id"]] @ space[seed["listing_id"]]) for c in eligible}
    best_v2 = max(sims, key=sims.get)
    with TestClient(build_app(settings, log_impressions=False), raise_server_exceptions=False) as client:
        body = client.get(f"/v1/listings/{seed['listing_id']}/similar", params={"k": 3, "user_id": in_v2}).json()
        assert body["experiments"] == [{"experiment_id": "model-v2", "variant": "v2"}]
        assert body["fallback"] is None and body["model_version"] == "v2test"
        assert body["items"][0]["listing_id"] == best_v2
        assert body["items"][0]["score"] == pytest.approx(sims[best_v2], abs=1e-4)
        assert {i["listing_id"] for i in body["items"]} <= {c["listing_id"] for c in sample}

        control = client.get(f"/v1/listings/{seed['listing_id']}/similar", params={"k": 3, "user_id": in_v1}).json()
        assert control["model_version"] == "pixels16" and control["items"][0]["listing_id"] != best_v2

        # a listing the variant's collection does not hold: a flagged fallback, not another space's search
        missing = catalogue[500]
        r = client.get(f"/v1/listings/{missing['listing_id']}/similar", params={"k": 3, "user_id": in_v2})
        assert r.status_code in (200, 503), r.text
        if r.status_code == 200:
            assert r.json()["fallback"] == "category_popular"
    vectors.drop_collection(v2)
