"""/metrics in the Prometheus text format, from the runtime's own registry."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from edge.api.deps import ReadAccess, RuntimeDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["metrics"], dependencies=[ReadAccess])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"}},
    summary="Prometheus metrics",
)
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
