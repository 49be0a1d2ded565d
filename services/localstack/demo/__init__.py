"""`make demo`: the whole platform locally in one command, with the demo catalogue indexed.

    python -m services.localstack.demo [--dataset fashion-products] [--limit N] [--no-train] [--fresh]

1. the demo model: reuse out/vision-demo (or ADREC_EMBEDDER__MODEL_DIR) when its model card
   records the hash of configs/vision/demo.yaml (ADREC_DEMO_TRAIN_CONFIG), else train it there
   (`make train-demo`, about 11 minutes on 2 cores; a model of another recipe in a directory named
   by ADREC_EMBEDDER__MODEL_DIR is refused, not overwritten);
2. start the local platform (the `make up` supervisor: Kafka, Milvus, Redis, embedder, ingest,
   recommender, A/B metrics);
3. publish the catalogue as `listing.upserted` events (listings already searchable with this
   model are not published again: the ingest worker tags vectors `<card version>+<model.onnx
   sha256[:8]>`, so those of an earlier training with the same version do not count);
4. wait until every published listing is searchable (progress bar on stderr; a stall, a dead
   service or the timeout ends the run with what is stuck);
5. check through the API that the A/B experiment assigns each of its variants;
6. print "ready" and the URLs, then wait for Ctrl-C / SIGTERM and stop everything.

Settings: `ADREC_DEMO_*` (below), the supervisor's `ADREC_LOCAL_*` (ports, run dir).
"""

from .cli import main

__all__ = ["main"]
