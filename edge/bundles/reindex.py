"""`cardedge bundle reindex`: a bundle for a new or extended catalogue, with the same models.

What a shop does on release day, without training and without torch: the source bundle's own
embedder (ONNX Runtime) embeds both views of every catalogue scan, exactly as the training index
builder does (scan resized to the embedder's input with area averaging, views "upright" and
"rot180"), and the new bundle gets a new index, catalogue, reference features, self-test scans and
manifest; models and thresholds are the source's. The bundle is built in a hidden folder beside
--out, verified, loaded and self-tested, and only then renamed to --out: a failure leaves no
half-written bundle.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

import edge
from edge.backends import Backend
from edge.backends.select import select_backend
from edge.bundles.errors import BundleConflictError, BundleOutputError, BundleSelfTestError
from edge.bundles.files import refresh_hashes, sha256_file, verify_bundle, write_manifest
from edge.bundles.hotswap import SelfTestCase, self_test
from edge.bundles.manifest import CatalogueSpec, InputSpec, Manifest
from edge.bundles.reference_features import add_verification, catalogue_scans
from edge.config import RuntimeSettings
from edge.errors import BackendError, BadImageError, BundleSchemaError
from edge.recognize.embed import pixel_spec, takes_pixels
from edge.recognize.embed import preprocess as model_input
from edge.recognize.features import FeatureSpec
from edge.recognize.index import VIEWS, CardInfo, build_index, save_index, write_catalogue
from edge.recognize.recognizer import Recognizer
from edge.recognize.rectify import rotate180
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

SELFTEST_DIR = "selftest"
SELFTEST_COUNT = 16  # as many as `cardedge-train bundle` picks
PROGRESS_EVERY = 500  # cards between progress log lines
_STAMP = re.compile(r"-reindex-\d{14}$")  # a reindexed bundle's id suffix, not repeated


@dataclass(frozen=True, slots=True)
class ReindexOptions:
    """What to reindex, from which bundle, into where."""

    source: Path  # bundle directory whose models are reused
    catalogue: Path  # folder with cards.csv + images/<card_id>.jpg
    out: Path  # the new bundle directory (created)
    bundle_id: str | None = None  # default: <source id>-reindex-<UTC yyyymmddHHMMSS>
    name: str | None = None  # catalogue name; default: the catalogue folder's name
    force: bool = False  # replace a non-empty --out
    threads: int = 0  # ONNX Runtime intra-op threads; 0 = all cores


@dataclass(frozen=True, slots=True)
class ReindexResult:
    """The bundle written, what it holds, how long it took and what its self-test said."""

    bundle_id: str
    source_id: str
    out: Path
    cards: int
    vectors: int
    features_bytes: int
    seconds: float
    selftest: tuple[SelfTestCase, ...]

    def summary(self) -> str:
        """A few human lines for the end of the command."""
        ok = sum(c.ok for c in self.selftest)
        per_card = self.seconds / max(self.cards, 1) * 1000.0
        return "\n".join(
            (
                f"reindexed {self.cards} cards ({self.vectors} vectors) with the models of "
                f"{self.source_id} in {self.seconds:.1f} s ({per_card:.0f} ms a card)",
                f"verification features: {self.features_bytes / 1e6:.2f} MB",
                f"self-test: {ok}/{len(self.selftest)} scans identified as themselves",
                f"bundle {self.bundle_id} at {self.out} (unsigned; `cardedge bundle sign` signs it)",
            )
        )


def reindex(opts: ReindexOptions) -> ReindexResult:
    """Build, verify and self-test the new bundle, then move it to opts.out."""
    t0 = time.perf_counter()
    src = verify_bundle(opts.source)
    _check_out(opts)
    bundle_id = new_bundle_id(src, opts.bundle_id)
    stage = opts.out.parent / f".{opts.out.name}.reindex-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        manifest = _build(stage, src, opts, bundle_id)
        cases = _self_test(stage, manifest, opts.threads)
        _publish(stage, opts.out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    verification = manifest.verification
    features = manifest.files[verification.file].size if verification else 0
    result = ReindexResult(
        bundle_id, src.bundle_id, opts.out, manifest.catalogue.card_count, manifest.index.count,
        features, time.perf_counter() - t0, tuple(cases),
    )  # fmt: skip
    logger.info("bundle %s written to %s in %.1f s", bundle_id, opts.out, result.seconds)
    return result


def new_bundle_id(src: Manifest, wanted: str | None) -> str:
    """The new bundle's id: `wanted`, else `<source id>-reindex-<UTC timestamp>`; checked
    against the manifest's pattern and never the source's own id (ids are immutable)."""
    stamp = f"-reindex-{datetime.now(UTC):%Y%m%d%H%M%S}"
    bundle_id = wanted or _STAMP.sub("", src.bundle_id)[: 128 - len(stamp)] + stamp
    if bundle_id == src.bundle_id:
        raise BundleConflictError(
            f"--bundle-id {bundle_id!r} is the source bundle's own id",
            "a bundle id names one set of files; pick a new id or leave --bundle-id out",
        )
    try:
        Manifest.model_validate({**src.model_dump(), "bundle_id": bundle_id})
    except ValidationError as e:
        raise BundleSchemaError(
            f"--bundle-id {bundle_id!r} is not a valid bundle id",
            "up to 128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ) from e
    return bundle_id


def _check_out(opts: ReindexOptions) -> None:
    """Refuse a missing catalogue folder, and an --out that holds anything (unless --force) or
    overlaps the inputs."""
    if not opts.catalogue.is_dir():
        raise BadImageError(
            f"no catalogue folder at {opts.catalogue}", "it holds cards.csv + images/"
        )
    out = opts.out.resolve()
    for name, path in (("--bundle", opts.source), ("--catalogue", opts.catalogue)):
        inp = path.resolve()
        if out == inp or inp.is_relative_to(out) or out.is_relative_to(inp):
            raise BundleOutputError(
                f"--out {opts.out} overlaps {name} {path}", "write the new bundle elsewhere"
            )
    if opts.out.exists() and not opts.out.is_dir():
        raise BundleOutputError(f"--out {opts.out} exists and is not a folder")
    if opts.out.is_dir() and any(opts.out.iterdir()) and not opts.force:
        raise BundleOutputError(
            f"--out {opts.out} exists and is not empty", "pass --force to replace it"
        )


def _build(stage: Path, src: Manifest, opts: ReindexOptions, bundle_id: str) -> Manifest:
    """Every file of the new bundle into `stage`; its manifest, verification listed, verified."""
    _copy_models(opts.source, stage, src)
    vectors, ids = embed_catalogue(opts.catalogue, opts.source, src, opts.threads)
    cards = _card_infos(opts.catalogue, ids)
    write_catalogue(stage / src.catalogue.file, cards, [(c, v) for c in ids for v in VIEWS])
    save_index(build_index(vectors, src.index.dtype), stage / src.index.file)
    selftest = _copy_selftest(opts.catalogue, stage, _pick_selftest(vectors, len(ids)), cards)
    manifest = src.model_copy(
        update={
            "bundle_id": bundle_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "catalogue": CatalogueSpec(
                file=src.catalogue.file, sha256="", name=opts.name or opts.catalogue.resolve().name,
                card_count=len(ids),
            ),
            "index": src.index.model_copy(update={"sha256": "", "count": len(vectors)}),
            "verification": None,
            "files": {},
            "selftest": selftest,
            "lineage": _lineage(src, opts.catalogue),
        }
    )  # fmt: skip
    write_manifest(stage, refresh_hashes(stage, manifest))
    add_verification(stage, opts.catalogue, _feature_spec(src))
    return verify_bundle(stage)


def _copy_models(source: Path, stage: Path, src: Manifest) -> None:
    """The detector and embedder, ONNX and HEF where the source has one, byte for byte."""
    for spec in (src.detector, src.embedder):
        for name in (spec.file, spec.hef.file if spec.hef else None):
            if name is not None:
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / name, stage / name)


def _feature_spec(src: Manifest) -> FeatureSpec:
    """The source's reference-feature settings, or the defaults where it has none."""
    v = src.verification
    if v is None:
        return FeatureSpec()
    return FeatureSpec(method=v.method, n_features=v.n_features, height=v.height, width=v.width)


# --- embedding ------------------------------------------------------------------------------
def embed_catalogue(
    catalogue: Path, source: Path, src: Manifest, threads: int = 0
) -> tuple[FloatArray, list[str]]:
    """2N x D L2-normalised vectors (per card: upright, rot180) and the N card ids, in file
    order, through the source bundle's embedder on ONNX Runtime; scans are streamed, so memory
    holds one batch of scans, not the catalogue."""
    settings = RuntimeSettings(backend="onnx", onnx_threads=threads)
    backend, _ = select_backend("embedder", src.embedder, source, settings)
    spec = pixel_spec(src.embedder.input) if takes_pixels(backend) else src.embedder.input
    batch = src.embedder.max_batch
    parts: list[FloatArray] = []
    pending: list[ImageRGB] = []
    ids: list[str] = []
    try:
        for card_id, view in _views(catalogue, src.embedder.input):
            pending.append(view)
            ids.append(card_id)
            while len(pending) >= batch:
                parts.append(_forward(backend, pending[:batch], spec, src))
                del pending[:batch]
        if pending:
            parts.append(_forward(backend, pending, spec, src))
    finally:
        backend.close()
    if not parts:
        raise BadImageError(f"the catalogue {catalogue} has no cards", "cards.csv lists none")
    return np.concatenate(parts), ids[::2]


def _views(catalogue: Path, spec: InputSpec) -> Iterator[tuple[str, ImageRGB]]:
    """(card_id, view) for both views of every scan, each scan resized as training does."""
    try:
        for n, (card_id, scan) in enumerate(catalogue_scans(catalogue), start=1):
            upright = resize_scan(scan, spec.height, spec.width)
            yield card_id, upright
            yield card_id, rotate180(upright)
            if n % PROGRESS_EVERY == 0:
                logger.info("embedded %d cards", n)
    except (UnicodeDecodeError, csv.Error) as e:
        raise BadImageError(f"{catalogue / 'cards.csv'} is not a readable UTF-8 CSV: {e}") from e


def resize_scan(scan: ImageRGB, height: int, width: int) -> ImageRGB:
    """The scan at the embedder's input size with area averaging: training.data.read_rgb's
    resize, which built the index the embedder was trained and calibrated against."""
    if scan.shape[:2] == (height, width):
        return np.ascontiguousarray(scan)
    return np.ascontiguousarray(
        cast(ImageRGB, cv2.resize(scan, (width, height), interpolation=cv2.INTER_AREA))
    )


def _forward(
    backend: Backend, views: Sequence[ImageRGB], spec: InputSpec, src: Manifest
) -> FloatArray:
    """One batch of views -> L2-normalised vectors; a broken embedder is an error, not zeros."""
    outputs = backend.run(model_input(np.stack(views), spec))
    name = src.embedder.output_name
    out = outputs[name] if name in outputs else next(iter(outputs.values()))
    vectors = np.asarray(out, dtype=np.float32)
    if vectors.shape != (len(views), src.index.dim):
        raise BackendError(
            f"embedder returned shape {vectors.shape}, expected ({len(views)}, {src.index.dim})",
            "the source bundle's embedder does not match its index",
        )
    norms = np.linalg.norm(vectors, axis=1)
    if not np.all(np.isfinite(norms)) or not np.all(norms > 0):
        raise BackendError("embedder produced zero or non-finite embeddings")
    normalised: FloatArray = (vectors / norms[:, None]).astype(np.float32)
    return normalised


# --- catalogue, self-test scans, lineage ---------------------------------------------------
def _rows(catalogue: Path) -> dict[str, dict[str, str]]:
    """card_id -> its cards.csv row (already checked by catalogue_scans)."""
    with (catalogue / "cards.csv").open(newline="", encoding="utf-8-sig") as f:
        return {(r.get("card_id") or "").strip(): r for r in csv.DictReader(f)}


def _card_infos(catalogue: Path, ids: Sequence[str]) -> list[CardInfo]:
    """One CardInfo per card from its csv row: absent columns empty, no name -> the card id."""
    rows, keys = _rows(catalogue), ("name", "set_id", "set_name", "number", "rarity", "image")
    infos = []
    for c in ids:
        f = {k: (rows[c].get(k) or "").strip() for k in keys}
        infos.append(
            CardInfo(c, f["name"] or c, f["set_id"], f["set_name"], f["number"], f["rarity"],
                     f["image"] or f"images/{c}.jpg")
        )  # fmt: skip
    return infos


def _pick_selftest(vectors: FloatArray, n: int, count: int = SELFTEST_COUNT) -> list[int]:
    """Up to `count` of the n cards, spread over the catalogue, preferring cards whose upright
    scan is not a near twin of another card's (same-art reprints make a poor self-test)."""
    spread = sorted({round(i * (n - 1) / max(4 * count - 1, 1)) for i in range(4 * count)})
    card_of_row = np.repeat(np.arange(n), len(VIEWS))
    sims = vectors[[i * len(VIEWS) for i in spread]] @ vectors.T
    sims[card_of_row[None, :] == np.asarray(spread)[:, None]] = -1.0
    distinct = [c for c, best in zip(spread, sims.max(axis=1), strict=True) if best < 0.99]
    pool = distinct if len(distinct) >= min(count, n) else spread
    step = max(1, len(pool) // count)
    return pool[::step][:count]


def _copy_selftest(
    catalogue: Path, stage: Path, picked: Sequence[int], cards: Sequence[CardInfo]
) -> dict[str, str]:
    """Copy the picked cards' scans, unchanged, to selftest/; file name -> card id."""
    (stage / SELFTEST_DIR).mkdir()
    selftest: dict[str, str] = {}
    for i in picked:
        card = cards[i]
        scan = catalogue / card.image_ref
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", card.card_id)
        name = f"{SELFTEST_DIR}/{i:06d}-{safe}{scan.suffix.lower()}"
        shutil.copyfile(scan, stage / name)
        selftest[name] = card.card_id
    return selftest


def tree_hash(root: Path) -> str:
    """sha256 over (relative path, file sha256) of every file under root: the same catalogue
    fingerprint `cardedge-train bundle` writes as lineage.catalogue_sha256."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode() + b"\n")
    return h.hexdigest()


def _lineage(src: Manifest, catalogue: Path) -> dict[str, Any]:
    """The source's lineage (the models' runs still apply), the new catalogue's hash, and where
    this bundle came from."""
    return {
        **src.lineage,
        "catalogue_sha256": tree_hash(catalogue),
        "reindex": {
            "source_bundle_id": src.bundle_id,
            "source_created": src.created,
            "source_catalogue": src.catalogue.name,
            "source_catalogue_sha256": src.lineage.get("catalogue_sha256"),
            "tool": f"cardedge bundle reindex {edge.__version__}",
        },
    }


# --- self-test and publishing --------------------------------------------------------------
def _self_test(stage: Path, manifest: Manifest, threads: int) -> list[SelfTestCase]:
    """Load the staged bundle as a device would (ONNX) and identify its self-test scans."""
    settings = RuntimeSettings(backend="onnx", onnx_threads=threads)
    recognizer = Recognizer.from_bundle(stage, settings)
    try:
        cases = self_test(recognizer)
    finally:
        recognizer.close()
    failed = [c for c in cases if not c.ok]
    if failed:
        detail = ", ".join(
            f"{c.expected}: got {c.got or 'nothing'} ({'known' if c.known else 'unknown'})"
            for c in failed[:5]
        )
        raise BundleSelfTestError(
            f"the reindexed bundle {manifest.bundle_id} failed its self-test on "
            f"{len(failed)}/{len(cases)} scans: {detail}",
            "each scan must be its own card, flat and upright, filling the image; cards whose "
            "scans are the same cannot be told apart",
        )
    return cases


def _publish(stage: Path, out: Path) -> None:
    """Rename the finished bundle to `out`; an existing `out` (checked: empty, or --force) is
    moved aside first and deleted only once the new bundle is in place."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    replacing = out.is_dir() and any(out.iterdir())
    if replacing:
        os.rename(out, old)
    elif out.is_dir():
        out.rmdir()
    os.rename(stage, out)
    if replacing:
        shutil.rmtree(old, ignore_errors=True)
