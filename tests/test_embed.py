"""edge.recognize.embed.preprocess: the one model-input transform, checked against the textbook formula."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundles.manifest import InputSpec
from edge.recognize.embed import preprocess


def _spec(color_order: str, layout: str) -> InputSpec:
    return InputSpec(
        height=12,
        width=8,
        resize="warp",
        color_order=color_order,  # type: ignore[arg-type]
        layout=layout,  # type: ignore[arg-type]
        mean=(123.675, 0.0, 103.53),  # one zero mean: x - 0 must stay exact
        std=(58.395, 57.12, 57.375),
    )


@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("n", [1, 5])
def test_preprocess_is_the_textbook_normalisation_bit_for_bit(
    color_order: str, layout: str, n: int
) -> None:
    # given a batch of RGB crops and an input spec
    spec = _spec(color_order, layout)
    batch = np.random.default_rng(n).integers(0, 256, (n, 12, 8, 3), dtype=np.uint8)
    # when preprocessed
    ours = preprocess(batch, spec)
    # then it is (x - mean) * (1 / std) in float32, in the model's colour order and layout
    x = batch[..., ::-1] if color_order == "BGR" else batch
    mean = np.asarray(spec.mean, np.float32)
    inv_std = np.float32(1) / np.asarray(spec.std, np.float32)
    expected = (x.astype(np.float32) - mean) * inv_std
    if layout == "NCHW":
        expected = expected.transpose(0, 3, 1, 2)
    assert ours.dtype == np.float32 and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, expected)


def test_preprocess_writes_into_a_region_of_a_larger_tensor() -> None:
    # given a larger tensor and a crop that fills one region of it
    spec = _spec("RGB", "NCHW")
    crop = np.random.default_rng(0).integers(0, 256, (1, 12, 8, 3), dtype=np.uint8)
    big = np.full((1, 3, 20, 8), -7.0, np.float32)
    # when preprocessed into that region
    preprocess(crop, spec, out=big[:, :, 4:16])
    # then the region holds the result and the rest is untouched
    np.testing.assert_array_equal(big[:, :, 4:16], preprocess(crop, spec))
    assert (big[:, :, :4] == -7).all() and (big[:, :, 16:] == -7).all()


def test_preprocess_writes_into_a_strided_region_of_each_image() -> None:
    # given a wider tensor (grey bars left and right, as for a portrait frame) and two crops
    spec = _spec("BGR", "NCHW")
    crops = np.random.default_rng(1).integers(0, 256, (2, 12, 8, 3), dtype=np.uint8)
    big = np.full((2, 3, 12, 14), -7.0, np.float32)
    # when preprocessed into the middle columns (rows of the region are not contiguous)
    preprocess(crops, spec, out=big[:, :, :, 3:11])
    # then every image's region holds its result and the bars are untouched
    np.testing.assert_array_equal(big[:, :, :, 3:11], preprocess(crops, spec))
    assert (big[..., :3] == -7).all() and (big[..., 11:] == -7).all()
