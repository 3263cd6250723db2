"""/v1/overlay: the views taught on this device (POST /v1/feedback with teach=true adds one):
list them with a thumbnail each, remove one, clear them all. See edge.overlay.store.
"""

from __future__ import annotations

import base64
import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from edge.api.deps import ReadAccess, RuntimeDep, WriteAccess, get_context, taught_views
from edge.api.schemas import ErrorOut
from edge.live.runtime import Runtime
from edge.overlay.store import OverlayEntry, OverlayStore
from edge.state import StoreUnavailableError

logger = logging.getLogger(__name__)

router = APIRouter(tags=["overlay"])


class OverlayViewOut(BaseModel):
    view_id: str
    card_id: str
    name: str | None = Field(description="The card's name in the served catalogue.")
    created: str = Field(description="When it was taught (ISO-8601 UTC).")
    bundle_id: str = Field(description="The bundle it was taught under.")
    catalogue: str = Field(description="That bundle's catalogue fingerprint.")
    source: str = Field(description="Who taught it: feedback:<id>, list:..., api.")
    feedback_id: str | None
    thumbnail: str | None = Field(
        None, description="The taught crop, 80 x 112 JPEG as a data: URL (thumbnails=false: null)."
    )


class OverlayOut(BaseModel):
    count: int = Field(description="Taught views.")
    cards: int = Field(description="Distinct cards among them.")
    catalogue: str | None = Field(description="Catalogue fingerprint the views belong to.")
    views: list[OverlayViewOut]


class OverlayRemovedOut(BaseModel):
    removed: int
    view_ids: list[str]


def _overlay(request: Request) -> OverlayStore:
    store = get_context(request).store
    store.require()
    overlay = taught_views(get_context(request).runtime)
    if overlay is None:
        raise StoreUnavailableError("no overlay is attached to this service")
    return overlay


def _view(runtime: Runtime, overlay: OverlayStore, e: OverlayEntry, thumbs: bool) -> OverlayViewOut:
    rec = runtime.peek()
    info = rec.catalogue.get(e.card_id) if rec is not None else None
    jpeg = overlay.thumbnail_jpeg(e.view_id) if thumbs else None
    return OverlayViewOut(
        view_id=e.view_id,
        card_id=e.card_id,
        name=info.name if info is not None else None,
        created=e.created,
        bundle_id=e.bundle_id,
        catalogue=e.catalogue,
        source=e.source,
        feedback_id=e.feedback_id,
        thumbnail=f"data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}" if jpeg else None,
    )


def _listing(runtime: Runtime, overlay: OverlayStore, thumbs: bool, limit: int) -> OverlayOut:
    entries = overlay.entries()
    status = overlay.status()
    newest = list(reversed(entries))[:limit]
    return OverlayOut(
        count=len(entries),
        cards=status["cards"],
        catalogue=status["catalogue"],
        views=[_view(runtime, overlay, e, thumbs) for e in newest],
    )


@router.get(
    "/v1/overlay",
    response_model=OverlayOut,
    dependencies=[ReadAccess],
    responses={503: {"model": ErrorOut, "description": "State directory not writable"}},
    summary="Views taught on this device, newest first",
)
async def list_overlay(
    request: Request,
    runtime: RuntimeDep,
    thumbnails: Annotated[bool, Query(description="Include each crop as a data: URL.")] = True,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many views.")] = 1000,
) -> OverlayOut:
    overlay = _overlay(request)
    return await run_in_threadpool(_listing, runtime, overlay, thumbnails, limit)


@router.delete(
    "/v1/overlay",
    response_model=OverlayRemovedOut,
    dependencies=[WriteAccess],
    responses={503: {"model": ErrorOut, "description": "State directory not writable"}},
    summary="Forget every taught view",
)
async def clear_overlay(request: Request) -> OverlayRemovedOut:
    removed = await run_in_threadpool(_overlay(request).clear)
    return OverlayRemovedOut(removed=len(removed), view_ids=[e.view_id for e in removed])


@router.delete(
    "/v1/overlay/{view_id}",
    response_model=OverlayRemovedOut,
    dependencies=[WriteAccess],
    responses={404: {"model": ErrorOut, "description": "No such taught view"}},
    summary="Forget one taught view",
)
async def remove_view(request: Request, view_id: str) -> OverlayRemovedOut:
    overlay = _overlay(request)
    entry = await run_in_threadpool(overlay.remove, view_id)
    return OverlayRemovedOut(removed=1, view_ids=[entry.view_id])
