"""The list writer thread: crops, JPEG encoding and SQLite commits, off the live loop.

The live loop hands operations over with `submit`, which never blocks. Past `max_pending`
waiting operations new entries lose their images (never themselves), so a stalled disk cannot
grow memory by a frame per entry. A failed commit is retried with backoff until it succeeds or
the writer is closed; `flush` waits for what was submitted so far (stop, tests, shutdown).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from edge.lists.recorder import Insert, Op, Retag
from edge.lists.store import CardFields, ListStore, NewEntry
from edge.recognize.rectify import CARD_ASPECT, order_corners, side_lengths, warp_card
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

THUMB_W = 120  # px; the web page's list thumbnails
CROP_MAX_W = 320  # px; the crop kept for feedback and teaching, at most this wide
CROP_MIN_W = 96
JPEG_QUALITY = 85
BATCH = 64

CardLookup = Callable[[str], CardFields | None]


def encode_jpeg(image: ImageRGB, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())


def decode_jpeg(data: bytes) -> ImageRGB:
    """One of our own JPEGs back to RGB (ValueError when it does not decode)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("stored JPEG does not decode")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def card_images(image: ImageRGB, polygon: Sequence[Sequence[float]]) -> tuple[bytes, bytes]:
    """(thumbnail, crop) JPEGs of the card under `polygon`, upright portrait, the crop at the
    card's own resolution (bounded), the thumbnail THUMB_W wide."""
    corners = order_corners(np.asarray(polygon, dtype=np.float32).reshape(4, 2))
    short, _ = side_lengths(corners)
    w = int(min(CROP_MAX_W, max(CROP_MIN_W, round(short))))
    h = round(w / CARD_ASPECT)
    crop = warp_card(image, corners, h, w)
    thumb_h = round(THUMB_W / CARD_ASPECT)
    thumb = cv2.resize(crop, (THUMB_W, thumb_h), interpolation=cv2.INTER_AREA)
    return encode_jpeg(np.ascontiguousarray(thumb), 80), encode_jpeg(crop)


class ListWriter:
    """One daemon thread applying recorder operations to the store, in submission order."""

    def __init__(self, store: ListStore, lookup: CardLookup, *, max_pending: int = 512) -> None:
        self.store = store
        self.lookup = lookup
        self.max_pending = max_pending
        self._queue: queue.Queue[Op] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self.written = 0
        self.failures = 0
        self.imageless = 0  # entries written without images (backlog or a bad polygon)
        self._thread = threading.Thread(target=self._main, name="lists-writer", daemon=True)
        self._thread.start()

    def submit(self, ops: Sequence[Op]) -> None:
        """Queue operations; never blocks the caller."""
        with self._cond:
            backlog = self._pending
            self._pending += len(ops)
        for op in ops:
            if isinstance(op, Insert) and backlog >= self.max_pending and op.image is not None:
                op = dataclasses.replace(op, image=None)
            self._queue.put(op)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (within `timeout`), then stop the thread."""
        if not self.flush(timeout):
            logger.error("scan lists: %d operation(s) not written at shutdown", self.pending)
        self._closing.set()
        self._thread.join(timeout=2.0)

    def _main(self) -> None:
        while not self._closing.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._apply_with_retry(batch)
            with self._cond:
                self._pending -= len(batch)
                self._cond.notify_all()

    def _apply_with_retry(self, batch: list[Op]) -> None:
        backoff = 0.2
        while True:
            try:
                self._apply(batch)
                return
            except (sqlite3.Error, OSError) as e:
                self.failures += 1
                logger.error("scan lists: writing %d operation(s) failed: %s", len(batch), e)
                if self._closing.is_set():
                    return
                self._closing.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _apply(self, batch: list[Op]) -> None:
        inserts: list[tuple[NewEntry, bytes | None, bytes | None]] = []
        for op in batch:
            if isinstance(op, Insert):
                inserts.append(self._prepare(op))
                continue
            if inserts:
                self.store.add_entries(inserts)
                self.written += len(inserts)
                inserts = []
            self._retag(op)
        if inserts:
            self.store.add_entries(inserts)
            self.written += len(inserts)

    def _fields(self, card_id: str, names: tuple[str | None, str | None, str | None]) -> CardFields:
        try:
            found = self.lookup(card_id)
        except Exception:
            logger.exception("scan lists: catalogue look-up of %s failed", card_id)
            found = None
        if found is not None:
            return found
        name, set_name, number = names
        return CardFields(card_id, name or "", "", set_name or "", number or "")

    def _prepare(self, op: Insert) -> tuple[NewEntry, bytes | None, bytes | None]:
        entry = dataclasses.replace(op.entry, card=self._fields(op.entry.card.card_id, op.names))
        thumb = crop = None
        if op.image is not None:
            try:
                thumb, crop = card_images(op.image, entry.polygon)
            except (cv2.error, ValueError) as e:
                logger.warning("scan lists: no crop for entry %d: %s", entry.entry_id, e)
        if thumb is None:
            self.imageless += 1
        return entry, thumb, crop

    def _retag(self, op: Retag) -> None:
        card = self._fields(op.card_id, (None, None, None))
        self.store.retag(op.entry_id, card, op.confidence, op.score, by_person=False)
