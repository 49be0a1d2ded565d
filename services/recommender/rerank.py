"""Re-ranking of over-fetched candidates: business rules and shop diversity."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from services.common.milvus_store import Hit


def diversify(hits: Sequence[Hit], max_per_shop: int, limit: int) -> list[Hit]:
    """Keep score order, but at most `max_per_shop` hits per shop; stop at `limit`."""
    per_shop: Counter[str] = Counter()
    out: list[Hit] = []
    for h in hits:
        shop = h.fields.get("shop_id", "")
        if per_shop[shop] >= max_per_shop:
            continue
        per_shop[shop] += 1
        out.append(h)
        if len(out) >= limit:
            break
    return out
