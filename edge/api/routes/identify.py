"""POST /v1/identify: every card in one uploaded image (multipart `file` or the raw image body).

The byte limit is enforced while the body streams in (413 before it is all read); the pixel limit
by edge.imageio.decode_image from the header. Recognition runs in a worker thread, at most
`IDENTIFY_SLOTS` at a time, so uploads never starve the live loop or the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from edge.api.deps import ReadAccess, RuntimeDep, SettingsDep
from edge.api.schemas import CandidateOut, ErrorOut, IdentifiedCardOut, IdentifyOut
from edge.errors import BadImageError, ImageTooLargeError
from edge.imageio import decode_image
from edge.live.runtime import RecognizerLike, Runtime
from edge.types import CardMatch

logger = logging.getLogger(__name__)

IDENTIFY_SLOTS = threading.BoundedSemaphore(2)
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file

_BINARY = {"schema": {"type": "string", "format": "binary"}}
OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/octet-stream": _BINARY,
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
        },
    }
}

router = APIRouter(tags=["identify"], dependencies=[ReadAccess])


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise ImageTooLargeError(f"upload exceeds {limit} bytes", "send a smaller image")
        yield chunk


async def read_image_body(request: Request, max_bytes: int) -> bytes:
    """The image bytes of a multipart `file` part or of the raw body, within `max_bytes`."""
    ctype = request.headers.get("content-type", "")
    multipart = ctype.startswith("multipart/form-data")
    limit = max_bytes + (MULTIPART_OVERHEAD if multipart else 0)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ImageTooLargeError(f"upload of {declared} bytes exceeds {max_bytes}", "resize it")
    if multipart:
        data = await _multipart_file(request, limit)
    else:
        data = b"".join([c async for c in _limited(request.stream(), limit)])
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"image of {len(data)} bytes exceeds {max_bytes}", "resize it")
    if not data:
        raise BadImageError("empty upload", "send a JPEG/PNG as the body or as multipart 'file'")
    return data


async def _multipart_file(request: Request, limit: int) -> bytes:
    parser = MultiPartParser(request.headers, _limited(request.stream(), limit), max_files=1)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise BadImageError(f"malformed multipart body: {e.message}") from e
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadImageError("multipart body has no 'file' part", "name the image field 'file'")
        return await upload.read()
    finally:
        await form.close()


def card_fields(rec: RecognizerLike, cm: CardMatch) -> IdentifiedCardOut:
    """The CLI's per-card JSON fields: id (null when unknown), names, score, margin, polygon."""
    info = rec.catalogue.get(cm.match.card_id)
    names = {c.card_id: rec.catalogue.get(c.card_id) for c in cm.top_k}
    return IdentifiedCardOut(
        card_id=cm.match.card_id if cm.match.known else None,
        best_card_id=cm.match.card_id,
        name=info.name if info else None,
        set_id=info.set_id if info else None,
        set_name=info.set_name if info else None,
        number=info.number if info else None,
        rarity=info.rarity if info else None,
        score=round(cm.match.score, 4),
        margin=round(cm.match.margin, 4),
        known=cm.match.known,
        confidence=cm.match.confidence,
        inliers=cm.match.inliers,
        reason=cm.match.reason,
        runner_up=cm.match.runner_up or None,
        det_conf=round(cm.box.conf, 4),
        polygon=[[round(float(x), 1), round(float(y), 1)] for x, y in cm.box.corners],
        top_k=[
            CandidateOut(
                card_id=c.card_id,
                score=round(c.score, 4),
                name=getattr(names[c.card_id], "name", None),
            )
            for c in cm.top_k
        ],
    )


def identify_bytes(runtime: Runtime, data: bytes, max_pixels: int) -> IdentifyOut:
    """Decode and recognise (blocking; call from a worker thread)."""
    t0 = time.monotonic()
    image = decode_image(data, max_pixels=max_pixels)
    decode_ms = (time.monotonic() - t0) * 1000
    with IDENTIFY_SLOTS, runtime.lease() as rec:
        result = rec.identify(image)
        cards = [card_fields(rec, cm) for cm in result.cards]
    for c in cards:
        runtime.metrics.count_verdict("identify", c.known)
    runtime.metrics.observe_stage("identify", time.monotonic() - t0)
    timings = {k: round(float(v), 2) for k, v in result.timings.as_dict().items()}
    timings["decode"] = round(decode_ms, 2)
    h, w = image.shape[:2]
    return IdentifyOut(
        bundle_id=result.bundle_id, width=w, height=h, cards=cards, timings_ms=timings
    )


@router.post(
    "/v1/identify",
    response_model=IdentifyOut,
    responses={
        400: {"model": ErrorOut, "description": "Not a decodable image"},
        413: {"model": ErrorOut, "description": "Too many bytes or pixels"},
        503: {"model": ErrorOut, "description": "No bundle loaded or backend failing"},
    },
    openapi_extra=OPENAPI_BODY,
    summary="Identify every card in one image",
)
async def identify(request: Request, runtime: RuntimeDep, settings: SettingsDep) -> IdentifyOut:
    data = await read_image_body(request, settings.limits.max_upload_bytes)
    return await run_in_threadpool(identify_bytes, runtime, data, settings.limits.max_pixels)
