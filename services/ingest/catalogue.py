"""The demo catalogue: the shared datasets published as `listing.upserted` events.

    python -m services.ingest.catalogue --dataset fashion-products [--limit N] [--dry-run]

Listing ids are `fp-<id>` (fashion-products) and `cl-<uuid>` (clothing photos). Shops and
prices are not in the data: they are derived deterministically from the id (stable across
runs), so filters and diversity rules have something real to act on.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from services.common.events import ListingUpserted, Topics
from services.common.kafka_client import EventProducer, ensure_topics
from services.common.settings import KafkaConfig

from .settings import DATA_DIR

N_SHOPS = 40


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def shop_for(listing_id: str) -> str:
    return f"shop-{_h('shop:' + listing_id) % N_SHOPS:02d}"


def price_for(listing_id: str) -> Decimal:
    return Decimal(5 + _h("price:" + listing_id) % 19_500) / 100  # 0.05 .. 195.04


class CatalogueError(ValueError):
    pass


def fashion_products(data_dir: Path = DATA_DIR, now: datetime | None = None) -> Iterator[ListingUpserted]:
    root = data_dir / "fashion-products"
    csv_path = root / "styles.csv"
    if not csv_path.exists():
        raise CatalogueError(f"{csv_path} not found (see ../shared/data/README.md)")
    from pipelines.vision.data import STYLES_TITLE, read_styles  # the training data's reading rule

    now = now or datetime.now(UTC)
    for row in read_styles(csv_path)[0]:
        sid, category = row["id"].strip(), row["articleType"].strip()
        image = root / "images" / f"{sid}.jpg"
        if not sid or not image.exists():
            continue
        lid = f"fp-{sid}"
        yield ListingUpserted(
            id=lid, shop_id=shop_for(lid), title=(row[STYLES_TITLE].strip() or category)[:500],
            category=category, price=price_for(lid), currency="USD", active=True,
            image_uri=str(image), updated_at=now, producer="catalogue-loader")


def clothing(data_dir: Path = DATA_DIR, now: datetime | None = None) -> Iterator[ListingUpserted]:
    root = data_dir / "clothing"
    if not root.exists():
        raise CatalogueError(f"{root} not found (see ../shared/data/README.md)")
    now = now or datetime.now(UTC)
    for image in sorted(root.glob("*/*/*.jpg")):
        cls = image.parent.name
        lid = f"cl-{image.stem}"[:64]
        yield ListingUpserted(
            id=lid, shop_id=shop_for(lid), title=f"{cls.replace('-', ' ')} (buyer photo)", category=cls,
            price=price_for(lid), currency="USD", active=True, image_uri=str(image), updated_at=now,
            producer="catalogue-loader")


DATASETS = {"fashion-products": fashion_products, "clothing": clothing}


def publish(cfg: KafkaConfig, events: list[ListingUpserted], topic: str = Topics.LISTINGS,
            progress: bool = True) -> int:
    ensure_topics(cfg, [topic, Topics.dlq(topic)])
    from tqdm import tqdm

    with EventProducer(cfg, client_id="catalogue-loader") as producer:
        for e in tqdm(events, desc="publishing", unit="ev", disable=not progress):
            producer.publish(topic, e)
        producer.flush()  # raises DeliveryError unless the broker acknowledged every record
    return len(events)


def main(argv: list[str] | None = None) -> int:
    from services.common.settings import ServiceSettings

    class LoaderSettings(ServiceSettings):
        kafka: KafkaConfig = KafkaConfig()

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), action="append",
                   help="dataset(s) to publish (default: fashion-products)")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--limit", type=int, default=None, help="publish at most N listings per dataset")
    p.add_argument("--topic", default=Topics.LISTINGS)
    p.add_argument("--dry-run", action="store_true", help="validate and count, publish nothing")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    events: list[ListingUpserted] = []
    try:
        for name in args.dataset or ["fashion-products"]:
            it = DATASETS[name](args.data_dir)
            events += [e for _, e in zip(range(args.limit or 10**9), it)]
    except CatalogueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"{len(events)} listing events (dry run, nothing published)")
        return 0
    n = publish(LoaderSettings().kafka, events, args.topic)
    print(f"published {n} listing events to {args.topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
