"""Typed views of OpenCV results: cv2's stubs return loose array types, the synth code wants
uint8 images and float32 fields. np.asarray with the dtype copies nothing when it already fits."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edge.types import ImageRGB

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def u8(x: Any) -> ImageRGB:
    """The array as uint8 (no copy when it already is)."""
    return np.asarray(x, dtype=np.uint8)


def f32(x: Any) -> F32:
    """The array as float32 (no copy when it already is)."""
    return np.asarray(x, dtype=np.float32)


def f64(x: Any) -> F64:
    """The array as float64 (no copy when it already is)."""
    return np.asarray(x, dtype=np.float64)
