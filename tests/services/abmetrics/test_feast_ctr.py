"""Item CTR written back to Feast (`item_ctr_push`) and read the way the re-ranker reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.abmetrics.feast_ctr import ItemCtrPusher, smoothed_ctr
from services.abmetrics.state import Position
from services.common.events import Assignment, Click, Impression, ShownItem
from services.common.feature_store import FeatureStoreClient, FeatureStoreConfig
from services.common.metrics import Metrics

from .conftest import at, make_state

pytestmark = pytest.mark.redis


def test_smoothed_item_ctr_is_pushed_online_and_failed_pushes_are_retried(rclient, tmp_path: Path) -> None:
    state = make_state(rclient)
    events = []
    for r in range(40):  # lst-hot: 40 impressions, 10 clicks; lst-new: 1 impression, 1 click
        items = ["lst-hot", "lst-cold"] + (["lst-new"] if r == 0 else [])
        imp = Impression(request_id=f"req-{r:08d}", user_id=f"u{r}", occurred_at=at(r),
                         assignments=[Assignment(experiment_id="e", variant="control")],
                         items=[ShownItem(listing_id=lid, position=i) for i, lid in enumerate(items)])
        events.append(imp)
        if r % 4 == 0:
            events.append(Click(request_id=imp.request_id, user_id=imp.user_id, listing_id="lst-hot",
                                occurred_at=at(r)))
    events.append(Click(request_id="req-00000000", user_id="u0", listing_id="lst-new", occurred_at=at(1)))
    state.apply([(Position("t", 0, i), e, None) for i, e in enumerate(events)])

    features = FeatureStoreClient(FeatureStoreConfig(registry_path=str(tmp_path / "registry.db"),
                                                     sqlite_path=str(tmp_path / "online.db")))
    features.apply()
    pusher = ItemCtrPusher(state, features, Metrics("abmetrics_feast_test"), prior=0.02, strength=100)
    assert pusher.push_dirty() == 3
    assert pusher.push_dirty() == 0  # nothing changed since
    rows = features.read(["item_ctr:impressions", "item_ctr:clicks", "item_ctr:ctr"],
                         [{"listing_id": lid} for lid in ("lst-hot", "lst-cold", "lst-new", "lst-unknown")])
    got = {r["listing_id"]: (r["impressions"], r["clicks"], r["ctr"]) for r in rows}
    assert got["lst-hot"] == (40, 10, pytest.approx(smoothed_ctr(10, 40, 0.02, 100)))
    assert got["lst-cold"] == (40, 0, pytest.approx(2 / 140))
    assert got["lst-new"][:2] == (1, 1) and got["lst-new"][2] == pytest.approx(3 / 101)
    assert got["lst-new"][2] < got["lst-hot"][2]  # one lucky click does not outrank a long record
    assert got["lst-unknown"] == (None, None, None)

    class Down:
        def push(self, *_a, **_k):
            raise RuntimeError("feast down")

    state.mark_dirty(["lst-hot"])
    with pytest.raises(RuntimeError):
        ItemCtrPusher(state, Down()).push_dirty()  # type: ignore[arg-type]
    assert state.pop_dirty_items(10) == ["lst-hot"]  # kept for the next round
    assert pusher.push_all() == 3
    features.close()
