"""Corrections sent to a device (POST /v1/feedback), kept under `<state_dir>/feedback/` for the
next bundle: `cardedge-train feedback export` turns the folder into training and reference data.

Layout, one folder per correction, renamed into place complete::

    <state_dir>/feedback/<feedback_id>/image.<jpg|png|webp|bmp|tiff>   the uploaded bytes as sent
    <state_dir>/feedback/<feedback_id>/meta.json                        FeedbackRecord below

The polygon is in the pixels of the upright image (EXIF orientation applied, as /v1/identify
reports polygons); no polygon means the image is a crop of the card itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

logger = logging.getLogger(__name__)

FEEDBACK_DIR = "feedback"
META_NAME = "meta.json"
SCHEMA_VERSION = 1
MAX_NOTE_CHARS = 2000
POLYGON_SLACK_PX = 1.0  # rounding of reported polygons; anything further out is refused
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tiff"}


class FeedbackError(EdgeError):
    """A correction that cannot be kept as sent."""

    code = "feedback_invalid"
    http_status = 422


class UnknownCardError(FeedbackError):
    code = "card_not_in_catalogue"


class PolygonError(FeedbackError):
    code = "bad_polygon"


class PolygonOutsideError(PolygonError):
    code = "polygon_outside_image"


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One stored correction (meta.json)."""

    feedback_id: str
    created: str  # ISO-8601 UTC
    bundle_id: str | None  # the bundle whose answer this corrects
    card_id: str | None  # the right card; None when not_a_card
    not_a_card: bool  # the detection was no card at all
    polygon: list[list[float]] | None  # 4 x [x, y] px in the upright image; None: a crop
    note: str | None
    image: str  # file name inside the record's folder
    width: int  # upright image, pixels
    height: int
    size_bytes: int
    sha256: str
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_polygon(text: str | None) -> list[list[float]] | None:
    """A JSON list of 4 [x, y] points, or None when absent/empty."""
    if text is None or not text.strip():
        return None
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as e:
        raise PolygonError(
            f"polygon is not JSON: {e}", "send e.g. [[0,0],[99,0],[99,139],[0,139]]"
        ) from e
    ok = (
        isinstance(raw, list)
        and len(raw) == 4
        and all(
            isinstance(p, list)
            and len(p) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
            for p in raw
        )
    )
    if not ok:
        raise PolygonError(
            "polygon must be 4 [x, y] points", "clockwise from the card's top-left, in pixels"
        )
    return [[float(x), float(y)] for x, y in raw]


def check_polygon_inside(polygon: Sequence[Sequence[float]], width: int, height: int) -> None:
    """Every corner within the image (plus rounding slack)."""
    s = POLYGON_SLACK_PX
    for x, y in polygon:
        if not (-s <= x <= width - 1 + s and -s <= y <= height - 1 + s):
            raise PolygonOutsideError(
                f"polygon point ({x:g}, {y:g}) lies outside the {width}x{height} image",
                "send the polygon in the uploaded image's pixels (as /v1/identify reports it)",
            )


def check_label(card_id: str | None, not_a_card: bool, note: str | None) -> None:
    """Exactly one of card_id and not_a_card; a note of bounded length."""
    if bool(card_id) == not_a_card:
        raise FeedbackError(
            "send either card_id (the right card) or not_a_card=true, not both or neither",
            "card_id must be in the served catalogue (GET /v1/cards?q=)",
        )
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise FeedbackError(f"note is longer than {MAX_NOTE_CHARS} characters")


class FeedbackStore:
    """Corrections under `<state_dir>/feedback/`: add one atomically, list them."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / FEEDBACK_DIR

    def add(
        self,
        data: bytes,
        fmt: str,
        *,
        width: int,
        height: int,
        bundle_id: str | None,
        card_id: str | None,
        not_a_card: bool,
        polygon: list[list[float]] | None,
        note: str | None,
    ) -> FeedbackRecord:
        """Write the image and its metadata to a temporary folder, then rename it into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        feedback_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        record = FeedbackRecord(
            feedback_id=feedback_id,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            bundle_id=bundle_id,
            card_id=card_id or None,
            not_a_card=not_a_card,
            polygon=polygon,
            note=note or None,
            image=f"image.{_EXTENSIONS.get(fmt, 'bin')}",
            width=width,
            height=height,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        tmp = self.root / f".tmp-{feedback_id}"
        try:
            tmp.mkdir()
            (tmp / record.image).write_bytes(data)
            (tmp / META_NAME).write_text(json.dumps(record.to_json(), indent=2), encoding="utf-8")
            os.rename(tmp, self.root / feedback_id)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("feedback %s stored (card %s)", feedback_id, record.card_id or "not a card")
        return record

    def list(self, limit: int | None = None) -> list[FeedbackRecord]:
        """Stored corrections, newest first."""
        return read_feedback(self.root, limit=limit)


def read_feedback(root: Path, *, limit: int | None = None) -> list[FeedbackRecord]:
    """The records of a feedback folder (a device's, or a copy of it), newest first; folders
    without a readable meta.json (a copy in progress) are skipped."""
    if not root.is_dir():
        return []
    out: list[FeedbackRecord] = []
    for path in sorted(root.iterdir(), reverse=True):
        meta = path / META_NAME
        if path.name.startswith(".") or not meta.is_file():
            continue
        try:
            raw = json.loads(meta.read_text(encoding="utf-8"))
            out.append(FeedbackRecord(**raw))
        except (OSError, ValueError, TypeError) as e:
            logger.warning("skipping feedback %s: %s", path.name, e)
            continue
        if limit is not None and len(out) >= limit:
            break
    return out
