"""Local features for verification, and the bundle's reference feature file.

A card is verified by matching the local features of its crop to those of a candidate's reference
scan. Both sides go through `Extractor` on the same canvas (the card upright at `height` x
`width`), so the device and the bundle builder compute features the same way.

The reference file (`features.bin`) holds every card's keypoints and descriptors in one
memory-mapped file, so a catalogue of 17,600 cards costs page cache, not resident memory:

    magic (8 bytes) | header length (uint32 LE) | header (JSON) | pad to 64
    offsets int64[cards + 1] | keypoints uint16[total, 2] | descriptors uint8[total, desc_bytes]
    | thumb offsets int64[cards + 1] | thumbnails (JPEG bytes)
    | detail offsets int64[cards + 1] | details (JPEG bytes)

Keypoints are stored in 1/`COORD_SCALE` pixel steps of the canvas; card i owns rows
offsets[i]:offsets[i+1]. Each section starts on a 64-byte boundary. A small colour thumbnail per
card lets verification check colours under the homography. A grey image at the canvas's own
resolution, for the cards that share their name with another (reprints hide among them), lets
same-art printings be told apart by the small print in which they differ (set symbol, number,
attack text): a thumbnail is too coarse for text. A card without one has an empty entry; a file
written before details existed has neither section and reads the same.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from edge.bundles.errors import BundleModelError
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

MAGIC = b"CEFEAT01"
COORD_SCALE = 16  # keypoint coordinates in 1/16 px; uint16 holds canvases up to 4095 px
ALIGN = 64
SHARED_PX = 12.0  # a template feature recurs within this many canvas px on other cards
SHARED_HAMMING = 48  # ... with a descriptor at most this far (of 256 bits)
SHARED_MAX = 2  # a feature found on this many sampled cards is template
SHARED_SAMPLE = 24  # other cards each card is compared with
# References are extracted twice: as scanned, and softened as the camera sees a card at
# SOFT_SCALE of the canvas (a crop upsampled to the canvas has no fine corners; a sharp scan's
# features barely match it). SOFT_SHARE x n_features softened ones are kept beside the sharp ones.
SOFT_SCALE = 0.5
SOFT_SHARE = 0.3
SOFT_SAME_PX = 3.0  # a softened feature this close to a sharp one with a near-identical descriptor
Method = Literal["orb", "sift"]  # AKAZE left opencv-python's main modules in OpenCV 5

Points = npt.NDArray[np.float32]  # N x 2, canvas px (x, y)
Descriptors = npt.NDArray[Any]  # N x D: uint8 (ORB) or float32 (SIFT)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How features are extracted: the method, how many, and the canvas the card is warped to."""

    method: Method = "orb"
    n_features: int = 500
    height: int = 336  # portrait 63:88, so width / height = 0.716
    width: int = 240


@dataclass(frozen=True, slots=True)
class Features:
    """One image's keypoints and descriptors."""

    points: Points
    descriptors: Descriptors

    def __len__(self) -> int:
        return len(self.points)


def _make(spec: FeatureSpec) -> Any:
    if spec.method == "orb":
        # Small canvases lose a third of their area to ORB's default 31 px border: use 15.
        return cv2.ORB.create(
            nfeatures=spec.n_features, edgeThreshold=15, patchSize=15, fastThreshold=10
        )
    return cv2.SIFT.create(nfeatures=spec.n_features)


class Extractor:
    """Thread-safe extraction: one OpenCV detector object per thread (they keep state)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._local = threading.local()

    def _detector(self) -> Any:
        det = getattr(self._local, "det", None)
        if det is None:
            det = self._local.det = _make(self.spec)
        return det

    def gray(self, image: ImageRGB) -> npt.NDArray[np.uint8]:
        """An RGB card image (any size) as the canvas's grey image."""
        h, w = self.spec.height, self.spec.width
        g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        if g.shape[:2] != (h, w):
            shrink = g.shape[0] > h
            g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return np.ascontiguousarray(g, dtype=np.uint8)

    def extract(self, gray: npt.NDArray[np.uint8]) -> Features:
        """Keypoints and descriptors of a canvas-sized grey image (none for a flat image)."""
        kps, desc = self._detector().detectAndCompute(gray, None)
        if desc is None or not kps:
            return empty_features(self.spec)
        # Strongest first (ORB returns them level by level), at most n_features.
        keep = np.argsort([-k.response for k in kps], kind="stable")[: self.spec.n_features]
        kps, desc = [kps[i] for i in keep], desc[keep]
        pts = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
        return Features(points=pts, descriptors=np.ascontiguousarray(desc))


def reference_features(
    images: Iterable[tuple[str, ImageRGB]], spec: FeatureSpec, *, seed: int = 0
) -> list[tuple[str, Features]]:
    """Every catalogue scan's distinctive features, as the device's verification expects them:
    twice `n_features` extracted on the canvas, the catalogue's shared ones removed."""
    wide = Extractor(replace(spec, n_features=2 * spec.n_features))
    ids: list[str] = []
    raw: list[Features] = []
    soft: list[Features] = []
    for card_id, image in images:
        ids.append(card_id)
        gray = wide.gray(image)
        raw.append(wide.extract(gray))
        if SOFT_SHARE:
            soft.append(wide.extract(softened(gray)))
    sharp = distinctive(raw, spec.n_features, seed=seed)
    if not SOFT_SHARE:
        return list(zip(ids, sharp, strict=True))
    coarse = distinctive(soft, round(SOFT_SHARE * spec.n_features), seed=seed)
    return [(i, merged(a, b)) for i, a, b in zip(ids, sharp, coarse, strict=True)]


def softened(gray: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A canvas image as the device's warp makes it of a card seen SOFT_SCALE the canvas's size:
    area-downscaled, then bilinearly back up."""
    h, w = gray.shape[:2]
    small = cv2.resize(
        gray, (round(w * SOFT_SCALE), round(h * SOFT_SCALE)), interpolation=cv2.INTER_AREA
    )
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


def merged(sharp: Features, soft: Features) -> Features:
    """sharp's features, then soft's that do not repeat one of them (a near-identical descriptor
    within SOFT_SAME_PX)."""
    new = ~repeats(soft, sharp, SOFT_SAME_PX)
    return Features(
        np.concatenate([sharp.points, soft.points[new]]),
        np.concatenate([sharp.descriptors, soft.descriptors[new]]),
    )


def empty_features(spec: FeatureSpec) -> Features:
    dtype = np.float32 if spec.method == "sift" else np.uint8
    return Features(np.zeros((0, 2), np.float32), np.zeros((0, descriptor_bytes(spec)), dtype))


def descriptor_bytes(spec: FeatureSpec) -> int:
    """Descriptor width: ORB 32 bytes, SIFT 128 floats."""
    return {"orb": 32, "sift": 128}[spec.method]


def distinctive(
    raw: Sequence[Features], keep: int, *, sample: int = SHARED_SAMPLE, seed: int = 0
) -> list[Features]:
    """Each card's features minus those its catalogue shares (frame, text boxes, symbols).

    Cards of one catalogue share a template, and an unknown card of the same style matches the
    template's features under one homography as well as the right card does. A reference keypoint
    is template when a near-identical descriptor sits at nearly the same canvas position in two or
    more of `sample` other cards; what is left is the card's own art and text, strongest first.
    """
    rng = np.random.default_rng(seed)
    out: list[Features] = []
    for i, f in enumerate(raw):
        if i and i % 2000 == 0:
            logger.info("distinctive features: %d of %d cards", i, len(raw))
        if len(f) == 0:
            out.append(f)
            continue
        others = [j for j in rng.permutation(len(raw))[: sample + 1].tolist() if j != i][:sample]
        idx = np.flatnonzero(~shared(f, [raw[j] for j in others]))[:keep]  # strongest first
        out.append(Features(f.points[idx], f.descriptors[idx]))
    return out


def shared(f: Features, others: Sequence[Features]) -> npt.NDArray[np.bool_]:
    """Which of f's features are template: a near-identical descriptor at nearly the same
    canvas position on SHARED_MAX or more of `others` (also used for views taught on a device,
    edge.overlay.store)."""
    hits = np.zeros(len(f), np.int32)
    for g in others:
        hits += repeats(f, g, SHARED_PX)
    mask: npt.NDArray[np.bool_] = hits >= SHARED_MAX
    return mask


def repeats(f: Features, g: Features, px: float) -> npt.NDArray[np.bool_]:
    """Which of f's features g repeats: a near-identical descriptor (Hamming < SHARED_HAMMING)
    within `px` canvas px."""
    if len(g) == 0 or len(f) == 0:
        return np.zeros(len(f), bool)
    dist, nearest = cv2.batchDistance(
        f.descriptors, g.descriptors, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=1
    )
    d, t = dist.reshape(-1), nearest.reshape(-1)
    near = np.linalg.norm(f.points - g.points[t], axis=1) < px
    out: npt.NDArray[np.bool_] = (d < SHARED_HAMMING) & near
    return out


# --- the reference file ------------------------------------------------------------------------


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
    """Write every card's features (and its thumbnail and detail image, JPEG bytes, where it has
    them) to `path`; returns the header (counts, spec, sections)."""
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
        """The card's colour thumbnail, or None (a file built without thumbnails)."""
        i = self._row.get(card_id)
        bgr = self._thumbs.decode(i, cv2.IMREAD_COLOR) if i is not None else None
        return cast(ImageRGB, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) if bgr is not None else None

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
    """One blob section of the reference file (thumbnails or details): JPEG bytes per card."""

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
