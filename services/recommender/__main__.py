"""`python -m services.recommender`: serve the REST API with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from services.common.logging import configure_logging

from .app import build_app
from .settings import RecommenderSettings


def main() -> int:
    settings = RecommenderSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    app = build_app(settings)
    uvicorn.run(app, host=settings.bind_host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
