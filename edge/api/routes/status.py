"""/v1/status: which bundle, which backend per model and why, camera, fps, per-stage latency."""

from __future__ import annotations

import logging
from importlib import metadata

from fastapi import APIRouter, Request

from edge.api.deps import ReadAccess, RuntimeDep, get_context
from edge.api.schemas import (
    BackendOut,
    LiveOut,
    OverlayStatusOut,
    StatusOut,
    StoreOut,
    VerificationOut,
)

logger = logging.getLogger(__name__)

router = APIRouter(tags=["status"], dependencies=[ReadAccess])


def _version() -> str:
    try:
        return metadata.version("cardedge")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@router.get("/v1/status", response_model=StatusOut, summary="Runtime status")
async def status(request: Request, runtime: RuntimeDep) -> StatusOut:
    store = get_context(request).store
    rec = runtime.peek()
    ready, checks = runtime.health()
    live = runtime.live
    described = rec.describe().get("verification") if rec else None
    overlay = runtime.overlay.status() if runtime.overlay is not None else None
    return StatusOut(
        overlay=OverlayStatusOut(views=overlay["views"], cards=overlay["cards"])
        if overlay
        else None,
        verification=VerificationOut(**described) if isinstance(described, dict) else None,
        version=_version(),
        bundle_id=rec.bundle_id if rec else None,
        catalogue=rec.manifest.catalogue.name if rec else None,
        card_count=rec.manifest.catalogue.card_count if rec else None,
        backends=[BackendOut(role=k, reason=v) for k, v in rec.backends.items()] if rec else [],
        camera=LiveOut(**live.status()) if live else None,
        ready=ready,
        checks=checks,
        store=StoreOut(
            state_dir=str(store.state_dir),
            writable=store.writable,
            reason=store.reason,
            hint=store.hint,
        ),
    )
