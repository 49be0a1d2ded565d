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
    if settings.workers > 1:  # each worker process builds its own app from the same env
        uvicorn.run("services.recommender.__main__:app_from_env", factory=True, workers=settings.workers,
                    host=settings.bind_host, port=settings.port, log_level=settings.log_level.lower(),
                    access_log=False)
    else:
        uvicorn.run(build_app(settings), host=settings.bind_host, port=settings.port,
                    log_level=settings.log_level.lower(), access_log=False)
    return 0


def app_from_env():
    settings = RecommenderSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    return build_app(settings)


if __name__ == "__main__":
    sys.exit(main())
