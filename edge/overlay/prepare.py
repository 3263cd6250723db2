"""Turning a taught crop into a reference view for one bundle: its embeddings (the bundle's
embedder, both ways up as the index stores scans), its local features (the bundle's extractor, as
edge.recognize.features.reference_features computes them for scans) and its colour thumbnail; and the
catalogue fingerprint that says whether two bundles recognise the same cards.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import Manifest
from edge.bundles.reference_features import THUMB_H, THUMB_W
from edge.errors import BadImageError, EdgeError
from edge.imageio import read_image_file
from edge.recognize.feature_file import ReferenceFeatures
from edge.recognize.features import Extractor, Features, FeatureSpec, shared
from edge.recognize.index import Catalogue
from edge.recognize.rectify import order_corners, rotate180, side_lengths, warp_card
from edge.recognize.taught import OverlaySnapshot, PreparedView
from edge.recognize.verify import Verifier, photometric
from edge.types import CardCrop, Corners, ImageRGB, OrientedBox

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
TEMPLATE_SAMPLE = 24  # other cards' scans a taught view's features are compared with
SELFTEST_MAX_PIXELS = 40_000_000


@runtime_checkable
class OverlayHost(Protocol):
    """What the overlay needs of a loaded bundle (edge.recognize.recognizer.Recognizer)."""

    @property
    def bundle_id(self) -> str: ...
    @property
    def bundle_dir(self) -> Path: ...
    @property
    def manifest(self) -> Manifest: ...
    @property
    def catalogue(self) -> Catalogue: ...
    @property
    def reference_features(self) -> ReferenceFeatures | None: ...
    @property
    def overlay(self) -> OverlaySnapshot: ...
    def embed(self, crops: list[CardCrop], /) -> FloatArray: ...
    def use_overlay(self, snapshot: OverlaySnapshot, /) -> None: ...


class OverlayError(EdgeError):
    """A view that cannot be taught as sent."""

    code = "overlay_invalid"
    http_status = 422


class TeachNoFeaturesError(OverlayError):
    code = "teach_no_features"


class OverlayUnsupportedError(OverlayError):
    """The serving bundle has no reference features: taught views would have nothing to add."""

    code = "overlay_unsupported"
    http_status = 409


def catalogue_fingerprint(catalogue: Catalogue) -> str:
    """A hash of every card the bundle recognises (id, name, set, number, rarity, scan
    reference), independent of how the SQLite file happens to be laid out."""
    h = hashlib.sha256()
    for card_id in sorted(set(catalogue.key_card_ids.tolist())):
        info = catalogue.get(str(card_id))
        row = astuple(info) if info is not None else (card_id,)
        h.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def card_corners(polygon: Sequence[Sequence[float]]) -> Corners:
    """A sent polygon as card corners: kept as sent when its first edge is a short side (as
    /v1/identify reports polygons, clockwise from the card's top-left), else ordered portrait."""
    corners = np.asarray(polygon, np.float32).reshape(4, 2)
    first, second = side_lengths(corners)
    return corners if first <= second else order_corners(corners)


def canvas_crop(image: ImageRGB, spec: FeatureSpec, corners: Corners | None = None) -> ImageRGB:
    """The card upright on the feature canvas: the polygon warped, or a crop resized."""
    if corners is not None:
        return warp_card(image, corners, spec.height, spec.width)
    shrink = image.shape[0] > spec.height
    out = cv2.resize(
        image,
        (spec.width, spec.height),
        interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
    )
    return cast(ImageRGB, np.ascontiguousarray(out))


def template_sample(host: OverlayHost) -> list[tuple[str, Features]]:
    """Other cards' raw features, to find the catalogue's template (frame, text boxes) in a
    taught crop: the bundle's self-test scans, else (none shipped) thumbnails of its first
    cards. Bundle scans had their template removed at build time; a taught crop must too, or an
    unknown card of the same style would match it on the template alone."""
    refs = host.reference_features
    if refs is None:
        return []
    wide = Extractor(replace(refs.spec, n_features=2 * refs.spec.n_features))
    out: list[tuple[str, Features]] = []
    for name, card_id in list(host.manifest.selftest.items())[:TEMPLATE_SAMPLE]:
        try:
            scan = read_image_file(host.bundle_dir / name, max_pixels=SELFTEST_MAX_PIXELS)
        except BadImageError as e:
            logger.warning("self-test scan %s unreadable for the overlay: %s", name, e)
            continue
        out.append((card_id, wide.extract(wide.gray(scan))))
    if len(out) < 4:
        for card_id in refs.card_ids[:TEMPLATE_SAMPLE]:
            thumb = refs.thumbnail(card_id)
            if thumb is not None:
                out.append((card_id, wide.extract(wide.gray(thumb))))
    return out


def taught_features(
    canvas: ImageRGB, spec: FeatureSpec, template: Sequence[tuple[str, Features]], card_id: str
) -> Features:
    """The crop's distinctive features, as the bundle's reference features are made: twice
    n_features extracted, those shared with other cards' scans removed."""
    wide = Extractor(replace(spec, n_features=2 * spec.n_features))
    raw = wide.extract(wide.gray(canvas))
    others = [f for cid, f in template if cid != card_id]
    keep = np.flatnonzero(~shared(raw, others))[: spec.n_features]  # strongest first
    return Features(raw.points[keep], raw.descriptors[keep])


def thumbnail_of(canvas: ImageRGB) -> ImageRGB:
    """The colour check's reference, made as the bundle's thumbnails are (area resampling)."""
    small = cv2.resize(canvas, (THUMB_W, THUMB_H), interpolation=cv2.INTER_AREA)
    return cast(ImageRGB, np.ascontiguousarray(small))


def align_to_scan(canvas: ImageRGB, refs: ReferenceFeatures, card_id: str) -> ImageRGB:
    """The crop registered onto its card's scan canvas: the right way up (a detector box says
    nothing about which end is the top) and, where the bundle's features for the card map onto
    the crop under a plausible homography, with the loose box's margins warped away. Of the
    crop both ways up, registered or not, the one whose colours agree best with the scan's
    thumbnail wins: the colour check compares a taught view with the scan on the same canvas
    (edge.recognize.decide.TAUGHT_COLOUR_BOTH), so they must line up."""
    extractor, verifier = Extractor(refs.spec), Verifier(refs)
    options: list[tuple[int, ImageRGB]] = []
    for image in (canvas, rotate180(canvas)):
        options.append((0, image))
        v = verifier.verify(extractor.extract(extractor.gray(image)), card_id)
        if v.homography is not None:
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            size = (canvas.shape[1], canvas.shape[0])
            warped = cv2.warpPerspective(image, v.homography, size, flags=flags)
            options.append((v.inliers, cast(ImageRGB, np.ascontiguousarray(warped))))
    scan = refs.thumbnail(card_id)
    if scan is None:
        return max(options, key=lambda o: o[0])[1]
    valid = np.ones(scan.shape[:2], bool)
    return max(options, key=lambda o: photometric(thumbnail_of(o[1]), valid, scan))[1]


def embeddings_of(host: OverlayHost, canvas: ImageRGB) -> FloatArray:
    """2 x D: the crop at the embedder's input size, upright and turned 180 degrees."""
    spec = host.manifest.embedder.input
    small = cast(
        ImageRGB, cv2.resize(canvas, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    )
    box = OrientedBox(corners=np.zeros((4, 2), np.float32), conf=1.0)  # the embedder ignores it
    return host.embed([CardCrop(small, box), CardCrop(rotate180(small), box)])


def prepare_view(
    host: OverlayHost,
    view_id: str,
    card_id: str,
    canvas: ImageRGB,
    template: Sequence[tuple[str, Features]],
) -> PreparedView:
    """One taught crop (on the feature canvas) as a reference view for `host`'s bundle."""
    refs = host.reference_features
    if refs is None:
        raise OverlayUnsupportedError(
            f"bundle {host.bundle_id} has no reference features: nothing to verify a taught view "
            "with",
            "serve a bundle built with verification features (cardedge bundle reindex)",
        )
    features = taught_features(canvas, refs.spec, template, card_id)
    return PreparedView(
        view_id=view_id,
        card_id=card_id,
        embeddings=embeddings_of(host, canvas),
        features=features,
        thumbnail=thumbnail_of(canvas),
    )


def save_prepared(path: Path, bundle_id: str, view: PreparedView) -> None:
    """A prepared view's derived data (for `bundle_id`) as .npz, written then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez(
            f,
            bundle_id=np.array(bundle_id),
            embeddings=view.embeddings,
            points=view.features.points,
            descriptors=view.features.descriptors,
            thumbnail=view.thumbnail,
        )
    tmp.replace(path)


def load_prepared(path: Path, bundle_id: str, view_id: str, card_id: str) -> PreparedView | None:
    """The saved view when it was prepared for `bundle_id` and reads back whole, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["bundle_id"]) != bundle_id:
                return None
            arrays: dict[str, Any] = {k: z[k] for k in ("embeddings", "points", "descriptors")}
            thumb = z["thumbnail"]
    except (OSError, ValueError, KeyError, EOFError) as e:
        logger.warning("overlay view %s: %s unreadable (%s), rebuilding it", view_id, path.name, e)
        return None
    emb, pts = arrays["embeddings"], arrays["points"]
    if emb.ndim != 2 or pts.ndim != 2 or thumb.shape != (THUMB_H, THUMB_W, 3):
        return None
    return PreparedView(
        view_id,
        card_id,
        np.ascontiguousarray(emb, np.float32),
        Features(
            np.ascontiguousarray(pts, np.float32), np.ascontiguousarray(arrays["descriptors"])
        ),
        np.ascontiguousarray(thumb, np.uint8),
    )
