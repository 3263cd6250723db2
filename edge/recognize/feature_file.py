"""The bundle's reference feature file, written at build and memory-mapped on the device.

The reference file (`features.bin`) holds every card's keypoints and descriptors in one
memory-mapped file, so a catalogue of 17,600 cards costs page cache, not resident memory:

    magic (8 bytes) | header length (uint32 LE) | header (JSON) | pad to 64
    offsets int64[cards + 1] | keypoints uint16[total, 2] | descriptors uint8[total, desc_bytes]
    | thumb offsets int64[cards + 1] | thumbnails (image bytes)
    | detail offsets int64[cards + 1] | details (image bytes)

Keypoints are stored in 1/`COORD_SCALE` pixel steps of the canvas; card i owns rows
offsets[i]:offsets[i+1]. Each section starts on a 64-byte boundary. A small colour thumbnail per
card lets verification check colours under the homography. A grey image at the canvas's own
resolution, for the cards that share their name with another (reprints hide among them), lets
same-art printings be told apart by the small print in which they differ (set symbol, number,
attack text): a thumbnail is too coarse for text. A card without one has an empty entry; a file
written before details existed has neither section and reads the same.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from edge.bundles.errors import BundleModelError
from edge.recognize.features import Features, FeatureSpec, descriptor_bytes
from edge.types import ImageRGB

MAGIC = b"CEFEAT01"
COORD_SCALE = 16  # keypoint coordinates in 1/16 px; uint16 holds canvases up to 4095 px
ALIGN = 64
# Decoded colour thumbnails kept per file (27 KB each at 112 x 80): the colour check and the
# reprint comparison ask for the same few cards' again and again, frame after frame.
THUMBNAIL_CACHE = 1024


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _blob_section(
    ids: Sequence[str], blobs: dict[str, bytes]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """Offsets (cards + 1) and the concatenated bytes of one blob per card (empty where none)."""
    row = [blobs.get(c, b"") for c in ids]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in row])]).astype(np.int64)
    return offsets, np.frombuffer(b"".join(row), np.uint8)


def write_reference_features(
    path: Path,
    spec: FeatureSpec,
    cards: Iterable[tuple[str, Features]],
    thumbnails: dict[str, bytes] | None = None,
    details: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Write every card's features (and its thumbnail and detail image, encoded image bytes,
    where it has them) to `path`; returns the header (counts, spec, sections)."""
    if spec.method == "sift":
        raise ValueError("the reference file stores binary (ORB) descriptors only")
    ids: list[str] = []
    pts: list[npt.NDArray[np.uint16]] = []
    descs: list[npt.NDArray[np.uint8]] = []
    limit = (np.iinfo(np.uint16).max) / COORD_SCALE
    for card_id, feats in cards:
        if card_id in ids:
            raise ValueError(f"duplicate card_id {card_id!r} in reference features")
        ids.append(card_id)
        q = np.clip(np.rint(feats.points * COORD_SCALE), 0, limit * COORD_SCALE)
        pts.append(q.astype(np.uint16))
        descs.append(np.asarray(feats.descriptors, np.uint8))
    counts = np.array([len(p) for p in pts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    width = descriptor_bytes(spec)
    kp_all = np.concatenate(pts) if total else np.zeros((0, 2), np.uint16)
    de_all = np.concatenate(descs) if total else np.zeros((0, width), np.uint8)
    th_offsets, th_all = _blob_section(ids, thumbnails or {})
    de_offsets, de_blobs = _blob_section(ids, details or {})
    arrays = (
        ("offsets", offsets), ("points", kp_all), ("descriptors", de_all),
        ("thumb_offsets", th_offsets), ("thumbs", th_all),
        ("detail_offsets", de_offsets), ("details", de_blobs),
    )  # fmt: skip
    header: dict[str, Any] = {
        "method": spec.method,
        "n_features": spec.n_features,
        "height": spec.height,
        "width": spec.width,
        "desc_bytes": width,
        "coord_scale": COORD_SCALE,
        "cards": ids,
        "total": total,
        "thumb_bytes": int(th_offsets[-1]),
        "detail_bytes": int(de_offsets[-1]),
    }
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    start = _aligned(len(MAGIC) + 4 + len(blob))
    sections = {}
    pos = start
    for name, arr in arrays:
        sections[name] = pos
        pos = _aligned(pos + arr.nbytes)
    header["sections"] = sections
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if len(MAGIC) + 4 + len(blob) > start:  # the section offsets made the header longer
        shift = _aligned(len(MAGIC) + 4 + len(blob)) - start
        header["sections"] = {k: v + shift for k, v in sections.items()}
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(MAGIC + struct.pack("<I", len(blob)) + blob)
        for name, arr in arrays:
            f.write(b"\0" * (header["sections"][name] - f.tell()))
            f.write(np.ascontiguousarray(arr).tobytes())
    tmp.replace(path)
    return header


class ReferenceFeatures:
    """The reference file, memory-mapped: card_id -> (points, descriptors) without copies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        header = self._read_header(path)
        self.spec = FeatureSpec(
            method=header["method"],
            n_features=int(header["n_features"]),
            height=int(header["height"]),
            width=int(header["width"]),
        )
        self.card_ids: list[str] = [str(c) for c in header["cards"]]
        self._row = {c: i for i, c in enumerate(self.card_ids)}
        if len(self._row) != len(self.card_ids):
            raise BundleModelError(f"{path.name}: duplicate card ids", "rebuild the bundle")
        n, total, width = len(self.card_ids), int(header["total"]), int(header["desc_bytes"])
        sec = header["sections"]
        size = path.stat().st_size
        ends = {
            "offsets": sec["offsets"] + 8 * (n + 1),
            "points": sec["points"] + 4 * total,
            "descriptors": sec["descriptors"] + width * total,
        }
        if any(end > size for end in ends.values()):
            raise BundleModelError(f"{path.name} is truncated", "rebuild or reinstall the bundle")
        self._offsets = np.memmap(path, np.int64, "r", sec["offsets"], (n + 1,))
        self._points = np.memmap(path, np.uint16, "r", sec["points"], (max(total, 1), 2))
        self._desc = np.memmap(path, np.uint8, "r", sec["descriptors"], (max(total, 1), width))
        offs = np.asarray(self._offsets)
        if offs[0] != 0 or offs[-1] != total or np.any(np.diff(offs) < 0):
            raise BundleModelError(f"{path.name}: corrupt offsets", "rebuild the bundle")
        self._thumbs = _Blobs.read(path, header, "thumb", n, "thumbnails")
        self._details = _Blobs.read(path, header, "detail", n, "details")
        self.total = total
        self._scale = float(header["coord_scale"])
        self._thumbnail = functools.lru_cache(maxsize=THUMBNAIL_CACHE)(self._decode_thumbnail)

    @staticmethod
    def _read_header(path: Path) -> dict[str, Any]:
        try:
            with path.open("rb") as f:
                head = f.read(len(MAGIC) + 4)
                if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
                    raise BundleModelError(f"{path.name} is not a feature file", "rebuild it")
                (length,) = struct.unpack("<I", head[len(MAGIC) :])
                header: dict[str, Any] = json.loads(f.read(length).decode("utf-8"))
            for key in ("method", "n_features", "height", "width", "cards", "total", "sections"):
                header[key]
            return header
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BundleModelError(
                f"{path.name} cannot be read: {e}", "rebuild or reinstall the bundle"
            ) from e

    def __len__(self) -> int:
        return len(self.card_ids)

    def __contains__(self, card_id: object) -> bool:
        return card_id in self._row

    def get(self, card_id: str) -> Features | None:
        """The card's reference features (views into the map), or None if it has none."""
        i = self._row.get(card_id)
        if i is None:
            return None
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        pts = np.asarray(self._points[a:b], dtype=np.float32) / self._scale
        return Features(points=pts, descriptors=np.asarray(self._desc[a:b]))

    def thumbnail(self, card_id: str) -> ImageRGB | None:
        """The card's colour thumbnail (read-only, shared: decoded once, THUMBNAIL_CACHE kept),
        or None (a file built without thumbnails)."""
        return self._thumbnail(card_id)

    def _decode_thumbnail(self, card_id: str) -> ImageRGB | None:
        i = self._row.get(card_id)
        bgr = self._thumbs.decode(i, cv2.IMREAD_COLOR) if i is not None else None
        if bgr is None:
            return None
        rgb = cast(ImageRGB, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        rgb.flags.writeable = False
        return rgb

    def detail(self, card_id: str) -> npt.NDArray[np.uint8] | None:
        """The card's grey detail image at the canvas's resolution, or None (a card without
        printings of its name, or a file built before details)."""
        i = self._row.get(card_id)
        return self._details.decode(i, cv2.IMREAD_GRAYSCALE) if i is not None else None

    @property
    def thumbnails(self) -> int:
        """Cards that carry a thumbnail."""
        return self._thumbs.count

    @property
    def details(self) -> int:
        """Cards that carry a detail image."""
        return self._details.count

    def check_cards(self, card_ids: Sequence[str]) -> None:
        """Refuse a file that does not cover exactly the catalogue's cards."""
        want, have = set(card_ids), set(self.card_ids)
        if want != have:
            missing, extra = sorted(want - have)[:3], sorted(have - want)[:3]
            raise BundleModelError(
                f"{self.path.name} does not match the catalogue "
                f"({len(want - have)} cards missing e.g. {missing}, {len(have - want)} extra "
                f"e.g. {extra})",
                "rebuild the bundle's verification features (cardedge bundle reindex)",
            )

    def close(self) -> None:
        """Drop the maps (the OS unmaps them once no view is left)."""
        empty = np.zeros(0, np.uint8)
        self._points = self._desc = empty  # type: ignore[assignment]
        self._thumbs, self._details = _Blobs.none(), _Blobs.none()


@dataclass(frozen=True, slots=True)
class _Blobs:
    """One blob section of the reference file (thumbnails or details): encoded image bytes per
    card (WebP; JPEG in files written before it: cv2.imdecode reads either)."""

    offsets: npt.NDArray[np.int64] | None
    data: npt.NDArray[np.uint8]

    @classmethod
    def none(cls) -> _Blobs:
        return cls(None, np.zeros(0, np.uint8))

    @classmethod
    def read(cls, path: Path, header: dict[str, Any], name: str, n: int, what: str) -> _Blobs:
        """The section `name` ("thumb": thumb_offsets + thumbs, "detail": detail_offsets +
        details), memory-mapped; empty for a file written without it."""
        sec = header["sections"]
        offs_key, data_key = f"{name}_offsets", {"thumb": "thumbs"}.get(name, f"{name}s")
        if offs_key not in sec:
            return cls.none()
        length, size = int(header.get(f"{name}_bytes", 0)), path.stat().st_size
        if sec[data_key] + length > size or sec[offs_key] + 8 * (n + 1) > size:
            raise BundleModelError(f"{path.name} is truncated", "rebuild the bundle")
        offsets = np.array(np.memmap(path, np.int64, "r", sec[offs_key], (n + 1,)))
        if offsets[0] != 0 or offsets[-1] != length or np.any(np.diff(offsets) < 0):
            raise BundleModelError(f"{path.name}: corrupt {what}", "rebuild the bundle")
        if not length:  # every entry empty: nothing to map (the section may end the file)
            return cls(offsets, np.zeros(0, np.uint8))
        return cls(offsets, np.memmap(path, np.uint8, "r", sec[data_key], (length,)))

    @property
    def count(self) -> int:
        return int(np.count_nonzero(np.diff(self.offsets))) if self.offsets is not None else 0

    def decode(self, i: int, flags: int) -> npt.NDArray[np.uint8] | None:
        """Card i's image (cv2.imdecode with `flags`), or None where it has none."""
        if self.offsets is None:
            return None
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        if b <= a:
            return None
        image = cv2.imdecode(np.asarray(self.data[a:b]), flags)
        return cast(npt.NDArray[np.uint8], image) if image is not None else None
