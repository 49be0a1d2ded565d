"""`python -m services.embedder [--model_dir DIR] [--http_port N] [--grpc_port N] [--host ADDR]`.

Settings come from ADREC_EMBEDDER__* (see settings.py); the flags override them (KServe-style
names, for the InferenceService container args).
"""

from __future__ import annotations

import argparse
import logging
import sys

from services.common.logging import configure_logging

from .model_bundle import ModelBundleError
from .settings import EmbedderSettings

log = logging.getLogger("services.embedder")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.embedder", description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", help="model directory or URI (ADREC_EMBEDDER__MODEL_DIR)")
    p.add_argument("--model_name", help="served name (default: the model card's name)")
    p.add_argument("--runtime", choices=["onnx", "torchscript"])
    p.add_argument("--provider", choices=["auto", "cpu", "cuda"])
    p.add_argument("--host")
    p.add_argument("--http_port", type=int)
    p.add_argument("--grpc_port", type=int)
    p.add_argument("--max_batch_size", type=int)
    p.add_argument("--max_wait_ms", type=float)
    args, _unknown = p.parse_known_args(argv)
    settings = EmbedderSettings()
    cfg = settings.embedder.model_copy(update={k: v for k, v in vars(args).items() if v is not None})
    configure_logging(settings.service_name, settings.log_level, settings.log_json)

    from .model import EmbedderModel  # kserve import is slow; after argument errors
    from .server import EmbedderServer

    try:
        model = EmbedderModel(cfg)
        model.load()
    except ModelBundleError as exc:
        log.error("cannot start the embedder: %s", exc)
        print(f"embedder: {exc}", file=sys.stderr, flush=True)
        return 2
    EmbedderServer(cfg).start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
