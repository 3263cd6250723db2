"""/v1/feedback: keep a correction (image or crop, polygon, the right card or not-a-card, a note)
for the next bundle; list the kept ones. See edge.feedback for the layout on disk.

The body is multipart/form-data (415 otherwise). Nothing is stored unless every check passes:
image within limits.max_upload_bytes / max_pixels and decodable, polygon inside it, card_id in the
served catalogue, and with teach=true a crop with enough local features to be taught: the
polygon's rectified crop is then also added to the overlay (edge.overlay.store), so the next sighting
of the card is verified against it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from edge.api.deps import (
    ReadAccess,
    RuntimeDep,
    SettingsDep,
    WriteAccess,
    get_context,
    taught_views,
)
from edge.api.routes.identify import MULTIPART_OVERHEAD
from edge.api.schemas import ErrorOut
from edge.errors import BadImageError, EdgeError, ImageTooLargeError
from edge.feedback import (
    FeedbackError,
    FeedbackRecord,
    FeedbackStore,
    UnknownCardError,
    check_label,
    check_polygon_inside,
    parse_polygon,
)
from edge.imageio import decode_image, image_header
from edge.live.runtime import Runtime
from edge.overlay.store import OverlayUnsupportedError

logger = logging.getLogger(__name__)

router = APIRouter(tags=["feedback"])


class UnsupportedMediaError(EdgeError):
    code = "unsupported_media_type"
    http_status = 415


class FeedbackOut(BaseModel):
    feedback_id: str
    created: str = Field(description="When it was stored (ISO-8601 UTC).")
    bundle_id: str | None = Field(description="The bundle whose answer this corrects.")
    card_id: str | None = Field(description="The right card; null when not_a_card.")
    not_a_card: bool
    polygon: list[list[float]] | None = Field(description="4 x [x, y] px; null: a crop.")
    note: str | None
    width: int
    height: int
    size_bytes: int
    sha256: str
    taught_view: str | None = Field(
        None, description="With teach=true: the overlay view it added (GET /v1/overlay)."
    )


class FeedbackListOut(BaseModel):
    count: int
    feedback: list[FeedbackOut]


_FIELDS = {
    "file": {"type": "string", "format": "binary", "description": "The image or the card's crop."},
    "card_id": {"type": "string", "description": "The right card id (from the catalogue)."},
    "not_a_card": {"type": "boolean", "description": "The detection was no card."},
    "polygon": {
        "type": "string",
        "description": "JSON 4 x [x, y] in the image's pixels; omit for a crop.",
    },
    "note": {"type": "string"},
    "bundle_id": {"type": "string", "description": "Bundle corrected (default: the current one)."},
    "teach": {
        "type": "boolean",
        "description": "Also teach the corrected crop as a reference view on this device.",
    },
}
OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": _FIELDS}
            }
        },
    }
}


def _out(r: FeedbackRecord, taught_view: str | None = None) -> FeedbackOut:
    return FeedbackOut(
        taught_view=taught_view,
        feedback_id=r.feedback_id,
        created=r.created,
        bundle_id=r.bundle_id,
        card_id=r.card_id,
        not_a_card=r.not_a_card,
        polygon=r.polygon,
        note=r.note,
        width=r.width,
        height=r.height,
        size_bytes=r.size_bytes,
        sha256=r.sha256,
    )


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise ImageTooLargeError(
                f"feedback upload exceeds {limit} bytes", "send a smaller image"
            )
        yield chunk


async def _form(request: Request, max_bytes: int) -> FormData:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise UnsupportedMediaError(
            f"feedback must be multipart/form-data, not {ctype or 'no content type'}",
            "send the image as part 'file' and card_id / polygon / note as form fields",
        )
    limit = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ImageTooLargeError(f"upload of {declared} bytes exceeds {max_bytes}", "resize it")
    parser = MultiPartParser(
        request.headers, _limited(request.stream(), limit), max_files=1, max_fields=10
    )
    try:
        return await parser.parse()
    except MultiPartException as e:
        raise BadImageError(f"malformed multipart body: {e.message}") from e


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, str):
        return value.strip() if value is not None else None
    raise FeedbackError(f"form field {name!r} must be text, not a file")


def _store_feedback(
    runtime: Runtime,
    store: FeedbackStore,
    data: bytes,
    fields: dict[str, Any],
    bundle_id: str | None,
    max_pixels: int,
    teach: bool = False,
) -> tuple[FeedbackRecord, str | None]:
    """Every check, then the write, then the taught view (blocking; call from a worker thread).
    Returns the record and the taught view's id."""
    fmt = image_header(data)[0]
    image = decode_image(data, max_pixels=max_pixels)
    height, width = image.shape[:2]
    if fields["polygon"] is not None:
        check_polygon_inside(fields["polygon"], width, height)
    card_id = fields["card_id"]
    with runtime.lease() as rec:
        if card_id and rec.catalogue.get(card_id) is None:
            raise UnknownCardError(
                f"card {card_id!r} is not in the catalogue of bundle {rec.bundle_id}",
                "look it up with GET /v1/cards?q=",
            )
        bundle_id = bundle_id or rec.bundle_id
        overlay = taught_views(runtime)
        if teach and overlay is None:
            raise OverlayUnsupportedError("this service keeps no overlay (state directory)")
        pending = None
        if teach and overlay is not None:
            pending = overlay.prepare(rec, card_id, image, fields["polygon"])
        record = store.add(data, fmt, width=width, height=height, bundle_id=bundle_id, **fields)
        if pending is None or overlay is None:
            return record, None
        entry = overlay.commit(pending, f"feedback:{record.feedback_id}", record.feedback_id)
    return record, entry.view_id


@router.post(
    "/v1/feedback",
    response_model=FeedbackOut,
    status_code=201,
    responses={
        400: {"model": ErrorOut, "description": "Not a decodable image"},
        413: {"model": ErrorOut, "description": "Too many bytes or pixels"},
        415: {"model": ErrorOut, "description": "Not multipart/form-data"},
        422: {"model": ErrorOut, "description": "Bad label, polygon or card id"},
        503: {"model": ErrorOut, "description": "State directory not writable"},
    },
    openapi_extra=OPENAPI_BODY,
    dependencies=[WriteAccess],
    summary="Keep a correction for retraining",
)
async def post_feedback(
    request: Request, runtime: RuntimeDep, settings: SettingsDep
) -> FeedbackOut:
    ctx = get_context(request)
    ctx.store.require()
    limits = settings.limits
    form = await _form(request, limits.max_upload_bytes)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadImageError("multipart body has no 'file' part", "name the image field 'file'")
        data = await upload.read()
        if len(data) > limits.max_upload_bytes:
            raise ImageTooLargeError(
                f"image of {len(data)} bytes exceeds {limits.max_upload_bytes}", "resize it"
            )
        if not data:
            raise BadImageError("empty image", "send a JPEG/PNG as part 'file'")
        flag = (_text(form, "not_a_card") or "false").lower()
        teach = (_text(form, "teach") or "false").lower()
        for name, value in (("not_a_card", flag), ("teach", teach)):
            if value not in ("true", "false", "1", "0"):
                raise FeedbackError(f"{name} must be true or false, not {value!r}")
        fields: dict[str, Any] = {
            "card_id": _text(form, "card_id") or None,
            "not_a_card": flag in ("true", "1"),
            "polygon": parse_polygon(_text(form, "polygon")),
            "note": _text(form, "note") or None,
            "bundle_id": _text(form, "bundle_id") or None,
        }
    finally:
        await form.close()
    check_label(fields["card_id"], fields["not_a_card"], fields["note"])
    teaching = teach in ("true", "1")
    if teaching and fields["not_a_card"]:
        raise FeedbackError("teach=true needs the right card_id, not not_a_card")
    bundle_id = fields.pop("bundle_id")
    store = FeedbackStore(ctx.store.state_dir)
    record, view_id = await run_in_threadpool(
        _store_feedback, runtime, store, data, fields, bundle_id, limits.max_pixels, teaching
    )
    return _out(record, view_id)


@router.get(
    "/v1/feedback",
    response_model=FeedbackListOut,
    dependencies=[ReadAccess],
    summary="Stored corrections, newest first",
)
async def list_feedback(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many.")] = 1000,
) -> FeedbackListOut:
    store = FeedbackStore(get_context(request).store.state_dir)
    records = await run_in_threadpool(store.list, limit)
    return FeedbackListOut(count=len(records), feedback=[_out(r) for r in records])
