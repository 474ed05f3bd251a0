"""Liveness and readiness (no auth) and Prometheus metrics (viewer token)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError

from services.api.deps import StoreDep, Viewer
from services.api.metrics import ApiMetrics
from services.api.models import Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process serves."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request, store: StoreDep) -> JSONResponse:
    """200 when the database answers and the consumer is running (or disabled)."""
    ready = Readiness(database="ok", consumer="disabled")
    try:
        await store.ping()
    except (SQLAlchemyError, OSError):
        ready.database = "unreachable"
    consumer = request.app.state.consumer
    if consumer is not None:
        ready.consumer = "running" if consumer.running else "stopped"
    ok = ready.database == "ok" and ready.consumer != "stopped"
    return JSONResponse(ready.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, principal: Viewer, store: StoreDep) -> Response:
    """Prometheus text exposition of the api's registry; needs a viewer token (the series
    name campaigns). A tenant-bound token gets its tenant's series only."""
    api_metrics: ApiMetrics = request.app.state.metrics
    await api_metrics.refresh(store)
    body = api_metrics.exposition(principal.tenant_id)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
