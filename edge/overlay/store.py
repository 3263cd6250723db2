"""Teach on the spot: card views taught on this device (the overlay), verified beside the bundle's
own references, so the next sighting of a corrected card is right without a new bundle.

How to teach (a route, the scan lists, a script), with the service's edge.live.runtime.Runtime::

    overlay = runtime.overlay            # OverlayStore; None when the state directory is read-only
    entry = overlay.teach(card_id, crop_rgb, source="list:<list_id>/<entry_id>")
    entry = overlay.teach_from_frame(card_id, frame_rgb, corners, source=...)  # frame + 4 corners

`crop_rgb` is the card upright (H x W x 3 uint8 RGB, any size; the larger the better, the
feature canvas is 336 x 240); `corners` are 4 x 2 px clockwise from the card's top-left, as
/v1/identify reports polygons. Typed errors: UnknownCardError (422 card_not_in_catalogue),
TeachNoFeaturesError (422 teach_no_features: blurred, blank, or not the card),
OverlayUnsupportedError (409: the bundle has no reference features), OverlayFullError (409),
BadImageError (400), NotReadyError (503). Blocking (embeds and extracts features, ~10-50 ms):
call it from a worker thread.

On disk, `<state_dir>/overlay/`: overlay.json lists the views (card, time, the bundle and
catalogue fingerprint each was taught under, source); views/<id>.jpg is the rectified crop on the
feature canvas; views/<id>.npz its embeddings, features and thumbnail for the bundle named inside.
When a bundle becomes current (start-up, hot swap, rollback: Runtime.swap calls `attach`):
- same catalogue fingerprint, other bundle (a new embedder or extractor): the views are kept and
  re-embedded and re-extracted from their JPEGs for it;
- another catalogue: the overlay is dropped, moved aside whole to
  `overlay-dropped/<UTC time>-<old fingerprint>/` (a warning says so), kept for retraining.
A corrupt overlay.json is moved aside (`overlay.json.corrupt-<time>`) with a warning; a view whose
files cannot be read is skipped with a warning. Neither stops the service.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import BadImageError, EdgeError, NotFoundError
from edge.feedback import UnknownCardError
from edge.overlay.files import INDEX_NAME, OverlayEntry, read_index, write_index
from edge.overlay.prepare import (
    OverlayError,
    OverlayHost,
    OverlayUnsupportedError,
    TeachNoFeaturesError,
    align_to_scan,
    canvas_crop,
    card_corners,
    catalogue_fingerprint,
    load_prepared,
    prepare_view,
    save_prepared,
    template_sample,
)
from edge.recognize.features import Features
from edge.recognize.taught import OverlaySnapshot, PreparedView
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

__all__ = [
    "OverlayEntry", "OverlayError", "OverlayFullError", "OverlayStore", "OverlayUnsupportedError",
    "OverlayViewNotFoundError", "TeachNoFeaturesError", "UnknownCardError",
]  # fmt: skip

OVERLAY_DIR = "overlay"
DROPPED_DIR = "overlay-dropped"
MAX_VIEWS = 2000  # the nearest-view search is one matrix product; beyond this, build a bundle
MIN_TAUGHT_FEATURES = (
    24  # as edge.recognize.verify_stage.MIN_QUERY_FEATURES: fewer cannot verify anything
)

Lease = Callable[[], AbstractContextManager[Any]]


class OverlayFullError(OverlayError):
    code = "overlay_full"
    http_status = 409


class OverlayViewNotFoundError(NotFoundError):
    code = "overlay_view_not_found"


@dataclass(frozen=True, slots=True)
class PendingView:
    """A view prepared and checked, not yet stored (see OverlayStore.prepare / commit)."""

    entry: OverlayEntry
    canvas: ImageRGB
    view: PreparedView
    host: OverlayHost


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class OverlayStore:
    """The overlay under `<state_dir>/overlay/`; thread-safe (one lock around every change)."""

    def __init__(self, state_dir: Path, lease: Lease | None = None) -> None:
        """`lease`: the runtime's lease() (the current recognizer, kept open while teaching)."""
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / OVERLAY_DIR
        self._lease = lease
        self._lock = threading.RLock()
        self._entries: list[OverlayEntry] | None = None  # read on first use
        self._catalogue: str | None = None  # fingerprint the views belong to
        self._host: OverlayHost | None = None  # the last bundle attached (the current one)
        self._fingerprints: dict[str, str] = {}  # bundle id -> catalogue fingerprint
        self._templates: dict[str, list[tuple[str, Features]]] = {}

    # --- reading ----------------------------------------------------------------------------

    def entries(self) -> list[OverlayEntry]:
        """Every taught view, oldest first."""
        with self._lock:
            return list(self._load())

    def status(self) -> dict[str, Any]:
        entries = self.entries()
        return {
            "views": len(entries),
            "cards": len({e.card_id for e in entries}),
            "catalogue": self._catalogue,
        }

    def thumbnail_jpeg(self, view_id: str) -> bytes | None:
        """The view's crop as a small JPEG (for listings), or None when unreadable."""
        bgr = cv2.imread(str(self._jpg(view_id)), cv2.IMREAD_COLOR)
        if bgr is None:
            return None
        small = cv2.resize(bgr, (80, 112), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
        return buf.tobytes() if ok else None

    def crop(self, view_id: str) -> ImageRGB | None:
        """A view's stored crop (RGB), or None when unreadable."""
        bgr = cv2.imread(str(self._jpg(view_id)), cv2.IMREAD_COLOR)
        return None if bgr is None else np.ascontiguousarray(bgr[..., ::-1])

    # --- teaching -----------------------------------------------------------------------------

    def teach(
        self, card_id: str, crop_rgb: ImageRGB, *, source: str = "api",
        feedback_id: str | None = None,
    ) -> OverlayEntry:  # fmt: skip
        """Add `crop_rgb` (the card upright) as a view of `card_id` for the current bundle."""
        with self._current() as host:
            return self.commit(self.prepare(host, card_id, crop_rgb), source, feedback_id)

    def teach_from_frame(
        self, card_id: str, image: ImageRGB, corners: Any, *, source: str = "api",
        feedback_id: str | None = None,
    ) -> OverlayEntry:  # fmt: skip
        """Add the card at `corners` (4 x 2 px, clockwise from its top-left) of `image`."""
        with self._current() as host:
            pending = self.prepare(host, card_id, image, corners)
            return self.commit(pending, source, feedback_id)

    def _current(self) -> AbstractContextManager[Any]:
        if self._lease is None:
            raise OverlayUnsupportedError("the overlay is not attached to a running service")
        return self._lease()

    def prepare(self, host: Any, card_id: str, image: ImageRGB, corners: Any = None) -> PendingView:
        """Every check and the computation, nothing stored: the feedback route stores its
        correction only once the view is known to be teachable, then calls `commit`."""
        if not isinstance(host, OverlayHost):
            raise OverlayUnsupportedError("the serving recognizer cannot take taught views")
        if host.catalogue.get(card_id) is None:
            raise UnknownCardError(
                f"card {card_id!r} is not in the catalogue of bundle {host.bundle_id}",
                "look it up with GET /v1/cards?q=",
            )
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            raise BadImageError("a taught crop must be an H x W x 3 uint8 RGB image")
        if image.shape[2] != 3 or min(image.shape[:2]) < 8:
            raise BadImageError(f"a taught crop must be H x W x 3 RGB, got {image.shape}")
        refs = host.reference_features
        if refs is None:
            raise OverlayUnsupportedError(
                f"bundle {host.bundle_id} has no reference features: a taught view would have "
                "nothing to be verified by", "serve a bundle built with verification features"
            )  # fmt: skip
        with self._lock:
            if len(self._load()) >= MAX_VIEWS:
                raise OverlayFullError(
                    f"the overlay holds {MAX_VIEWS} views", "clear it (DELETE /v1/overlay)"
                )
            template = self._template(host)
            fingerprint = self._fingerprint(host)
        quad = card_corners(corners) if corners is not None else None
        canvas = align_to_scan(canvas_crop(image, refs.spec, quad), refs, card_id)
        view_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        view = prepare_view(host, view_id, card_id, canvas, template)
        if len(view.features) < MIN_TAUGHT_FEATURES:
            raise TeachNoFeaturesError(
                f"the crop has {len(view.features)} distinctive local features, "
                f"{MIN_TAUGHT_FEATURES} are needed to teach it",
                "send a sharper view without glare, with the polygon on the card's corners",
            )
        entry = OverlayEntry(view_id, card_id, _now(), host.bundle_id, fingerprint)
        return PendingView(entry, canvas, view, host)

    def commit(
        self, pending: PendingView, source: str = "api", feedback_id: str | None = None
    ) -> OverlayEntry:
        """Store a prepared view and serve it: the host's snapshot is replaced whole."""
        entry = OverlayEntry(
            **{**asdict(pending.entry), "source": source, "feedback_id": feedback_id}
        )
        with self._lock:
            entries = self._load()
            if self._catalogue not in (None, entry.catalogue):
                self._drop(f"a view of catalogue {entry.catalogue} was taught")
                entries = self._load()
            views = self.root / "views"
            views.mkdir(parents=True, exist_ok=True)
            bgr = np.ascontiguousarray(pending.canvas[..., ::-1])
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise EdgeError("JPEG encoding of a taught crop failed")
            tmp = self._jpg(entry.view_id).with_suffix(".jpg.tmp")
            tmp.write_bytes(buf.tobytes())
            tmp.replace(self._jpg(entry.view_id))
            save_prepared(self._npz(entry.view_id), pending.host.bundle_id, pending.view)
            self._catalogue = entry.catalogue
            self._write([*entries, entry])
            self._publish(pending.host, {entry.view_id: pending.view})
        logger.info("taught view %s of %s (%s)", entry.view_id, entry.card_id, source)
        return entry

    # --- removing -----------------------------------------------------------------------------

    def remove(self, view_id: str) -> OverlayEntry:
        """Forget one view (404 overlay_view_not_found when there is none)."""
        with self._lock:
            entries = self._load()
            found = [e for e in entries if e.view_id == view_id]
            if not found:
                raise OverlayViewNotFoundError(
                    f"no taught view {view_id!r}", "list them with GET /v1/overlay"
                )
            self._write([e for e in entries if e.view_id != view_id])
            for path in (self._jpg(view_id), self._npz(view_id)):
                path.unlink(missing_ok=True)
            self._publish(self._host)
        logger.info("taught view %s of %s removed", view_id, found[0].card_id)
        return found[0]

    def clear(self) -> list[OverlayEntry]:
        """Forget every view; returns the views forgotten."""
        with self._lock:
            entries = self._load()
            self._write([])
            for e in entries:
                for path in (self._jpg(e.view_id), self._npz(e.view_id)):
                    path.unlink(missing_ok=True)
            self._catalogue = None
            self._publish(self._host)
        logger.info("overlay cleared: %d taught view(s) removed", len(entries))
        return entries

    # --- bundles ------------------------------------------------------------------------------

    def attach(self, host: object) -> None:
        """Serve the overlay with `host`, the bundle about to become current: drops the
        overlay when its catalogue differs, re-prepares views taught under another bundle of
        the same catalogue. Never raises: a failure is logged and `host` serves no views."""
        if not isinstance(host, OverlayHost):
            logger.debug("recognizer %r takes no overlay", host)
            return
        try:
            with self._lock:
                entries = self._load()
                if entries:
                    fingerprint = self._fingerprint(host)
                    if self._catalogue != fingerprint:
                        self._drop(
                            f"bundle {host.bundle_id} recognises another catalogue "
                            f"({fingerprint}, the views were taught for {self._catalogue})"
                        )
                self._host = host
                self._publish(host)
        except (EdgeError, OSError) as e:
            logger.error("overlay not served with bundle %s: %s", host.bundle_id, e)

    def _publish(
        self, host: OverlayHost | None, fresh: dict[str, PreparedView] | None = None
    ) -> None:
        """Build the snapshot of every view for `host` and for the current bundle, swap it in."""
        for target in {id(h): h for h in (host, self._host) if h is not None}.values():
            refs = target.reference_features
            spec = refs.spec if refs is not None else None
            have = {v.view_id: v for v in target.overlay.views} | (
                fresh if target is host and fresh else {}
            )
            views = [v for e in self._load() if (v := self._prepared(target, e, have)) is not None]
            target.use_overlay(OverlaySnapshot(target.bundle_id, spec, views))

    def _prepared(
        self, host: OverlayHost, entry: OverlayEntry, have: dict[str, PreparedView]
    ) -> PreparedView | None:
        """A view ready for `host`: already served, saved for its bundle, or rebuilt from the
        JPEG (and saved)."""
        if entry.view_id in have:
            return have[entry.view_id]
        saved = load_prepared(
            self._npz(entry.view_id), host.bundle_id, entry.view_id, entry.card_id
        )
        if saved is not None:
            return saved
        crop = self.crop(entry.view_id)
        if crop is None or host.reference_features is None:
            logger.warning(
                "taught view %s (%s): crop unreadable, skipped", entry.view_id, entry.card_id
            )
            return None
        try:
            view = prepare_view(host, entry.view_id, entry.card_id, crop, self._template(host))
            save_prepared(self._npz(entry.view_id), host.bundle_id, view)
        except (EdgeError, OSError) as e:
            logger.warning(
                "taught view %s not prepared for %s: %s", entry.view_id, host.bundle_id, e
            )
            return None
        logger.info("taught view %s re-prepared for bundle %s", entry.view_id, host.bundle_id)
        return view

    def _template(self, host: OverlayHost) -> list[tuple[str, Features]]:
        if host.bundle_id not in self._templates:
            self._templates[host.bundle_id] = template_sample(host)
        return self._templates[host.bundle_id]

    def _fingerprint(self, host: OverlayHost) -> str:
        if host.bundle_id not in self._fingerprints:
            self._fingerprints[host.bundle_id] = catalogue_fingerprint(host.catalogue)
        return self._fingerprints[host.bundle_id]

    def _drop(self, why: str) -> None:
        """Move the whole overlay aside (kept for retraining, never served again)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.state_dir / DROPPED_DIR / f"{stamp}-{self._catalogue or 'unknown'}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        n = len(self._entries or [])
        if self.root.exists():
            os.rename(self.root, aside)
        self._entries, self._catalogue = [], None
        logger.warning("overlay dropped (%d taught view(s), kept aside in %s/%s): %s",
                       n, DROPPED_DIR, aside.name, why)  # fmt: skip

    # --- files --------------------------------------------------------------------------------

    def _jpg(self, view_id: str) -> Path:
        return self.root / "views" / f"{view_id}.jpg"

    def _npz(self, view_id: str) -> Path:
        return self.root / "views" / f"{view_id}.npz"

    def _load(self) -> list[OverlayEntry]:
        """overlay.json's views (read once); a corrupt file is moved aside with a warning."""
        if self._entries is not None:
            return self._entries
        path = self.root / INDEX_NAME
        self._entries = []
        if not path.is_file():
            return self._entries
        try:
            views, catalogue = read_index(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            aside = path.with_name(f"{INDEX_NAME}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ')}")
            logger.warning("overlay index %s is unreadable (%s): ignored, moved to %s",
                           INDEX_NAME, e, aside.name)  # fmt: skip
            with suppress(OSError):
                path.rename(aside)
            return self._entries
        self._entries, self._catalogue = views, catalogue
        return self._entries

    def _write(self, entries: list[OverlayEntry]) -> None:
        """overlay.json written whole to a temporary file, synced, then renamed over."""
        write_index(self.root, entries, self._catalogue if entries else None)
        self._entries = entries
