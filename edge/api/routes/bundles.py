"""/v1/bundles: list installed bundles, upload + install + hot swap, activate one, roll back.

Uploads are the raw archive bytes (.tar, .tar.gz or .tar.zst) as the request body, streamed to a
file under the state directory and cut off at limits.max_bundle_bytes (413). Installing, loading,
self-testing and swapping run in a worker thread; a refusal leaves the old bundle serving and
comes back as the usual error JSON {code, message, hint}.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from edge.api.deps import ReadAccess, WriteAccess, get_context
from edge.bundles.errors import BundleTooLargeError
from edge.bundles.hotswap import HotSwapper, SwapResult
from edge.bundles.install import policy_from_settings
from edge.bundles.store import BundleStore, StoredBundle
from edge.config import Settings
from edge.errors import BundleError
from edge.live.runtime import RecognizerLike, Runtime

logger = logging.getLogger(__name__)

router = APIRouter(tags=["bundles"])
_SWAPPER_LOCK = threading.Lock()
_STALE_UPLOAD_S = 24 * 3600.0


class BundleOut(BaseModel):
    bundle_id: str
    created: str = Field(description="When the bundle was built (ISO-8601).")
    installed_at: float = Field(description="When it was installed here (unix seconds).")
    catalogue: str
    card_count: int
    size_bytes: int
    current: bool
    previous: bool


class BundleListOut(BaseModel):
    current: str | None = Field(description="The bundle being served.")
    previous: str | None = Field(description="What POST /v1/bundles/rollback returns to.")
    bundles: list[BundleOut]


class SelfTestOut(BaseModel):
    image: str
    expected: str
    got: str
    score: float
    known: bool
    ok: bool


class SwapOut(BaseModel):
    bundle_id: str | None = Field(description="The bundle installed / activated.")
    swapped: bool = Field(description="It is now being served (false: installed only).")
    previous_bundle_id: str | None = Field(description="The bundle served before the swap.")
    installed: bool = Field(description="A new bundle was added to the store.")
    selftest: list[SelfTestOut]
    timings_ms: dict[str, float]


def make_swapper(settings: Settings, runtime: Runtime) -> HotSwapper:
    """The process's hot swapper for this runtime, store and install policy."""
    from edge.recognize.recognizer import Recognizer

    bundles = settings.bundles

    def load(path: Path) -> RecognizerLike:
        return Recognizer.from_bundle(path, settings.runtime, hailo=settings.hailo)

    return HotSwapper(
        runtime,
        BundleStore(settings.runtime.state_dir, keep=bundles.keep),
        load,
        policy_from_settings(bundles, settings.limits),
        run_selftest=bundles.selftest,
        max_pixels=settings.limits.max_pixels,
    )


def get_swapper(request: Request) -> HotSwapper:
    """One HotSwapper per app (it serialises swaps), made on first use unless create_app set one."""
    state = request.app.state
    with _SWAPPER_LOCK:
        swapper: HotSwapper | None = getattr(state, "bundle_swapper", None)
        if swapper is None:
            ctx = get_context(request)
            ctx.store.require()
            swapper = make_swapper(ctx.settings, ctx.runtime)
            state.bundle_swapper = swapper
    return swapper


SwapperDep = Annotated[HotSwapper, Depends(get_swapper)]


def _bundle_out(b: StoredBundle) -> BundleOut:
    return BundleOut(
        bundle_id=b.bundle_id,
        created=b.created,
        installed_at=b.installed_at,
        catalogue=b.catalogue,
        card_count=b.card_count,
        size_bytes=b.size_bytes,
        current=b.current,
        previous=b.previous,
    )


def _swap_out(result: SwapResult) -> SwapOut:
    if not result.ok:
        assert result.error is not None
        raise result.error
    return SwapOut(
        bundle_id=result.bundle_id,
        swapped=result.swapped,
        previous_bundle_id=result.previous_bundle_id,
        installed=result.installed,
        selftest=[
            SelfTestOut(
                image=c.image, expected=c.expected, got=c.got, score=c.score, known=c.known, ok=c.ok
            )
            for c in result.selftest
        ],
        timings_ms=result.timings_ms,
    )


@router.get(
    "/v1/bundles",
    response_model=BundleListOut,
    summary="Installed bundles",
    dependencies=[ReadAccess],
)
async def list_bundles(swapper: SwapperDep) -> BundleListOut:
    store = swapper.store
    listed = await run_in_threadpool(store.installed)
    return BundleListOut(
        current=store.current_id(),
        previous=store.previous_id(),
        bundles=[_bundle_out(b) for b in listed],
    )


async def _receive(request: Request, dest: Path, cap: int) -> int:
    """Stream the request body into `dest`, refusing more than `cap` bytes (413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise BundleTooLargeError(f"bundle upload of {declared} bytes exceeds the {cap} byte limit")
    received = 0
    with dest.open("wb") as out:
        async for chunk in request.stream():
            received += len(chunk)
            if received > cap:
                raise BundleTooLargeError(f"bundle upload exceeds the {cap} byte limit")
            out.write(chunk)
    if received == 0:
        raise BundleError("empty upload", "send the bundle archive as the request body")
    return received


def _sweep_uploads(uploads: Path) -> None:
    """Remove uploads a crashed process left behind."""
    now = time.time()
    for path in uploads.glob("*.part"):
        if now - path.stat().st_mtime > _STALE_UPLOAD_S:
            path.unlink(missing_ok=True)


@router.post(
    "/v1/bundles",
    response_model=SwapOut,
    summary="Upload a bundle archive (request body), install it and hot-swap to it",
    dependencies=[WriteAccess],
)
async def upload_bundle(
    request: Request,
    swapper: SwapperDep,
    activate: Annotated[bool, Query(description="Swap to it after installing.")] = True,
) -> SwapOut:
    settings = get_context(request).settings
    uploads = swapper.store.state_dir / "uploads"
    uploads.mkdir(exist_ok=True)
    _sweep_uploads(uploads)
    part = uploads / f"{uuid.uuid4().hex}.part"
    try:
        size = await _receive(request, part, settings.limits.max_bundle_bytes)
        logger.info("received bundle upload of %d bytes", size)
        if activate:
            result = await run_in_threadpool(swapper.install_and_activate, part)
        else:
            result = await run_in_threadpool(swapper.install_only, part)
    finally:
        part.unlink(missing_ok=True)
    return _swap_out(result)


@router.post(
    "/v1/bundles/rollback",
    response_model=SwapOut,
    summary="Swap back to the previous bundle",
    dependencies=[WriteAccess],
)
async def rollback_bundle(swapper: SwapperDep) -> SwapOut:
    return _swap_out(await run_in_threadpool(swapper.rollback))


@router.post(
    "/v1/bundles/{bundle_id}/activate",
    response_model=SwapOut,
    summary="Load, self-test and swap to an installed bundle",
    dependencies=[WriteAccess],
)
async def activate_bundle(bundle_id: str, swapper: SwapperDep) -> SwapOut:
    return _swap_out(await run_in_threadpool(swapper.activate, bundle_id))
