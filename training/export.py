"""Export the student embedder to ONNX and prove the export computes what torch computes.

The graph takes exactly `edge.recognize.embed.preprocess(crops, spec)` (N x 3 x H x W float32, dynamic
batch, input "images") and returns output "embedding" (N x D, not normalised: the runtime
L2-normalises), plus a sidecar `<name>.json` (arch, dim, input spec) for the bundle. Parity: cosine >= 0.9999 between onnxruntime and torch on 64 images, each
preprocessed by the same function the device runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from edge.bundles.manifest import InputSpec
from edge.recognize.embed import preprocess
from edge.types import ImageRGB
from training.data import list_crops, read_rgb
from training.distill import load_student

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
OPSET = 17
PARITY_MIN_COSINE = 0.9999
PARITY_IMAGES = 64


class ParityError(RuntimeError):
    """The exported graph disagrees with the torch model beyond the tolerance."""


@dataclass(frozen=True)
class ExportResult:
    """What bundle_build needs to describe the exported embedder."""

    path: Path
    arch: str
    input_spec: InputSpec
    embedding_dim: int
    min_cosine: float
    parity_images: int


def parity_images(data: Path | None, spec: InputSpec, n: int = PARITY_IMAGES) -> list[ImageRGB]:
    """n crops from a cls folder when given (real inputs), topped up with seeded noise images."""
    images: list[ImageRGB] = []
    if data is not None and data.is_dir():
        samples = list_crops(data)
        step = max(1, len(samples) // n)
        images = [read_rgb(p, (spec.height, spec.width)) for p, _ in samples[::step][:n]]
    rng = np.random.default_rng(0)
    while len(images) < n:
        images.append(rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8))
    return images


def export_onnx(model: torch.nn.Module, spec: InputSpec, path: Path) -> None:
    """Trace the model to ONNX with a dynamic batch axis (TorchScript exporter, opset 17)."""
    model.eval()
    dummy = torch.zeros(2, 3, spec.height, spec.width)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(path)))


def check_parity(
    model: torch.nn.Module, path: Path, spec: InputSpec, images: Sequence[ImageRGB]
) -> float:
    """Lowest cosine between torch and onnxruntime embeddings over the images (batch of 8)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lowest = 1.0
    for start in range(0, len(images), 8):
        x = preprocess(np.stack(images[start : start + 8]), spec)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        lowest = min(lowest, float(cos.min()))
    return lowest


def export_embedder(checkpoint: Path, out: Path, data: Path | None = None) -> ExportResult:
    """Student checkpoint -> embedder.onnx, checked for parity; raises ParityError if it fails."""
    model, spec = load_student(checkpoint)
    export_onnx(model, spec, out)
    images = parity_images(data, spec)
    cosine = check_parity(model, out, spec, images)
    logger.info("embedder parity over %d images: min cosine %.6f", len(images), cosine)
    if cosine < PARITY_MIN_COSINE:
        raise ParityError(f"ONNX parity min cosine {cosine:.6f} < {PARITY_MIN_COSINE}")
    result = ExportResult(out, model.arch, spec, model.embed_dim, cosine, len(images))
    sidecar = {**describe(result), "input_spec": spec.model_dump(mode="json")}
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n", "utf-8")
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="student best.pt")
    p.add_argument("--out", type=Path, default=Path("embedder.onnx"), help="ONNX file to write")
    p.add_argument("--data", type=Path, default=None, help="a cls folder of crops for parity")


def main(args: argparse.Namespace) -> int:
    result = export_embedder(args.checkpoint, args.out, args.data)
    print(
        f"{result.path}: {result.arch}, dim {result.embedding_dim}, parity {result.min_cosine:.6f}"
    )
    return 0


def describe(result: ExportResult) -> dict[str, Any]:
    """Lineage entry for the bundle manifest."""
    return {
        "arch": result.arch,
        "embedding_dim": result.embedding_dim,
        "parity_min_cosine": round(result.min_cosine, 7),
        "parity_images": result.parity_images,
        "opset": OPSET,
    }
