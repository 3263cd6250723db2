"""The live scene: /v1/scene (cached JSON bytes), /v1/events (SSE), /v1/frame.jpg, /v1/stream.mjpg,
and /v1/snapshot: one raw frame together with the scene of that same frame, for clients that
draw their own overlays (the web page) and must not put one frame's polygons on another's image.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from edge.api.deps import ReadAccess, RuntimeDep
from edge.api.schemas import ErrorOut, SceneOut
from edge.live.runtime import NoFrameError, Runtime

logger = logging.getLogger(__name__)

router = APIRouter(tags=["scene"], dependencies=[ReadAccess])

KEEPALIVE_S = 15.0
BOUNDARY = "frame"
FRAME_ID_HEADER = "X-Frame-Id"
PAIR_ATTEMPTS = 8  # a new frame landing between the reads: read again (each try is microseconds)


class SnapshotOut(BaseModel):
    frame_id: int = Field(description="The frame's id; equal to scene.frame_id.")
    jpeg: str = Field(description="The raw frame (no drawing on it) as base64 JPEG.")
    scene: SceneOut = Field(description="/v1/scene as it was for this frame.")


@router.get(
    "/v1/scene",
    response_model=None,
    responses={200: {"model": SceneOut, "description": "Cards tracked in the latest frame"}},
    summary="The live camera's current cards",
)
async def scene(runtime: RuntimeDep) -> Response:
    # Bytes built once per frame by the loop: this endpoint is a memory copy.
    return Response(runtime.scene_json(), media_type="application/json")


async def _event_stream(
    runtime: Runtime, max_events: int | None, timeout_s: float | None
) -> AsyncIterator[str]:
    sub = runtime.events.subscribe()
    deadline = time.monotonic() + timeout_s if timeout_s else None
    sent = 0
    try:
        yield ": connected\n\n"
        while max_events is None or sent < max_events:
            wait = (
                KEEPALIVE_S if deadline is None else min(KEEPALIVE_S, deadline - time.monotonic())
            )
            if wait <= 0:
                return
            try:
                item = await asyncio.wait_for(sub.queue.get(), timeout=wait)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            sent += 1
            yield f"id: {sent}\nevent: {item['event']}\ndata: {json.dumps(item)}\n\n"
    finally:
        runtime.events.unsubscribe(sub)


@router.get(
    "/v1/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "card events"}},
    summary="Server-sent events: card_appeared, card_identified, card_left",
)
async def events(
    runtime: RuntimeDep,
    max_events: Annotated[int | None, Query(ge=1, le=100_000, description="Stop after N")] = None,
    timeout_s: Annotated[float | None, Query(gt=0, le=86_400, description="Stop after")] = None,
) -> StreamingResponse:
    return StreamingResponse(
        _event_stream(runtime, max_events, timeout_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _frame_with_id(runtime: Runtime, annotate: bool) -> tuple[int, bytes]:
    """(frame_id, JPEG) of the latest frame. The runtime's frames only ever move forward, so the
    same frame object before and after the encode means the JPEG is that frame's."""
    for _ in range(PAIR_ATTEMPTS):
        before = runtime.latest_frame()
        _, jpeg = runtime.frame_jpeg(annotate)
        if before is not None and runtime.latest_frame() is before:
            return before.frame_id, jpeg
    raise NoFrameError("the live frame changed on every read", "retry the request")


def _snapshot(runtime: Runtime) -> bytes:
    """{"frame_id", "jpeg" (base64 of the raw frame), "scene" (that frame's /v1/scene)}."""
    for _ in range(PAIR_ATTEMPTS):
        frame_id, jpeg = _frame_with_id(runtime, False)
        scene_bytes = runtime.scene_json()
        if json.loads(scene_bytes).get("frame_id") == frame_id:
            head = f'{{"frame_id":{frame_id},"jpeg":"'.encode()
            return head + base64.b64encode(jpeg) + b'","scene":' + scene_bytes + b"}"
    raise NoFrameError("the live frame changed on every read", "retry the request")


@router.get(
    "/v1/frame.jpg",
    response_class=Response,
    responses={
        200: {
            "content": {"image/jpeg": {}},
            "description": f"Latest frame; its frame id in the {FRAME_ID_HEADER} header",
        },
        404: {"model": ErrorOut, "description": "No live frame (no camera, or none yet)"},
    },
    summary="Latest camera frame, annotated unless annotate=false",
)
async def frame_jpg(
    runtime: RuntimeDep,
    annotate: Annotated[bool, Query(description="Draw polygons and names")] = True,
) -> Response:
    frame_id, jpeg = await run_in_threadpool(_frame_with_id, runtime, annotate)
    headers = {"Cache-Control": "no-store", FRAME_ID_HEADER: str(frame_id)}
    return Response(jpeg, media_type="image/jpeg", headers=headers)


@router.get(
    "/v1/snapshot",
    response_model=None,
    responses={
        200: {"model": SnapshotOut, "description": "The latest raw frame and its own scene"},
        404: {"model": ErrorOut, "description": "No live frame (no camera, or none yet)"},
    },
    summary="The latest raw frame (JPEG, base64) with the scene of that same frame",
)
async def snapshot(runtime: RuntimeDep) -> Response:
    body = await run_in_threadpool(_snapshot, runtime)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


async def _mjpeg(
    runtime: Runtime, max_frames: int | None, max_fps: float, annotate: bool
) -> AsyncIterator[bytes]:
    last, sent = -1, 0
    while max_frames is None or sent < max_frames:
        if runtime.frame_version != last:
            try:
                last = runtime.frame_version
                frame_id, jpeg = await run_in_threadpool(_frame_with_id, runtime, annotate)
            except NoFrameError:
                await asyncio.sleep(0.2)
                continue
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                f"{FRAME_ID_HEADER}: {frame_id}\r\n\r\n"
            )
            yield head.encode() + jpeg + b"\r\n"
            sent += 1
        await asyncio.sleep(1.0 / max_fps)


@router.get(
    "/v1/stream.mjpg",
    response_class=StreamingResponse,
    responses={200: {"content": {"multipart/x-mixed-replace": {}}, "description": "MJPEG"}},
    summary="MJPEG preview of the annotated frames",
)
async def stream_mjpg(
    runtime: RuntimeDep,
    max_frames: Annotated[int | None, Query(ge=1, le=1_000_000, description="Stop after N")] = None,
    fps: Annotated[float, Query(gt=0, le=30, description="Most frames per second")] = 10.0,
    annotate: Annotated[bool, Query(description="Draw polygons and names")] = True,
) -> StreamingResponse:
    return StreamingResponse(
        _mjpeg(runtime, max_frames, fps, annotate),
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store"},
    )
