"""The platform's services as the local supervisor starts them.

Each service issue adds its `ServiceSpec` here. A spec gets the infrastructure endpoints as
environment variables (the ADREC_* names every service's settings read) and must answer its
health URL before the supervisor reports "ready".
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: Callable[[Mapping[str, str]], list[str]]  # endpoints -> command line
    port: int
    health_path: str | None = "/healthz"
    env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 120.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def python_module(module: str, *args: str) -> Callable[[Mapping[str, str]], list[str]]:
    return lambda _endpoints: [sys.executable, "-m", module, *args]


# Filled in by the service issues (embedder, ingest worker, recommender, A/B metrics).
SERVICES: list[ServiceSpec] = []
