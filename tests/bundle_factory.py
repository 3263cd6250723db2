"""A tiny but real bundle for tests across the project, built once per pytest session.

What is real: the files and their formats (an ultralytics YOLO11n-OBB detector exported to ONNX
at 320 px, a timm resnet10t + linear projection embedder exported to ONNX with a dynamic batch
axis and output "embedding", a usearch f16 index holding every card twice (views "upright" and
"rot180"), the SQLite catalogue, selftest scans, a manifest with sha256 of every file).

What is NOT real: the weights are random. The embedder still maps each reference scan to its own
index entry (the index was built with the same embedder), so index/dedupe/decision logic is
exercised for real, but the detector finds no cards in a scene. End-to-end accuracy comes from
the demo bundle (models/demo) once it exists: see `demo_bundle_or_none`.

Use from a test module (or tests/conftest.py):  `from tests.bundle_factory import *  # noqa`
giving the fixtures `factory_bundle` (session-wide, read-only) and `bundle_copy` (a private copy).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.bundles.files import refresh_hashes, verify_bundle, write_manifest
from edge.bundles.manifest import (
    CatalogueSpec,
    DetectorSpec,
    EmbedderSpec,
    IndexSpec,
    InputSpec,
    Manifest,
    Thresholds,
)
from edge.recognize.embed import l2_normalize, preprocess
from edge.recognize.index import CardInfo, build_index, save_index, write_catalogue
from edge.recognize.rectify import rotate180

__all__ = ["REPO_ROOT", "build_test_bundle", "bundle_copy", "demo_bundle_or_none", "factory_bundle"]

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
CROP_H, CROP_W = 224, 160  # portrait 63:88, as the demo embedder


def _card_images(n: int, seed: int) -> tuple[list[CardInfo], list[np.ndarray]]:
    """n catalogue cards with flat RGB scans (training.synth's renderer when importable)."""
    try:
        from training.synth.card_render import render_card
        from training.synth.catalogue import procedural_catalogue
    except ImportError:
        return _drawn_cards(n, seed)
    # No reprints or near-duplicates: a random-weight embedder cannot tell those apart.
    records = procedural_catalogue(n, seed, reprint_rate=0.0, near_duplicate_rate=0.0)
    cards = [
        CardInfo(r.card_id, r.name, r.set_id, r.set_name, r.number, r.rarity, f"{r.card_id}.jpg")
        for r in records
    ]
    images = [cv2.resize(render_card(r, CROP_H), (CROP_W, CROP_H)) for r in records]
    return cards, images


def _drawn_cards(n: int, seed: int) -> tuple[list[CardInfo], list[np.ndarray]]:
    """Fallback: coloured rectangles and shapes, distinct per card."""
    rng = np.random.default_rng(seed)
    cards, images = [], []
    for i in range(n):
        img = np.full((CROP_H, CROP_W, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(6):
            p = rng.integers(0, (CROP_W, CROP_H), 2)
            cv2.circle(
                img,
                (int(p[0]), int(p[1])),
                int(rng.integers(8, 40)),
                rng.integers(0, 255, 3).tolist(),
                -1,
            )
        cid = f"t{i:03d}"
        cards.append(
            CardInfo(cid, f"Test Card {i}", "ts", "Test Set", f"{i:03d}", "common", f"{cid}.jpg")
        )
        images.append(img)
    return cards, images


def _export_detector(out: Path, imgsz: int) -> None:
    """Random-weight YOLO11n-OBB (1 class) -> ONNX, via ultralytics' own exporter."""
    import ultralytics
    import yaml
    from ultralytics import YOLO

    work = out.parent / "_yolo"
    work.mkdir(exist_ok=True)
    cfg = yaml.safe_load(
        (Path(ultralytics.__file__).parent / "cfg/models/11/yolo11-obb.yaml").read_text()
    )
    cfg["nc"] = 1
    cfg_path = work / "yolo11n-obb.yaml"  # the "n" in the file name picks the nano scale
    cfg_path.write_text(yaml.safe_dump(cfg))
    cwd = os.getcwd()
    try:
        os.chdir(work)
        exported = YOLO(str(cfg_path), task="obb").export(
            format="onnx", imgsz=imgsz, simplify=False, verbose=False
        )
    finally:
        os.chdir(cwd)
    shutil.move(str(work / Path(exported).name), out)
    shutil.rmtree(work)


def _export_embedder(
    out: Path,
    dim: int,
    seed: int,
    spec: InputSpec,
    images: list[np.ndarray],
    arch: str = "resnet10t",
    pool: int = 8,
) -> None:
    """8x average pool + timm resnet10t (random) + linear projection -> ONNX, dynamic batch,
    output "embedding".

    Random weights need help to behave like an embedder: the pool makes the features robust to
    JPEG noise and sub-pixel warps, and the projection's bias centres the references' features
    (as a PCA head would; a random ReLU trunk maps every image to nearly one direction).
    """
    import timm
    import torch

    torch.manual_seed(seed)
    trunk = timm.create_model(arch, pretrained=False, num_classes=0)
    pooling = torch.nn.AvgPool2d(pool) if pool > 1 else torch.nn.Identity()
    body = torch.nn.Sequential(pooling, trunk).eval()
    head = torch.nn.Linear(trunk.num_features, dim)
    with torch.no_grad():
        feats = body(torch.from_numpy(preprocess(np.stack(images), spec)))
        head.bias.copy_(-head.weight @ feats.mean(dim=0))
    net = torch.nn.Sequential(body, head).eval()
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, CROP_H, CROP_W),),
        str(out),
        input_names=["input"],
        output_names=["embedding"],
        dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
        dynamo=False,
        opset_version=17,
    )


def _embed_references(model: Path, spec: InputSpec, images: list[np.ndarray]) -> np.ndarray:
    """Reference vectors, two rows per card (upright, rot180), through the exported ONNX."""
    from edge.backends.onnx import OnnxBackend

    views = [v for img in images for v in (img, rotate180(img))]
    backend = OnnxBackend(model, threads=1)
    try:
        vectors = backend.run(preprocess(np.stack(views), spec))["embedding"]
    finally:
        backend.close()
    return l2_normalize(vectors)


def build_test_bundle(
    out: Path,
    *,
    n_cards: int = 6,
    seed: int = 0,
    dim: int = 64,
    detector_imgsz: int = 320,
    bundle_id: str = "test-bundle-1",
    thresholds: Thresholds | None = None,
    embedder_arch: str = "resnet10t",
    pool: int = 8,
) -> Path:
    """Build the test bundle into `out` (created) and return it, verified.

    `embedder_arch` / `pool` let a benchmark build a production-sized embedder (e.g.
    "convnext_tiny", pool 1); the defaults keep the test bundle fast and discriminative.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "selftest").mkdir(exist_ok=True)
    cards, images = _card_images(n_cards, seed)
    _export_detector(out / "detector.onnx", detector_imgsz)
    emb_input = InputSpec(height=CROP_H, width=CROP_W, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    _export_embedder(out / "embedder.onnx", dim, seed, emb_input, images, embedder_arch, pool)
    vectors = _embed_references(out / "embedder.onnx", emb_input, images)
    save_index(build_index(vectors, "f16"), out / "index.usearch")
    rows = [(c.card_id, view) for c in cards for view in ("upright", "rot180")]
    write_catalogue(out / "catalogue.sqlite", cards, rows)
    selftest: dict[str, str] = {}
    for card, img in list(zip(cards, images, strict=True))[:3]:
        name = f"selftest/{card.card_id}.jpg"
        cv2.imwrite(
            str(out / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        selftest[name] = card.card_id
    manifest = Manifest(
        schema_version=1,
        bundle_id=bundle_id,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        catalogue=CatalogueSpec(sha256="", name="test", card_count=len(cards)),
        detector=DetectorSpec(
            file="detector.onnx",
            sha256="",
            input=InputSpec(height=detector_imgsz, width=detector_imgsz, resize="letterbox"),
            input_name="images",
            output_name="output0",
            arch="yolo11n-obb (random weights)",
        ),
        embedder=EmbedderSpec(
            file="embedder.onnx",
            sha256="",
            input=emb_input,
            input_name="input",
            output_name="embedding",
            embedding_dim=dim,
            max_batch=8,
            arch=f"avgpool{pool}+{embedder_arch}+linear (random weights)",
        ),
        index=IndexSpec(sha256="", dtype="f16", dim=dim, count=len(rows)),
        thresholds=thresholds or Thresholds(),
        selftest=selftest,
        lineage={"factory": "tests/bundle_factory.py", "seed": seed},
    )
    write_manifest(out, refresh_hashes(out, manifest))
    verify_bundle(out)
    return out


def demo_bundle_or_none() -> Path | None:
    """models/demo when it holds a complete bundle, else None."""
    demo = REPO_ROOT / "models" / "demo"
    return demo if (demo / "manifest.json").is_file() else None


_BUILT: dict[Path, Path] = {}  # session temp root -> bundle: one build even if imported twice


@pytest.fixture(scope="session")
def factory_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's test bundle (treat as read-only; use `bundle_copy` to modify one)."""
    import torch

    root = tmp_path_factory.getbasetemp()
    if root not in _BUILT:
        torch.set_num_threads(1)
        _BUILT[root] = build_test_bundle(tmp_path_factory.mktemp("bundles") / "test-bundle-1")
    return _BUILT[root]


@pytest.fixture
def bundle_copy(factory_bundle: Path, tmp_path: Path) -> Iterator[Path]:
    """A private, writable copy of the factory bundle."""
    dst = tmp_path / factory_bundle.name
    shutil.copytree(factory_bundle, dst)
    yield dst


def card_images_for(bundle: Path) -> dict[str, Any]:
    """card_id -> RGB selftest scan of a bundle."""
    from edge.bundles.manifest import load_manifest

    manifest = load_manifest(bundle / "manifest.json")
    return {
        card_id: cv2.cvtColor(cv2.imread(str(bundle / name)), cv2.COLOR_BGR2RGB)
        for name, card_id in manifest.selftest.items()
    }
