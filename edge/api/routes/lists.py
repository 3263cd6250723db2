"""/v1/lists: scan lists. Start one, stop it, read it with per-card counts, delete or correct an
entry, export it (TCGplayer or Collectr CSV, plain CSV, JSON), fetch an entry's thumbnail.

Only one list records at a time: POST /v1/lists while one records answers 409
`list_already_recording` naming it. Writes need the token; the JSON bodies are read after the
token check, so a request without the token is refused (401) whatever it carries.
Correcting an entry (PATCH) is also feedback: the entry's crop is kept with the right card for
retraining, and with `teach` it goes to the local overlay too.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from edge.api.deps import ReadAccess, RuntimeDep, WriteAccess, get_context, taught_views
from edge.api.list_schemas import (
    CorrectionOut,
    EntryPatchIn,
    ListDetailOut,
    ListIn,
    ListOut,
    ListsOut,
    detail_out,
    entry_out,
    list_out,
)
from edge.api.schemas import ErrorOut
from edge.errors import EdgeError, NotFoundError
from edge.feedback import FeedbackStore, UnknownCardError
from edge.lists.export import FORMATS, export, filename
from edge.lists.service import ScanLists
from edge.lists.store import CardFields
from edge.live.runtime import Runtime
from edge.state import StoreUnavailableError

logger = logging.getLogger(__name__)

router = APIRouter(tags=["lists"])
M = TypeVar("M", bound=BaseModel)
ListId = Annotated[int, Path(ge=1, le=2**62, description="The list's id (GET /v1/lists).")]
EntryId = Annotated[
    int, Path(ge=1, le=2**62, description="The entry's id (GET /v1/lists/{list_id}).")
]


class TeachUnavailableError(EdgeError):
    """This build has no overlay to teach (nothing was changed)."""

    code = "teach_unavailable"
    http_status = 501


class NoThumbnailError(NotFoundError):
    code = "no_thumbnail"


class NoCropError(EdgeError):
    """The entry was written without images (the writer's backlog), so it cannot teach."""

    code = "entry_has_no_crop"
    http_status = 409


def get_lists(request: Request) -> ScanLists:
    ctx = get_context(request)
    ctx.store.require()
    lists = ctx.runtime.lists
    if not isinstance(lists, ScanLists):
        raise StoreUnavailableError("scan lists are not available in this service")
    return lists


ListsDep = Annotated[ScanLists, Depends(get_lists)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such list or entry"},
    503: {"model": ErrorOut, "description": "State directory not writable"},
}


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}  # fmt: skip
    return {"requestBody": schema}


async def _json(request: Request, model: type[M]) -> M:
    """The body as `model`; a bad body is the usual 422 `invalid_request`."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from e


@router.post(
    "/v1/lists",
    response_model=ListOut,
    status_code=201,
    responses={409: {"model": ErrorOut, "description": "A list is recording already"}, **_ERRORS},
    dependencies=[WriteAccess],
    openapi_extra=_body_doc(ListIn),
    summary="Start recording a scan list",
)
async def start_list(request: Request, lists: ListsDep, runtime: RuntimeDep) -> ListOut:
    body = await _json(request, ListIn)
    started = await run_in_threadpool(lists.start, body.name, body.note, runtime.current_bundle_id)
    return list_out(started)


@router.post(
    "/v1/lists/{list_id}/stop",
    response_model=ListOut,
    responses=_ERRORS,
    dependencies=[WriteAccess],
    summary="Stop recording (every entry is written when it returns)",
)
def stop_list(list_id: ListId, lists: ListsDep) -> ListOut:
    return list_out(lists.stop(list_id))


@router.get(
    "/v1/lists",
    response_model=ListsOut,
    responses=_ERRORS,
    dependencies=[ReadAccess],
    summary="Every scan list, newest first",
)
def all_lists(lists: ListsDep) -> ListsOut:
    found = lists.store.all()
    recording = next((s.list_id for s in found if s.recording), None)
    return ListsOut(count=len(found), recording=recording, lists=[list_out(s) for s in found])


@router.get(
    "/v1/lists/{list_id}",
    response_model=ListDetailOut,
    responses=_ERRORS,
    dependencies=[ReadAccess],
    summary="A scan list: per-card counts and every entry",
)
def get_list(list_id: ListId, lists: ListsDep) -> ListDetailOut:
    scan = lists.store.get(list_id)
    return detail_out(scan, lists.store.entries(list_id))


@router.delete(
    "/v1/lists/{list_id}/entries/{entry_id}",
    status_code=204,
    responses=_ERRORS,
    dependencies=[WriteAccess],
    summary="Delete an entry (a card that was not there, or counted once too often)",
)
def delete_entry(list_id: ListId, entry_id: EntryId, lists: ListsDep) -> Response:
    lists.store.delete_entry(list_id, entry_id)
    return Response(status_code=204)


def _correct(
    runtime: Runtime, lists: ScanLists, list_id: int, entry_id: int, body: EntryPatchIn
) -> CorrectionOut:
    """Every check first (card, entry, and with teach the overlay's own checks on the crop),
    then the change, the feedback and the taught view."""
    overlay = taught_views(runtime)
    if body.teach and overlay is None:
        raise TeachUnavailableError(
            "teaching on the spot is not available in this service; nothing was changed",
            "send the correction without teach (it is still kept as feedback)",
        )
    lists.store.entry(list_id, entry_id)  # 404 before anything else
    with runtime.lease() as rec:
        info = rec.catalogue.get(body.card_id)
        bundle_id = rec.bundle_id
        if info is None:
            raise UnknownCardError(
                f"card {body.card_id!r} is not in the catalogue of bundle {bundle_id}",
                "look it up with GET /v1/cards?q=",
            )
        pending = None
        if body.teach and overlay is not None:
            crop = lists.crop(list_id, entry_id)
            if crop is None:
                raise NoCropError(
                    f"entry {entry_id} has no crop to teach from; nothing was changed",
                    "send the correction without teach, or teach from another sighting",
                )
            pending = overlay.prepare(rec, body.card_id, crop)
    card = CardFields(info.card_id, info.name, info.set_id, info.set_name, info.number, info.rarity)
    done = lists.correct(list_id, entry_id, card, FeedbackStore(lists.state_dir), bundle_id)
    taught = None
    if pending is not None and overlay is not None:
        feedback_id = done.feedback.feedback_id if done.feedback else None
        view = overlay.commit(pending, f"list:{list_id}/{entry_id}", feedback_id)
        taught = asdict(view)
    return CorrectionOut(
        entry=entry_out(done.entry),
        previous_card_id=done.previous.card_id,
        feedback_id=done.feedback.feedback_id if done.feedback else None,
        taught=taught,
    )


@router.patch(
    "/v1/lists/{list_id}/entries/{entry_id}",
    response_model=CorrectionOut,
    responses={
        422: {"model": ErrorOut, "description": "card_id not in the catalogue"},
        409: {"model": ErrorOut, "description": "teach: no crop, or the overlay refuses"},
        501: {"model": ErrorOut, "description": "teach asked for, no overlay here"},
        **_ERRORS,
    },
    dependencies=[WriteAccess],
    openapi_extra=_body_doc(EntryPatchIn),
    summary="Change an entry to the right card (kept as feedback; teach: also the overlay)",
)
async def patch_entry(
    request: Request, list_id: ListId, entry_id: EntryId, lists: ListsDep, runtime: RuntimeDep
) -> CorrectionOut:
    body = await _json(request, EntryPatchIn)
    return await run_in_threadpool(_correct, runtime, lists, list_id, entry_id, body)


def _disposition(ascii_name: str, utf8_name: str) -> str:
    """attachment, with an ASCII filename and the list's own spelling as filename* (RFC 6266)."""
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(utf8_name)}"


@router.get(
    "/v1/lists/{list_id}/export",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}, "application/json": {}}, "description": "The file"},
        400: {"model": ErrorOut, "description": "Unknown format (the message lists them)"},
        **_ERRORS,
    },
    dependencies=[ReadAccess],
    summary="A scan list as a file, with a quantity per card",
)
def export_list(
    list_id: ListId,
    lists: ListsDep,
    format: Annotated[str, Query(description=f"One of: {', '.join(FORMATS)}")] = "csv",
) -> Response:
    scan = lists.store.get(list_id)
    out = export(scan, lists.store.entries(list_id), format)
    return Response(
        out.data,
        media_type=out.media_type,
        headers={"Content-Disposition": _disposition(out.filename, filename(scan, format, True))},
    )


@router.get(
    "/v1/lists/{list_id}/entries/{entry_id}/thumb.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG"}, **_ERRORS},
    dependencies=[ReadAccess],
    summary="An entry's thumbnail (upright card crop)",
)
def entry_thumb(list_id: ListId, entry_id: EntryId, lists: ListsDep) -> Response:
    data = lists.store.image(list_id, entry_id, "thumb")
    if data is None:
        raise NoThumbnailError(f"entry {entry_id} has no thumbnail")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
