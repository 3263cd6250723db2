"""Golden test: our Detector (numpy decode + ONNX Runtime) equals ultralytics' own OBB predictor.

A tiny YOLO11n-OBB is trained in the test on generated images of card-shaped, textured, rotated
rectangles (63:88) on cluttered backgrounds, exported to ONNX, and both pipelines run on the same
new frames. Corners must agree within 2 px and confidences within 0.01, box for box. The trained
ONNX is cached in pytest's cache directory, so only the first run pays for training.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge.bundles.manifest import DetectorSpec, InputSpec, Thresholds
from edge.recognize.detect import Detector

# Training takes minutes on a busy 2-core CPU the first time (then the cached ONNX is reused).
pytestmark = [pytest.mark.slow, pytest.mark.train, pytest.mark.timeout(2400)]

IMGSZ = 320
TRAIN_HW = (360, 480)
EPOCHS = int(os.environ.get("CARDEDGE_PARITY_EPOCHS", "30"))
# A detector trained for a couple of CPU minutes is not confident yet; both sides get the same
# lowered threshold, which also hands NMS more overlapping candidates to agree on.
CONF = 0.05
IOU = 0.7
CACHE_KEY = "cardedge/detect-parity-v1"

Quad = npt.NDArray[np.float32]


# --- generated card scenes ------------------------------------------------------------------


def _card_image(rng: np.random.Generator, height: int) -> npt.NDArray[np.uint8]:
    """A portrait 63:88 card: coloured body, light border, blurry 'art' box, dark text lines."""
    width = round(height * 63 / 88)
    card = np.empty((height, width, 3), dtype=np.uint8)
    card[:] = rng.integers(0, 256, 3)
    b = max(2, height // 25)
    card[:b], card[-b:], card[:, :b], card[:, -b:] = 240, 240, 240, 240
    top, bottom = int(height * 0.12), int(height * 0.55)
    art = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    card[top:bottom, 2 * b : width - 2 * b] = cv2.resize(
        art, (width - 4 * b, bottom - top), interpolation=cv2.INTER_CUBIC
    )
    for k in range(4):
        y = int(height * (0.62 + 0.08 * k))
        end = int(width * rng.uniform(0.4, 0.9))
        cv2.line(card, (2 * b, y), (end, y), (20, 20, 20), max(1, height // 60))
    return card


def _background(rng: np.random.Generator, hw: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """A smooth random colour field with noise and a few straight clutter lines."""
    h, w = hw
    img = cv2.resize(
        rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC
    )
    img = cv2.add(img, rng.integers(0, 40, (h, w, 3), dtype=np.uint8))
    for _ in range(int(rng.integers(2, 8))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(img, p1, p2, colour, int(rng.integers(1, 6)))
    return img


def make_scene(
    rng: np.random.Generator, hw: tuple[int, int], max_cards: int = 4
) -> tuple[npt.NDArray[np.uint8], list[Quad]]:
    """An RGB frame with 1..max_cards non-overlapping cards at any rotation, and their corners."""
    h, w = hw
    img = _background(rng, hw)
    quads: list[Quad] = []
    wanted = int(rng.integers(1, max_cards + 1))
    for _ in range(60):
        if len(quads) == wanted:
            break
        size = rng.uniform(0.25, 0.45) * min(h, w)
        card = _card_image(rng, int(size))
        ch, cw = card.shape[:2]
        t = np.radians(rng.uniform(0, 360))
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], dtype=np.float32)
        centre = rng.uniform((0.2 * w, 0.2 * h), (0.8 * w, 0.8 * h))
        quad = ((src - (cw / 2, ch / 2)) @ rot.T + centre).astype(np.float32)
        inside = quad.min() >= 2 and quad[:, 0].max() <= w - 2 and quad[:, 1].max() <= h - 2
        apart = all(np.linalg.norm(quad.mean(0) - q.mean(0)) > 0.8 * size for q in quads)
        if not (inside and apart):
            continue
        m = cv2.getPerspectiveTransform(src, quad)
        mask = cv2.warpPerspective(np.full((ch, cw), 255, np.uint8), m, (w, h)) > 127
        img[mask] = cv2.warpPerspective(card, m, (w, h))[mask]
        quads.append(quad)
    return img, quads


def _write_dataset(root: Path, n_train: int, n_val: int) -> Path:
    """An ultralytics OBB dataset (images + 'cls x1 y1 .. x4 y4' normalised labels) and data.yaml."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            img, quads = make_scene(rng, TRAIN_HW)
            cv2.imwrite(str(root / "images" / split / f"{i:04d}.jpg"), img[..., ::-1])
            norm = [(q / (TRAIN_HW[1], TRAIN_HW[0])).reshape(-1) for q in quads]
            lines = ["0 " + " ".join(f"{v:.6f}" for v in q) for q in norm]
            (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: card\n")
    return data


def _train_and_export(work: Path) -> Path:
    """Train YOLO11n-OBB from its yaml (offline, CPU) and export a static 320 ONNX."""
    torch = pytest.importorskip("torch")
    ultralytics = pytest.importorskip("ultralytics")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    data = _write_dataset(work / "data", n_train=64, n_val=4)
    model = ultralytics.YOLO("yolo11n-obb.yaml")
    model.train(
        data=str(data),
        imgsz=IMGSZ,
        epochs=EPOCHS,
        batch=8,
        workers=0,
        device="cpu",
        plots=False,
        val=False,
        amp=False,
        mosaic=0.0,
        close_mosaic=0,
        warmup_epochs=0,
        optimizer="AdamW",
        lr0=0.005,
        seed=0,
        verbose=False,
        project=str(work / "runs"),
        name="parity",
        exist_ok=True,
    )
    onnx_path = model.export(format="onnx", imgsz=IMGSZ, opset=17, simplify=False, dynamic=False)
    return Path(onnx_path)


@pytest.fixture(scope="session")
def detector_onnx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained detector's ONNX file, trained once and kept in pytest's cache directory."""
    ultralytics = pytest.importorskip("ultralytics")
    cache = request.config.cache
    key = f"{CACHE_KEY}-{ultralytics.__version__}-e{EPOCHS}"
    cached = Path(cache.mkdir(key.replace("/", "-"))) / "detector.onnx" if cache else None
    if cached is not None and cached.is_file():
        return cached
    onnx_path = _train_and_export(tmp_path_factory.mktemp("detector"))
    if cached is None:
        return onnx_path
    shutil.copyfile(onnx_path, cached)
    return cached


@pytest.fixture(scope="session")
def frames() -> list[npt.NDArray[np.uint8]]:
    """New frames (a seed the training never saw) at camera sizes, as RGB."""
    rng = np.random.default_rng(12345)
    return [
        make_scene(rng, hw)[0] for hw in [(720, 1280)] * 6 + [(480, 640)] * 2 + [(1080, 810)] * 2
    ]


@pytest.fixture(scope="session")
def both(
    detector_onnx: Path, frames: list[npt.NDArray[np.uint8]]
) -> Iterator[list[tuple[Any, Any]]]:
    """(ours, theirs) per frame: our boxes, and ultralytics' (corners 4x2, conf) per box."""
    ultralytics = pytest.importorskip("ultralytics")
    from edge.backends.onnx import OnnxBackend

    backend = OnnxBackend(detector_onnx, threads=1)
    spec = DetectorSpec(
        file=detector_onnx.name,
        sha256="0" * 64,
        input=InputSpec(height=IMGSZ, width=IMGSZ, resize="letterbox"),
        output_name="output0",
    )
    detector = Detector(backend, spec, Thresholds(det_conf=CONF, det_iou=IOU))
    yolo = ultralytics.YOLO(str(detector_onnx), task="obb")
    pairs = []
    for rgb in frames:
        ours = detector(rgb)
        (result,) = yolo.predict(
            rgb[..., ::-1].copy(), imgsz=IMGSZ, conf=CONF, iou=IOU, verbose=False
        )
        theirs = [
            (np.asarray(c, dtype=np.float32), float(s))
            for c, s in zip(result.obb.xyxyxyxy.numpy(), result.obb.conf.numpy(), strict=True)
        ]
        pairs.append((ours, theirs))
    yield pairs
    backend.close()


def _canonical(corners: Quad, hw: tuple[int, int]) -> Quad:
    """Corners clipped to the frame and sorted, so two orderings of one box compare equal."""
    pts = np.array(corners, dtype=np.float32)
    pts[:, 0] = pts[:, 0].clip(0, hw[1])
    pts[:, 1] = pts[:, 1].clip(0, hw[0])
    return pts[np.lexsort((pts[:, 1], pts[:, 0]))]


def test_the_trained_detector_really_finds_cards(
    both: list[tuple[Any, Any]], frames: list[npt.NDArray[np.uint8]]
) -> None:
    # given new frames with cards in them (ground truth regenerated from the same seed)
    rng = np.random.default_rng(12345)
    truth = [make_scene(rng, f.shape[:2])[1] for f in frames]
    # then most true cards have a detected box whose centre is within a quarter card of theirs
    hits = total = 0
    for (ours, _), quads in zip(both, truth, strict=True):
        centres = [b.corners.mean(axis=0) for b in ours]
        for q in quads:
            total += 1
            size = np.linalg.norm(q[0] - q[1])
            hits += any(np.linalg.norm(c - q.mean(axis=0)) < 0.25 * size for c in centres)
    assert hits >= 0.5 * total, f"found {hits} of {total} cards"


def _match(ours: list[Any], theirs: list[tuple[Quad, float]], hw: tuple[int, int]) -> list[float]:
    """Pair each of our boxes with the nearest unpaired ultralytics box; worst corner error each."""
    left = list(range(len(theirs)))
    errors = []
    for box in ours:
        mine = _canonical(box.corners, hw)
        dist = [float(np.abs(mine - _canonical(theirs[k][0], hw)).max()) for k in left]
        best = left.pop(int(np.argmin(dist)))
        assert abs(box.conf - theirs[best][1]) <= 0.01
        errors.append(min(dist))
    return errors


def test_same_boxes_as_ultralytics(
    both: list[tuple[Any, Any]], frames: list[npt.NDArray[np.uint8]]
) -> None:
    # then every frame has as many boxes, each matched within 2 px and 0.01 confidence
    assert sum(len(ours) for ours, _ in both) > 0
    for (ours, theirs), frame in zip(both, frames, strict=True):
        assert len(ours) == len(theirs)
        errors = _match(ours, theirs, frame.shape[:2])
        assert max(errors, default=0.0) <= 2.0
