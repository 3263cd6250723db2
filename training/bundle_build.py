"""Assemble a bundle: models, index, catalogue, self-test scans and a manifest with lineage.

The manifest follows edge/bundles/manifest.py; hashes and the files table come from edge.bundles.files (the same
code the device verifies with), and the finished directory is verified before this returns.
Lineage records what produced every artefact: dataset hash, checkpoint hashes, run configs and
tool versions. `--sign KEY` signs manifest.json with edge.bundles.signing (Ed25519).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from edge.bundles.files import (
    build_files_table,
    refresh_hashes,
    sha256_file,
    verify_bundle,
    write_manifest,
)
from edge.bundles.manifest import (
    SCHEMA_VERSION,
    CatalogueSpec,
    DetectorSpec,
    EmbedderSpec,
    IndexSpec,
    InputSpec,
    Manifest,
    Thresholds,
)
from edge.recognize.features import QUERY_FEATURES
from training.data import read_catalogue

logger = logging.getLogger(__name__)

TOOLS = (
    "torch",
    "timm",
    "transformers",
    "ultralytics",
    "onnx",
    "onnxruntime",
    "usearch",
    "numpy",
    "opencv-python-headless",
)
SELFTEST_DIR = "selftest"


@dataclass
class BundleInputs:
    """Everything a bundle is assembled from."""

    out: Path
    detector_onnx: Path
    embedder_onnx: Path
    index_dir: Path  # index.usearch, catalogue.sqlite, embeddings.npy, calibration.json
    catalogue_dir: Path  # cards.csv + images/ (self-test scans)
    name: str = "demo"
    bundle_id: str | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    runs: dict[str, Path] = field(default_factory=dict)  # role -> run dir (config.yaml, best.pt)
    data: Path | None = None  # training data root, hashed into the lineage
    selftest_count: int = 16
    max_batch: int = 8
    sign_key: Path | None = None
    verification: bool = True  # reference features for geometric verification (features.bin)
    features_catalogue: Path | None = (
        None  # the sharpest scans of the same cards; default catalogue_dir
    )


def onnx_io(path: Path) -> tuple[str, tuple[int, ...], str]:
    """(input name, input shape with dynamic dims as -1, first output name) of an ONNX file."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inp = graph.input[0]
    dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in inp.type.tensor_type.shape.dim)
    return inp.name, dims, graph.output[0].name


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def tree_hash(root: Path) -> str:
    """sha256 over (relative path, file sha256) of every file under root: a dataset fingerprint."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode() + b"\n")
    return h.hexdigest()


def run_lineage(run_dir: Path) -> dict[str, Any]:
    """A run's resolved config and its best checkpoint's hash."""
    entry: dict[str, Any] = {"run": run_dir.name}
    best = run_dir / "best.pt"
    if best.exists():
        entry["checkpoint_sha256"] = sha256_file(best)
    cfg = run_dir / "config.yaml"
    if cfg.exists():
        entry["config"] = yaml.safe_load(cfg.read_text("utf-8"))
    return entry


def detector_classes(path: Path) -> tuple[str, ...]:
    """Class names in id order from an ultralytics export's `names` metadata ({0: 'card', ...});
    ("card",) for an export without it."""
    import ast

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == "names":
            names = ast.literal_eval(prop.value)
            return tuple(str(names[k]) for k in sorted(names))
    return ("card",)


def detector_spec(path: Path) -> DetectorSpec:
    name, shape, output = onnx_io(path)
    h, w = shape[2], shape[3]
    classes = detector_classes(path)
    spec = InputSpec(
        height=h, width=w, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), resize="letterbox"
    )
    return DetectorSpec(
        file="detector.onnx",
        sha256="",
        input=spec,
        input_name=name,
        output_name=output,
        arch="yolo11n-obb",
        num_classes=len(classes),
        class_names=classes,
    )


def embedder_spec_from(path: Path, max_batch: int) -> EmbedderSpec:
    """Embedder spec from the export's sidecar JSON (arch, dim, the InputSpec it consumes)."""
    side = json.loads(path.with_suffix(".json").read_text("utf-8"))
    name, _, output = onnx_io(path)
    return EmbedderSpec(
        file="embedder.onnx",
        sha256="",
        input=InputSpec(**side["input_spec"]),
        input_name=name,
        output_name=output,
        arch=side["arch"],
        embedding_dim=side["embedding_dim"],
        max_batch=max_batch,
    )


def pick_selftest(index_dir: Path, thresholds: Thresholds, count: int) -> list[str]:
    """Catalogue cards whose own upright scan clears both thresholds, spread over the catalogue.

    The index holds each card twice (upright, rot180; in that order); a scan's margin is 1 minus
    its best similarity to any other card, which must clear unknown_margin to self-identify.
    """
    vectors = np.load(index_dir / "embeddings.npy").astype(np.float32)
    ids = _row_card_ids(index_dir)
    upright = vectors[0::2]
    sims = upright @ vectors.T
    card_of_row = np.array(ids)
    cards = card_of_row[0::2]
    other = np.where(card_of_row[None, :] == cards[:, None], -1.0, sims)
    margins = 1.0 - other.max(axis=1)
    ok = [i for i in range(len(cards)) if margins[i] >= thresholds.unknown_margin + 0.01]
    step = max(1, len(ok) // max(count, 1))
    return [str(cards[i]) for i in ok[::step][:count]]


def _row_card_ids(index_dir: Path) -> list[str]:
    import sqlite3

    con = sqlite3.connect(index_dir / "catalogue.sqlite")
    try:
        return [r[0] for r in con.execute("SELECT card_id FROM index_rows ORDER BY key")]
    finally:
        con.close()


def build(inp: BundleInputs) -> Manifest:
    """Write the bundle directory and return its verified manifest."""
    out = inp.out
    if out.exists():
        shutil.rmtree(out)
    (out / SELFTEST_DIR).mkdir(parents=True)
    shutil.copy2(inp.detector_onnx, out / "detector.onnx")
    shutil.copy2(inp.embedder_onnx, out / "embedder.onnx")
    for name in ("index.usearch", "catalogue.sqlite"):
        shutil.copy2(inp.index_dir / name, out / name)
    selftest = {}
    for card_id in pick_selftest(inp.index_dir, inp.thresholds, inp.selftest_count):
        rel = f"{SELFTEST_DIR}/{card_id}.jpg"
        # The scans the reference features come from: a self-test then checks the bundle's
        # models, index and features against each other, not a second rendering's detail.
        shutil.copy2(
            (inp.features_catalogue or inp.catalogue_dir) / "images" / f"{card_id}.jpg", out / rel
        )
        selftest[rel] = card_id
    emb = embedder_spec_from(inp.embedder_onnx, inp.max_batch)
    vectors = np.load(inp.index_dir / "embeddings.npy", mmap_mode="r")
    index_dtype = "f16" if vectors.dtype == np.float16 else "f32"
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        bundle_id=inp.bundle_id or f"{inp.name}-{datetime.now(UTC):%Y%m%d%H%M%S}",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        catalogue=CatalogueSpec(
            sha256="", name=inp.name, card_count=len(read_catalogue(inp.catalogue_dir))
        ),
        detector=detector_spec(inp.detector_onnx),
        embedder=emb,
        index=IndexSpec(
            sha256="", dtype=index_dtype, dim=int(vectors.shape[1]), count=int(vectors.shape[0])
        ),
        thresholds=inp.thresholds,
        selftest=selftest,
        lineage=lineage(inp),
    )
    manifest = refresh_hashes(out, manifest)
    assert set(manifest.files) == set(build_files_table(out))
    write_manifest(out, manifest)
    if inp.verification:  # before signing: it lists features.bin in the manifest
        from edge.bundles.reference_features import add_verification

        add_verification(out, inp.features_catalogue or inp.catalogue_dir)
    if inp.sign_key is not None:
        from edge.bundles.signing import sign_manifest

        sign_manifest(out, inp.sign_key)
    verified = verify_bundle(out)
    logger.info("bundle %s written to %s (%d files)", verified.bundle_id, out, len(verified.files))
    return verified


def lineage(inp: BundleInputs) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "runs": {role: run_lineage(path) for role, path in sorted(inp.runs.items())},
        "tools": tool_versions(),
        "catalogue_sha256": tree_hash(inp.catalogue_dir),
    }
    side = inp.embedder_onnx.with_suffix(".json")
    if side.exists():
        entry["embedder_export"] = json.loads(side.read_text("utf-8"))
    cal = inp.index_dir / "calibration.json"
    if cal.exists():
        entry["calibration"] = json.loads(cal.read_text("utf-8"))
    if inp.data is not None:
        entry["dataset_sha256"] = tree_hash(inp.data)
    return entry


def thresholds_from(index_dir: Path, det_conf: float, det_iou: float) -> Thresholds:
    """Calibrated unknown thresholds (index_build's calibration.json) + detector thresholds."""
    cal = json.loads((index_dir / "calibration.json").read_text("utf-8"))
    return Thresholds(
        unknown_score=cal["unknown_score"],
        unknown_margin=cal["unknown_margin"],
        det_conf=det_conf,
        det_iou=det_iou,
        verify_query_features=QUERY_FEATURES,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="bundle directory to (re)create")
    p.add_argument("--detector", type=Path, required=True, help="detector ONNX")
    p.add_argument("--embedder", type=Path, required=True, help="embedder ONNX (+ .json sidecar)")
    p.add_argument("--index", type=Path, required=True, help="folder written by `index`")
    p.add_argument("--catalogue", type=Path, required=True, help="catalogue folder (cards.csv)")
    p.add_argument("--name", default="demo", help="catalogue name")
    p.add_argument("--bundle-id", default=None, help="default: <name>-<UTC timestamp>")
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="ROLE=DIR",
        help="training run for the lineage, e.g. student=runs/distill (repeatable)",
    )
    p.add_argument("--data", type=Path, default=None, help="training data root to hash")
    p.add_argument("--det-conf", type=float, default=0.25)
    p.add_argument("--det-iou", type=float, default=0.7)
    p.add_argument("--sign", type=Path, default=None, metavar="KEY", help="Ed25519 private key")
    p.add_argument(
        "--features-catalogue", type=Path, default=None,
        help="the sharpest scans of the same cards for the verification features (default: --catalogue)",
    )  # fmt: skip
    p.add_argument(
        "--no-verification", action="store_true", help="no reference features (embedding only)"
    )


def main(args: argparse.Namespace) -> int:
    runs_map = dict(item.split("=", 1) for item in args.run)
    manifest = build(
        BundleInputs(
            out=args.out,
            detector_onnx=args.detector,
            embedder_onnx=args.embedder,
            index_dir=args.index,
            catalogue_dir=args.catalogue,
            name=args.name,
            bundle_id=args.bundle_id,
            thresholds=thresholds_from(args.index, args.det_conf, args.det_iou),
            runs={k: Path(v) for k, v in runs_map.items()},
            data=args.data,
            sign_key=args.sign,
            verification=not args.no_verification,
            features_catalogue=args.features_catalogue,
        )
    )
    print(manifest.bundle_id)
    return 0
