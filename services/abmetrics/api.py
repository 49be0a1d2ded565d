"""FastAPI app of the A/B metrics service: JSON report, HTML dashboard, health, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import FastAPI, Path
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.common.events import ID_PATTERN
from services.common.metrics import Metrics
from services.experiments.config import ExperimentsConfig

from . import dashboard
from .report import ExperimentNotFound, build_report
from .settings import AbMetricsConfig
from .state import AbState

ExpId = Annotated[str, Path(pattern=ID_PATTERN, description="experiment id")]


@dataclass
class ApiDeps:
    state: AbState
    cfg: AbMetricsConfig
    metrics: Metrics
    experiments: Callable[[], ExperimentsConfig | None] = lambda: None
    aggregator_alive: Callable[[], bool] | None = None  # e.g. the aggregator thread's is_alive


def create_app(deps: ApiDeps, lifespan=None) -> FastAPI:
    app = FastAPI(lifespan=lifespan, title="adrec A/B metrics", version="1.0",
                  description="Experiment reports (CTR per variant, lift, tests, SRM) and dashboards.")
    reports = deps.metrics.counter("reports_total", "reports served", ["format", "status"])

    def not_found(exp_id: str) -> JSONResponse:
        message = f"experiment {exp_id!r}: no configuration and no events"
        return JSONResponse({"error": {"code": "not_found", "message": message}}, status_code=404)

    def report(exp_id: str) -> dict:
        return build_report(deps.state, exp_id, deps.experiments(), deps.cfg)

    @app.get("/v1/experiments", tags=["experiments"], summary="experiments with events or configuration")
    async def list_experiments() -> dict:
        seen = set(await asyncio.to_thread(deps.state.experiments))
        conf = deps.experiments()
        configured = {e.id for e in conf.all_experiments()} if conf else set()
        return {"experiments": [{"id": e, "configured": e in configured, "has_events": e in seen}
                                for e in sorted(seen | configured)]}

    @app.get("/v1/experiments/{exp_id}/report", tags=["experiments"], summary="the experiment report (JSON)")
    async def get_report(exp_id: ExpId):
        try:
            body = await asyncio.to_thread(report, exp_id)
        except ExperimentNotFound:
            reports.labels(format="json", status="404").inc()
            return not_found(exp_id)
        reports.labels(format="json", status="200").inc()
        return JSONResponse(body)

    @app.get("/experiments/{exp_id}", tags=["experiments"], summary="the experiment dashboard (HTML)",
             response_class=HTMLResponse)
    async def get_dashboard(exp_id: ExpId):
        try:
            page = await asyncio.to_thread(lambda: dashboard.render(report(exp_id)))
        except ExperimentNotFound:
            reports.labels(format="html", status="404").inc()
            return not_found(exp_id)
        reports.labels(format="html", status="200").inc()
        return HTMLResponse(page)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz():
        if deps.aggregator_alive is not None and not deps.aggregator_alive():
            return JSONResponse({"status": "not_ready", "aggregator": "aggregator not running"}, status_code=503)
        try:
            await asyncio.to_thread(deps.state.r.ping)
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"status": "not_ready", "redis": str(exc)[:200]}, status_code=503)
        return {"status": "ready"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, ctype = deps.metrics.exposition()
        return Response(body, media_type=ctype)

    return app
