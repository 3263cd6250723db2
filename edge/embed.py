"""Embedder: preprocess -> forward -> L2 normalise.

`preprocess` is the ONE implementation of the model-input transform. Training, calibration and
export import it from here (never copy it): a predecessor's compiled model was wrong because its
calibration set skipped the training normalisation.
"""

from __future__ import annotations

import functools
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
    out: FloatArray | None = None,
) -> npt.NDArray[Any]:
    """RGB uint8 images (N x H x W x 3, already spec.height x spec.width) -> model input batch.

    With `normalize=False` the result is NHWC float32 in 0-255 units in the model's colour order:
    the domain of a Hailo calibration set when mean/std live inside the compiled model.
    `out` (normalised float32 only) receives the result in place, e.g. a region of a larger tensor.
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
    if out is not None and (spec.dtype != "float32" or not normalize):
        raise ValueError("out= is only for normalised float32 inputs")
    if spec.dtype == "uint8":
        if spec.color_order == "BGR":
            batch = batch[..., ::-1]
        laid: npt.NDArray[Any] = batch.transpose(0, 3, 1, 2) if spec.layout == "NCHW" else batch
        return np.ascontiguousarray(laid, dtype=np.uint8)
    if not normalize:
        return np.ascontiguousarray(
            batch[..., ::-1] if spec.color_order == "BGR" else batch, np.float32
        )
    return _normalize(batch, spec, out)


def pixel_spec(spec: InputSpec) -> InputSpec:
    """The input of a backend that normalises on the device (a HEF with mean/std in its model
    script): uint8 NHWC pixels in the model's colour order. `preprocess` with it gives exactly
    the pixels the chip would otherwise get back from the normalised float tensor."""
    return spec.model_copy(update={"dtype": "uint8", "layout": "NHWC"})


def takes_pixels(backend: object) -> bool:
    """Whether a backend's `run` wants raw device pixels rather than the normalised tensor."""
    return bool(getattr(backend, "takes_pixels", False))


def _normalize(
    batch: npt.NDArray[np.uint8], spec: InputSpec, out: FloatArray | None = None
) -> FloatArray:
    """(pixel - mean) / std per channel, written once into the output layout.

    Same float32 arithmetic as the textbook `(x.astype(f32) - mean) * (1 / std)`, but one channel
    of the whole batch per ufunc call, written straight into its output plane: no full-tensor
    temporaries, and a frame's batch of crops costs six calls, not six per crop. A single NCHW
    image (the detector's frame) instead maps each plane through a 256-entry table of the same
    float32 values (cv2.LUT): one pass over the pixels per channel and no ufunc setup.
    """
    src_channel = (2, 1, 0) if spec.color_order == "BGR" else (0, 1, 2)
    n, h, w, _ = batch.shape
    shape = (n, h, w, 3) if spec.layout == "NHWC" else (n, 3, h, w)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be {shape} float32, got {out.shape} {out.dtype}")
    if n == 1 and spec.layout == "NCHW":  # one frame: one table lookup per plane, no ufuncs
        planes = cv2.split(batch[0])
        for c, table in enumerate(_channel_tables(tuple(spec.mean), tuple(spec.std))):
            cv2.LUT(planes[src_channel[c]], table, dst=out[0, c])
        return out
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NHWC":
        nhwc = batch[..., list(src_channel)] if spec.color_order == "BGR" else batch
        np.subtract(nhwc, mean, out=out, dtype=np.float32)
        np.multiply(out, inv_std, out=out)
        return out
    channels = batch.transpose(0, 3, 1, 2)  # a strided view: each ufunc reads one channel
    for c in range(3):
        src, dst = channels[:, src_channel[c]], out[:, c]
        if mean[c] == 0.0:  # x - 0 is exact: skip the pass
            np.multiply(src, inv_std[c], out=dst, dtype=np.float32)
        else:
            np.subtract(src, mean[c], out=dst, dtype=np.float32)
            np.multiply(dst, inv_std[c], out=dst)
    return out


@functools.lru_cache(maxsize=16)
def _channel_tables(
    mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per channel, the normalised value of each of the 256 pixel values: the same float32
    arithmetic as `_normalize`'s ufuncs (x - 0 is exact, so a zero mean changes nothing)."""
    mean32 = np.asarray(mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(std, dtype=np.float32)
    levels = np.arange(256, dtype=np.float32)
    first, second, third = (
        ((levels - mean32[c]) * inv_std[c]).astype(np.float32) for c in range(3)
    )
    return first, second, third


def l2_normalize(vectors: FloatArray, eps: float = 1e-12) -> FloatArray:
    """Row-wise L2 normalisation; zero rows stay zero rather than becoming NaN."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", v, v))[:, None]  # two calls, not linalg.norm's six
    out: FloatArray = v / np.maximum(norms, np.float32(eps))
    return out
