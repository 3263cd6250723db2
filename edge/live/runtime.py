"""Runtime: the process-wide holder of the current Recognizer, the live scene and its events.

`lease()` hands out the current recognizer and keeps it alive until the lease ends, so a bundle
swap never pulls a model from under in-flight work; the old recognizer is closed once its last
lease drains. The live loop publishes each processed frame's scene here; the scene JSON bytes are
built once per frame so GET /v1/scene is a memory copy, and the annotated JPEG is encoded lazily,
once per frame, however many preview clients watch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import Manifest
from edge.config import Settings
from edge.errors import EdgeError
from edge.live.scene import EventHub, SceneState, annotate
from edge.metrics import Metrics
from edge.types import Candidate, CardCrop, CardMatch, Frame, ImageRGB, Match, OrientedBox

logger = logging.getLogger(__name__)


class NotReadyError(EdgeError):
    """No bundle is loaded (yet), so nothing can be recognised."""

    code = "not_ready"
    http_status = 503


class NoFrameError(EdgeError):
    """The live loop has not produced a frame (no camera configured, or not yet): no such
    resource (404), not a server fault."""

    code = "no_frame"
    http_status = 404


class CardInfoLike(Protocol):
    @property
    def card_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def set_id(self) -> str: ...
    @property
    def set_name(self) -> str: ...
    @property
    def number(self) -> str: ...
    @property
    def rarity(self) -> str: ...


class SceneObserver(Protocol):
    """Told of every published scene and of bundle swaps (the scan lists, edge.lists)."""

    def observe(self, frame: Frame, scene: SceneState, /) -> None: ...
    def on_swap(self) -> None: ...


class LiveLike(Protocol):
    """The camera loop as the runtime drives it (edge.live.loop.LiveLoop): the loop depends on
    the runtime, never the other way round."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def on_swap(self) -> None: ...
    def health(self) -> tuple[bool, str]: ...
    def alive(self) -> bool: ...
    def status(self) -> dict[str, Any]: ...


class OverlayLike(Protocol):
    """The views taught on the device as the runtime keeps them (edge.overlay.store.OverlayStore):
    attached to every recognizer swapped in."""

    def attach(self, host: object, /) -> None: ...
    def status(self) -> dict[str, Any]: ...


class CatalogueLike(Protocol):
    def get(self, card_id: str, /) -> CardInfoLike | None: ...
    def search(self, q: str, limit: int, /) -> Sequence[CardInfoLike]: ...


class IdentifyResultLike(Protocol):
    @property
    def bundle_id(self) -> str: ...
    @property
    def cards(self) -> Sequence[CardMatch]: ...
    @property
    def timings(self) -> Any: ...


class RecognizerLike(Protocol):
    """What the service needs of edge.recognize.recognizer.Recognizer (structural, so tests can double it)."""

    @property
    def bundle_id(self) -> str: ...
    @property
    def bundle_dir(self) -> Path: ...
    @property
    def manifest(self) -> Manifest: ...
    @property
    def catalogue(self) -> CatalogueLike: ...
    @property
    def backends(self) -> Mapping[str, str]: ...
    def detect(self, image: ImageRGB, /) -> list[OrientedBox]: ...
    def crops(self, image: ImageRGB, boxes: list[OrientedBox], /) -> list[CardCrop]: ...
    def embed(self, crops: list[CardCrop], /) -> npt.NDArray[np.float32]: ...
    def match(
        self, vectors: npt.NDArray[np.float32], /
    ) -> list[tuple[Match, tuple[Candidate, ...]]]: ...
    def recognise(
        self, image: ImageRGB, boxes: list[OrientedBox], /
    ) -> tuple[list[CardMatch], tuple[float, float, float, float, float]]: ...
    def verdicts(
        self, image: ImageRGB, boxes: list[OrientedBox], /
    ) -> tuple[list[CardMatch | None], tuple[float, float, float, float, float]]: ...
    def identify(self, image: ImageRGB, /) -> IdentifyResultLike: ...
    def describe(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class _Slot:
    recognizer: RecognizerLike
    leases: int = 0
    retired: bool = False


class Runtime:
    """The current recognizer, the live loop attached to it, and what the loop last saw."""

    def __init__(
        self,
        settings: Settings,
        recognizer: RecognizerLike | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.events = EventHub()
        self.live: LiveLike | None = None
        self.overlay: OverlayLike | None = None  # views taught on the device (edge.overlay.store)
        self.lists: SceneObserver | None = None  # must return at once: it runs on the loop
        self._lock = threading.Condition()
        self._slot = _Slot(recognizer) if recognizer is not None else None
        self._scene_lock = threading.Lock()
        self._scene = SceneState(self.current_bundle_id, None, None, 0, 0)
        self._scene_json = self._scene.to_json()
        self._frame: Frame | None = None
        self._frame_version = 0
        self._jpeg: dict[bool, tuple[int, bytes]] = {}
        self._jpeg_lock = threading.Lock()

    # -- recognizer ---------------------------------------------------------------------------
    @property
    def current_bundle_id(self) -> str | None:
        slot = self._slot
        return slot.recognizer.bundle_id if slot else None

    def peek(self) -> RecognizerLike | None:
        """The current recognizer for read-only facts (ids, descriptions); use lease() to run it."""
        slot = self._slot
        return slot.recognizer if slot else None

    @contextmanager
    def lease(self) -> Iterator[RecognizerLike]:
        """The current recognizer, kept open until the block ends even if a swap happens."""
        with self._lock:
            slot = self._slot
            if slot is None:
                raise NotReadyError("no bundle loaded", "install or activate a bundle")
            slot.leases += 1
        try:
            yield slot.recognizer
        finally:
            with self._lock:
                slot.leases -= 1
                close_now = slot.retired and slot.leases == 0
            if close_now:
                self._close_recognizer(slot.recognizer)

    def attach_overlay(self, overlay: OverlayLike) -> None:
        """Serve `overlay`'s taught views with the current bundle and each one swapped in."""
        self.overlay = overlay
        rec = self.peek()
        if rec is not None:
            overlay.attach(rec)

    def swap(self, new: RecognizerLike) -> None:
        """Make `new` current atomically; the old one closes when its leases drain. The
        overlay is attached to `new` first (kept, re-prepared, or dropped: edge.overlay.store)."""
        if self.overlay is not None:
            self.overlay.attach(new)
        with self._lock:
            old, self._slot = self._slot, _Slot(new)
            close_now = old is not None and old.leases == 0
            if old is not None:
                old.retired = True
        logger.info(
            "bundle swapped: %s -> %s", old.recognizer.bundle_id if old else None, new.bundle_id
        )
        if old is not None and close_now:
            self._close_recognizer(old.recognizer)
        if self.live is not None:
            self.live.on_swap()
        if self.lists is not None:
            self.lists.on_swap()

    @staticmethod
    def _close_recognizer(recognizer: RecognizerLike) -> None:
        try:
            recognizer.close()
        except Exception:
            logger.exception("closing recognizer %s failed", recognizer.bundle_id)

    # -- live loop ----------------------------------------------------------------------------
    def attach_live(self, loop: LiveLike) -> None:
        self.live = loop

    def start(self) -> None:
        if self.live is not None:
            self.live.start()

    def stop(self) -> None:
        """Stop the live loop (the app's shutdown); the recognizer stays loaded."""
        if self.live is not None:
            self.live.stop()

    def close(self) -> None:
        """Stop the loop and close the current recognizer (process shutdown)."""
        self.stop()
        with self._lock:
            slot, self._slot = self._slot, None
        if slot is not None:
            slot.retired = True
            if slot.leases == 0:
                self._close_recognizer(slot.recognizer)

    def health(self) -> tuple[bool, dict[str, str]]:
        """(ready, check -> "ok..." or the reason it is not)."""
        checks: dict[str, str] = {}
        rec = self.peek()
        checks["bundle"] = f"ok: {rec.bundle_id}" if rec else "no bundle loaded"
        ready = rec is not None
        if self.live is None:
            checks["camera"] = "ok: no live source configured"
        else:
            live_ok, reason = self.live.health()
            checks["camera"] = reason
            ready = ready and live_ok
        return ready, checks

    def alive(self) -> bool:
        """For the systemd watchdog: loaded and no thread of the loop hung."""
        return self.peek() is not None and (self.live is None or self.live.alive())

    # -- scene --------------------------------------------------------------------------------
    def publish(self, frame: Frame, scene: SceneState) -> None:
        """Called by the live loop once per processed frame."""
        data = scene.to_json()
        with self._scene_lock:
            self._scene, self._scene_json = scene, data
            self._frame = frame
            self._frame_version += 1
        if self.lists is not None:
            self.lists.observe(frame, scene)

    def scene(self) -> SceneState:
        return self._scene

    def scene_json(self) -> bytes:
        return self._scene_json

    def latest_frame(self) -> Frame | None:
        return self._frame

    @property
    def frame_version(self) -> int:
        return self._frame_version

    def frame_jpeg(self, annotated: bool = True, quality: int = 80) -> tuple[int, bytes]:
        """(version, JPEG) of the latest frame, annotated or raw, encoded at most once per frame."""
        with self._scene_lock:
            frame, scene, version = self._frame, self._scene, self._frame_version
        if frame is None:
            raise NoFrameError("no live frame yet", "configure a source (--source) and wait")
        with self._jpeg_lock:
            cached = self._jpeg.get(annotated)
            if cached is not None and cached[0] == version:
                return cached
            image = annotate(frame.image, scene) if annotated else frame.image
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise EdgeError("JPEG encoding of the live frame failed")
            self._jpeg[annotated] = (version, buf.tobytes())
            return self._jpeg[annotated]
