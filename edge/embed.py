"""Embedder: preprocess -> forward -> L2 normalise.

`preprocess` is the ONE implementation of the model-input transform. Training, calibration and
export import it from here (never copy it): a predecessor's compiled model was wrong because its
calibration set skipped the training normalisation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.manifest import InputSpec
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


def preprocess(
    images: Sequence[ImageRGB] | npt.NDArray[np.uint8],
    spec: InputSpec,
    *,
    normalize: bool = True,
) -> npt.NDArray[Any]:
    """RGB uint8 images (N x H x W x 3, already spec.height x spec.width) -> model input batch.

    With `normalize=False` the result is NHWC float32 in 0-255 units in the model's colour order:
    the domain of a Hailo calibration set when mean/std live inside the compiled model.
    """
    batch = np.asarray(images, dtype=np.uint8) if not isinstance(images, np.ndarray) else images
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"expected N x H x W x 3 uint8 RGB, got shape {batch.shape}")
    if batch.shape[1:3] != (spec.height, spec.width):
        batch = np.stack(
            [
                cv2.resize(img, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
                for img in batch
            ]
        )
    if spec.color_order == "BGR":
        batch = batch[..., ::-1]
    if spec.dtype == "uint8":
        out: npt.NDArray[Any] = np.ascontiguousarray(batch, dtype=np.uint8)
    elif not normalize:
        return np.ascontiguousarray(batch, dtype=np.float32)
    else:
        mean = np.asarray(spec.mean, dtype=np.float32)
        inv_std = 1.0 / np.asarray(spec.std, dtype=np.float32)
        out = (batch.astype(np.float32) - mean) * inv_std
    if spec.layout == "NCHW":
        out = out.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out)


def l2_normalize(vectors: FloatArray, eps: float = 1e-12) -> FloatArray:
    """Row-wise L2 normalisation; zero rows stay zero rather than becoming NaN."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    out: FloatArray = (v / np.maximum(norms, eps)).astype(np.float32)
    return out
