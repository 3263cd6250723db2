"""The live scene: /v1/scene (cached JSON bytes), /v1/events (SSE), /v1/frame.jpg, /v1/stream.mjpg."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from edge.api.deps import ReadAccess, RuntimeDep
from edge.api.schemas import ErrorOut, SceneOut
from edge.runtime import NoFrameError, Runtime

logger = logging.getLogger(__name__)

router = APIRouter(tags=["scene"], dependencies=[ReadAccess])

KEEPALIVE_S = 15.0
BOUNDARY = "frame"


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


@router.get(
    "/v1/frame.jpg",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "Latest annotated frame"},
        404: {"model": ErrorOut, "description": "No live frame (no camera, or none yet)"},
    },
    summary="Latest annotated camera frame",
)
async def frame_jpg(runtime: RuntimeDep) -> Response:
    _, jpeg = await run_in_threadpool(runtime.frame_jpeg)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _mjpeg(
    runtime: Runtime, max_frames: int | None, max_fps: float, annotate: bool
) -> AsyncIterator[bytes]:
    last, sent = -1, 0
    while max_frames is None or sent < max_frames:
        if runtime.frame_version != last:
            try:
                last, jpeg = await run_in_threadpool(runtime.frame_jpeg, annotate)
            except NoFrameError:
                await asyncio.sleep(0.2)
                continue
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
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
