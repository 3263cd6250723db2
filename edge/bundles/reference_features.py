"""Build a bundle's reference features from catalogue scans, with the device's own extractor.

Used by `cardedge-train bundle` and by anything that re-indexes a bundle for a new catalogue:
the features are computed by the same code that verifies crops on the device.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

import cv2

from edge.bundles.errors import BundleModelError
from edge.bundles.files import refresh_hashes, write_manifest
from edge.bundles.manifest import Manifest, VerificationSpec
from edge.errors import BadImageError
from edge.recognize.feature_file import write_reference_features
from edge.recognize.features import Features, FeatureSpec
from edge.recognize.index import same_name
from edge.recognize.repeatable import reference_features
from edge.recognize.verify import MIN_MATCHES, FeaturesInMemory, Verifier
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

FEATURES_FILE = "features.bin"
PROGRESS_EVERY = 500
# Thumbnails and detail images are WebP: on the demo's scans it has the error of JPEG in
# two thirds of the bytes or less (thumbnails 3.0 KB against 4.8 at q92; details 7.2 KB against
# 12.3 at q80; at q70 they lost a collector number printed faintly, tests/test_verify.py).
THUMB_H, THUMB_W = 112, 80  # colour check and reprint discrimination
THUMB_QUALITY = 90
DETAIL_QUALITY = 80  # grey detail images at the canvas size for printings of one art
# A printing whose scan's features verify against another of its name's with inliers of at least
# this share of a reference's features shares its art (verification cannot tell them apart; their
# detail images can). Scan against scan on the demo's catalogue, 200 features a card: same-art
# pairs 19 inliers or more, other arts of one name 17 at most; 300 features: 32 and 35.
SAME_ART_SHARE = 0.06


def catalogue_scans(folder: Path) -> Iterator[tuple[str, ImageRGB]]:
    """(card_id, RGB scan) for every row of folder/cards.csv, scans at images/<card_id>.jpg (or
    the row's image column). A missing or unreadable scan or a repeated card_id is an error that
    names the card: a catalogue is never half-indexed silently."""
    path = folder / "cards.csv"
    if not path.is_file():
        raise BadImageError(f"{path} is missing", "a catalogue folder holds cards.csv + images/")
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8-sig") as f:  # a spreadsheet's BOM is no column
        for row in csv.DictReader(f):
            card_id = (row.get("card_id") or "").strip()
            if not card_id:
                raise BadImageError(f"{path}: a row has no card_id")
            if card_id in seen:
                raise BadImageError(f"{path}: card_id {card_id!r} appears twice")
            seen.add(card_id)
            scan = folder / (row.get("image") or f"images/{card_id}.jpg")
            bgr = cv2.imread(str(scan), cv2.IMREAD_COLOR) if scan.is_file() else None
            if bgr is None:
                raise BadImageError(f"scan of {card_id!r} is missing or unreadable: {scan.name}")
            yield card_id, cast(ImageRGB, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def add_verification(
    bundle_dir: Path, catalogue: Path, spec: FeatureSpec | None = None, *, seed: int = 0
) -> Manifest:
    """Write the bundle's reference features from the catalogue's scans and list them in its
    manifest (hashes refreshed). The catalogue must hold exactly the bundle's cards."""
    from edge.bundles.manifest import load_manifest

    spec = spec or FeatureSpec()
    manifest = load_manifest(bundle_dir / "manifest.json")
    thumbs: dict[str, bytes] = {}
    details: dict[str, bytes] = {}
    printed = cards_with_printings(catalogue)

    small: list[str] = []  # scans shorter than the canvas: their features are upsampled

    def scans() -> Iterator[tuple[str, ImageRGB]]:  # one scan in memory at a time
        for n, (card_id, scan) in enumerate(catalogue_scans(catalogue), 1):
            if scan.shape[0] < spec.height:
                small.append(card_id)
            thumbs[card_id] = thumbnail_image(scan)
            if card_id in printed:
                details[card_id] = detail_image(scan, spec)
            if n % PROGRESS_EVERY == 0:
                logger.info("reference features: %d scans read", n)
            yield card_id, scan

    items = reference_features(scans(), spec, seed=seed)
    if len(items) != manifest.catalogue.card_count:
        raise BundleModelError(
            f"the catalogue folder has {len(items)} cards, the bundle {manifest.catalogue.card_count}",
            "use the catalogue the bundle was built from",
        )
    if small:
        logger.warning(
            "%d of %d scans are under the %d px the reference features are extracted at (e.g. "
            "%s): they are upsampled, and print finer than the scan (a collector number, a set "
            "symbol) cannot tell same-art printings apart; scans %d px tall or more keep it",
            len(small), len(items), spec.height, small[0], spec.height,
        )  # fmt: skip
    shared_art = same_art(items, printed, spec)
    details = {c: d for c, d in details.items() if c in shared_art}
    header = write_reference_features(bundle_dir / FEATURES_FILE, spec, items, thumbs, details)
    verification = VerificationSpec(
        file=FEATURES_FILE, sha256="", method=spec.method, n_features=spec.n_features,
        height=spec.height, width=spec.width, cards=len(items), keypoints=int(header["total"]),
    )  # fmt: skip
    manifest = refresh_hashes(
        bundle_dir, manifest.model_copy(update={"verification": verification})
    )
    write_manifest(bundle_dir, manifest)
    logger.info(
        "reference features: %d cards (%d printings of a shared art), %d keypoints, %.1f MB",
        len(items), len(details), header["total"],
        (bundle_dir / FEATURES_FILE).stat().st_size / 1e6,
    )  # fmt: skip
    return manifest


def thumbnail_image(scan: ImageRGB) -> bytes:
    """The scan at THUMB_H x THUMB_W as WebP bytes (what the colour check and reprint
    discrimination compare)."""
    small = cv2.resize(scan, (THUMB_W, THUMB_H), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(
        ".webp", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, THUMB_QUALITY]
    )
    if not ok:
        raise BadImageError("could not encode a thumbnail")
    return buf.tobytes()


def cards_with_printings(folder: Path) -> dict[str, tuple[str, ...]]:
    """The catalogue's cards that share their name with another card, each with those others
    (`edge.recognize.index.same_name`, as the device groups them): reprints are among them."""
    with (folder / "cards.csv").open(newline="", encoding="utf-8-sig") as f:
        rows = [((r.get("card_id") or "").strip(), r.get("name")) for r in csv.DictReader(f)]
    return same_name(rows)


def same_art(
    items: Sequence[tuple[str, Features]], printings: Mapping[str, Sequence[str]],
    spec: FeatureSpec,
) -> set[str]:  # fmt: skip
    """The cards whose scan's features verify against another printing of their name (inliers
    at least SAME_ART_SHARE of `spec.n_features`): the printings one crop can verify as both,
    which only their detail images tell apart. The other arts of a name differ in what
    verification sees, and need no detail image."""
    feats = dict(items)
    verifier = Verifier(FeaturesInMemory(spec, feats))
    need = max(MIN_MATCHES, round(SAME_ART_SHARE * spec.n_features))
    out: set[str] = set()
    for a, others in printings.items():
        fa = feats.get(a)
        for b in others:
            if fa is None or b <= a or (a in out and b in out):
                continue
            if verifier.verify(fa, b).inliers >= need:
                out |= {a, b}
    return out


def detail_image(scan: ImageRGB, spec: FeatureSpec) -> bytes:
    """The scan in grey at the feature canvas's size as WebP bytes: the small print reprints
    are told apart by (edge.recognize.reprints.by_detail)."""
    big = scan.shape[0] > spec.height
    grey = cv2.cvtColor(
        cv2.resize(
            scan, (spec.width, spec.height),
            interpolation=cv2.INTER_AREA if big else cv2.INTER_CUBIC,
        ),
        cv2.COLOR_RGB2GRAY,
    )  # fmt: skip
    ok, buf = cv2.imencode(".webp", grey, [cv2.IMWRITE_WEBP_QUALITY, DETAIL_QUALITY])
    if not ok:
        raise BadImageError("could not encode a detail image")
    return buf.tobytes()
