"""Calibration sets: the runtime's one preprocessing, NHWC float32 0-255, enough images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bundles.manifest import InputSpec
from training.calib import CalibrationError, build_calibration_set, calib_sample

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def _write_images(folder: Path, n: int, h: int = 40, w: int = 30) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append(img)
    return images


def test_embedder_sample_is_raw_pixels_nhwc_float_not_normalised() -> None:
    # given a crop already at the model size and an ImageNet-normalised spec
    img = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    spec = InputSpec(height=40, width=30, mean=MEAN, std=STD)
    # when made a calibration sample
    sample = calib_sample(img, spec)
    # then it is the pixels themselves (normalisation lives in the model script), float32 NHWC
    assert sample.dtype == np.float32
    assert sample.shape == (40, 30, 3)
    np.testing.assert_array_equal(sample, img.astype(np.float32))


def test_bgr_model_gets_bgr_calibration() -> None:
    img = np.random.default_rng(2).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    sample = calib_sample(img, InputSpec(height=8, width=6, color_order="BGR"))
    np.testing.assert_array_equal(sample, img[..., ::-1].astype(np.float32))


def test_detector_sample_is_letterboxed_with_grey_padding() -> None:
    # given a wide frame and a square letterbox spec
    img = np.full((50, 100, 3), 7, dtype=np.uint8)
    sample = calib_sample(img, InputSpec(height=64, width=64, resize="letterbox"))
    # then the frame sits centred with 114 grey above and below
    assert sample.shape == (64, 64, 3)
    assert sample[0, 0, 0] == 114.0
    assert sample[32, 32, 0] == 7.0


def test_set_is_written_as_nhwc_float32_npy(tmp_path: Path) -> None:
    images = _write_images(tmp_path / "imgs", 6)
    spec = InputSpec(height=40, width=30, mean=MEAN, std=STD)
    out = build_calibration_set(
        tmp_path / "imgs", spec, tmp_path / "embedder.npy", count=6, min_images=6
    )
    arr = np.load(out)
    assert arr.shape == (6, 40, 30, 3)
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr[0], images[0].astype(np.float32))


def test_too_few_images_is_refused(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs", 3)
    spec = InputSpec(height=40, width=30)
    with pytest.raises(CalibrationError):
        build_calibration_set(tmp_path / "imgs", spec, tmp_path / "x.npy")


def test_default_minimum_is_1024() -> None:
    from training.calib import MIN_IMAGES

    assert MIN_IMAGES >= 1024
