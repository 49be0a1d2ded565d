"""Publish the catalogue as listing events and wait until it is searchable."""

from __future__ import annotations

import re
import sys
import time
import urllib.request

from ..supervisor import Supervisor
from .settings import DemoError, DemoSettings


def catalogue(s: DemoSettings) -> list:
    from services.ingest.catalogue import DATASETS, CatalogueError

    events = []
    try:
        for name in s.datasets:
            events += [e for _, e in zip(range(s.limit or 10**9), DATASETS[name](s.data_dir))]
    except CatalogueError as exc:
        raise DemoError(str(exc)) from exc
    if not events:
        raise DemoError(f"no listings in {', '.join(s.datasets)} under {s.data_dir}")
    return events


def searchable(store, ids: list[str], model_version: str, chunk: int = 500) -> set[str]:
    """Which of `ids` are in the serving collection, embedded by this model version: the artifact's
    (checks.model_version, `0.1.0+<onnx hash>`), never the card's bare version that every retrain shares."""
    found: set[str] = set()
    for i in range(0, len(ids), chunk):
        rows = store.get(ids[i:i + chunk], with_vectors=False)
        found |= {r["listing_id"] for r in rows if r.get("model_version") == model_version and r.get("active")}
    return found


def ingest_counts(metrics_url: str) -> dict[str, int]:
    """The ingest worker's events_total by outcome, from its Prometheus endpoint ({} if it does not answer)."""
    try:
        text = urllib.request.urlopen(metrics_url, timeout=2).read().decode()
    except OSError:
        return {}
    pattern = r'^adrec_ingest_events_total\{outcome="(\w+)"\} (\S+)$'
    return {m.group(1): int(float(m.group(2))) for m in re.finditer(pattern, text, re.M)}


def wait_searchable(sup: Supervisor, store, ids: list[str], model_version: str, s: DemoSettings,
                    metrics_url: str) -> list[str]:
    """Poll Milvus until every id is searchable; returns the ids the ingest worker dead-lettered.
    Raises DemoError when a service died, nothing moved for `stall_s`, or `index_timeout_s` passed."""
    from tqdm import tqdm

    if not ids:
        return []
    pending, total = list(ids), len(ids)
    start = last_progress = time.monotonic()
    error, counts = "", {}
    with tqdm(total=total, desc="indexing", unit="listing", file=sys.stderr) as bar:
        while pending:
            dead = [r.name for r in sup.running if not r.alive()]
            if dead:
                raise DemoError(f"{', '.join(dead)} exited while indexing; see "
                                f"{sup.settings.run_dir / 'logs'}/{dead[0]}.log")
            try:
                found, error = searchable(store, pending, model_version), ""
            except Exception as exc:  # noqa: BLE001 - the collection appears with the first batch
                found, error = set(), str(exc)[:200]
            now = time.monotonic()
            if found:
                pending = [i for i in pending if i not in found]
                bar.update(len(found))
                last_progress = now
            counts = ingest_counts(metrics_url)
            if counts.get("dead_lettered"):
                bar.set_postfix(dead_lettered=counts["dead_lettered"])
            if pending and counts.get("dead_lettered", 0) >= len(pending) and now - last_progress > 10:
                return pending  # the rest went to the dead-letter topic
            if pending and (now - last_progress > s.stall_s or now - start > s.index_timeout_s):
                why = f"nothing new for {s.stall_s:.0f}s" if now - last_progress > s.stall_s \
                    else f"timeout {s.index_timeout_s:.0f}s"
                raise DemoError(
                    f"indexing stuck ({why}): {total - len(pending)}/{total} listings searchable; ingest events "
                    f"{counts or 'unknown (metrics do not answer)'}; milvus: {error or 'answers'}; see "
                    f"{sup.settings.run_dir / 'logs'}/ingest.log and embedder.log")
            if pending:
                time.sleep(1.0)
    return []


def index_catalogue(sup: Supervisor, events: list, card: dict, s: DemoSettings, echo) -> list[str]:
    """Publish what is not searchable yet and wait for it; returns the dead-lettered ids."""
    from services.common.milvus_store import ListingVectorStore
    from services.common.settings import KafkaConfig, MilvusConfig
    from services.ingest.catalogue import publish

    version, dim = str(card["artifact_version"]), int(card.get("embedding_dim", 256))
    store = ListingVectorStore(MilvusConfig(uri=sup.endpoints["ADREC_MILVUS__URI"], dim=dim))
    try:
        try:
            have = store.dim()
        except Exception:  # noqa: BLE001 - no collection yet: a fresh run dir
            have = None
        if have is not None and have != dim:
            raise DemoError(f"the run directory's collection holds {have}-dim vectors, model {version} makes "
                            f"{dim}-dim ones: run the demo with --fresh to re-index")
        try:
            done = searchable(store, [e.id for e in events], version)
        except Exception:  # noqa: BLE001 - no collection yet: a fresh run dir
            done = set()
        todo = [e for e in events if e.id not in done]
        echo(f"catalogue: {len(events)} listings from {', '.join(s.datasets)}; {len(done)} already searchable, "
             f"publishing {len(todo)}")
        if todo:
            publish(KafkaConfig(bootstrap_servers=sup.endpoints["ADREC_KAFKA__BOOTSTRAP_SERVERS"]), todo)
        metrics = next(spec.url for spec in sup.services if spec.name == "ingest") + "/metrics"
        return wait_searchable(sup, store, [e.id for e in todo], version, s, metrics)
    finally:
        store.close()
