"""`cardedge-train calib`: Hailo calibration sets built with the runtime's own preprocessing.

The Dataflow Compiler quantises on images in the domain *before* the in-network normalisation:
raw 0-255 pixels, NHWC float32, in the model's colour order, resized exactly as at run time.
Each set is produced from the bundle manifest's InputSpec through edge.recognize.embed.preprocess
(normalize=False) and, for the detector, edge.recognize.detect.letterbox, so calibration cannot drift from
what the device feeds the HEF (a predecessor's calibration skipped a step and its HEF was wrong).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import InputSpec, load_manifest
from edge.errors import EdgeError
from edge.recognize.embed import preprocess
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

Role = Literal["detector", "embedder"]
MIN_IMAGES = 1024
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class CalibrationError(EdgeError):
    code = "calibration_failed"


def list_images(root: Path) -> list[Path]:
    """Every image file under `root`, sorted for a reproducible set."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def read_rgb(path: Path) -> ImageRGB:
    """Read one image file as RGB uint8 (pixels are RGB everywhere inside cardedge)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CalibrationError(f"cannot read calibration image {path}")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def calib_sample(image: ImageRGB, spec: InputSpec) -> npt.NDArray[np.float32]:
    """One RGB image -> H x W x 3 float32 0-255 in the model's colour order (the DFC's input domain)."""
    if spec.resize == "letterbox":
        from edge.recognize.detect import letterbox

        image, _ = letterbox(image, (spec.height, spec.width))
    nhwc_spec = spec.model_copy(update={"layout": "NHWC", "dtype": "float32"})
    out: npt.NDArray[np.float32] = preprocess(image[None], nhwc_spec, normalize=False)[0]
    return out


def _pick(paths: Sequence[Path], count: int, seed: int) -> list[Path]:
    """`count` distinct paths, a seeded random subset when there are more."""
    if len(paths) <= count:
        return list(paths)
    idx = np.random.default_rng(seed).choice(len(paths), size=count, replace=False)
    return [paths[i] for i in sorted(idx)]


def _samples(paths: Sequence[Path], spec: InputSpec) -> Iterator[npt.NDArray[np.float32]]:
    for p in paths:
        yield calib_sample(read_rgb(p), spec)


def build_calibration_set(
    image_dir: Path,
    spec: InputSpec,
    out_file: Path,
    *,
    count: int = MIN_IMAGES,
    min_images: int = MIN_IMAGES,
    seed: int = 0,
) -> Path:
    """Write `count` preprocessed images to `out_file` (.npy, N x H x W x 3 float32), streamed to disk.

    Refuses fewer than `min_images` distinct images: the compiler's statistics need them.
    """
    paths = _pick(list_images(image_dir), count, seed)
    if len(paths) < min_images:
        raise CalibrationError(
            f"{image_dir} holds {len(paths)} images; a calibration set needs at least {min_images}",
            "point --images at more data (e.g. the synth dataset's calib/ or cls/train folder)",
        )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    shape = (len(paths), spec.height, spec.width, 3)
    arr: Any = np.lib.format.open_memmap(out_file, mode="w+", dtype=np.float32, shape=shape)
    for i, sample in enumerate(_samples(paths, spec)):
        arr[i] = sample
    arr.flush()
    del arr
    logger.info("calibration set %s: %d images %s", out_file, len(paths), shape[1:])
    return out_file


def build_bundle_calibration(
    bundle_dir: Path,
    out_dir: Path,
    images: dict[Role, Path],
    *,
    count: int = MIN_IMAGES,
    min_images: int = MIN_IMAGES,
) -> dict[Role, Path]:
    """One calibration set per model of the bundle, from each model's InputSpec in its manifest."""
    manifest = load_manifest(bundle_dir / "manifest.json")
    written: dict[Role, Path] = {}
    for role, image_dir in images.items():
        spec: InputSpec = getattr(manifest, role).input
        written[role] = build_calibration_set(
            image_dir, spec, out_dir / f"{role}.npy", count=count, min_images=min_images
        )
    return written


def _cmd(args: argparse.Namespace) -> int:
    images: dict[Role, Path] = {}
    if args.detector_images:
        images["detector"] = args.detector_images
    if args.embedder_images:
        images["embedder"] = args.embedder_images
    if not images:
        print("calib: give --detector-images and/or --embedder-images")
        return 2
    try:
        written = build_bundle_calibration(args.bundle, args.out, images, count=args.count)
    except EdgeError as e:
        print(f"calib: {e}")
        return 2
    for role, path in written.items():
        print(f"{role}: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `calib` to the cardedge-train command."""
    p = subparsers.add_parser(
        "calib", help="Hailo calibration sets from the bundle's preprocessing"
    )
    p.add_argument(
        "--bundle", type=Path, required=True, help="bundle whose manifest gives the specs"
    )
    p.add_argument("--out", type=Path, required=True, help="output dir: detector.npy, embedder.npy")
    p.add_argument(
        "--detector-images", type=Path, help="scene images (e.g. synth obb/images/train)"
    )
    p.add_argument("--embedder-images", type=Path, help="card crops (e.g. synth cls/train)")
    p.add_argument("--count", type=int, default=MIN_IMAGES, help="images per set (>= 1024)")
    p.set_defaults(func=_cmd)
