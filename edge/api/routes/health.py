"""Liveness and readiness: /healthz answers while the process serves; /readyz says why not ready."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from edge.api.deps import RuntimeDep
from edge.api.schemas import HealthOut, NotReadyOut, ReadyOut

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": NotReadyOut, "description": "Not ready, with the reasons"}},
    summary="Readiness: bundle loaded, backends warm, camera delivering",
)
async def readyz(runtime: RuntimeDep) -> ReadyOut | JSONResponse:
    ready, checks = runtime.health()
    if ready:
        return ReadyOut(ready=True, checks=checks)
    failing = "; ".join(f"{k}: {v}" for k, v in checks.items() if not v.startswith("ok"))
    body = NotReadyOut(code="not_ready", message=failing, hint=None, checks=checks)
    return JSONResponse(body.model_dump(), status_code=503)
