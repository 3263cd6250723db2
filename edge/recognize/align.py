"""A verified homography refined on the reference's own pixels, for telling printings apart.

A homography fitted to a reference's keypoints is as good as their spread: with a compact
reference file (edge.recognize.repeatable: 200 features a card) it can sit a few px off at the
card's far corners, where the set symbol and collector number are, and the small print that
tells same-art printings apart (edge.recognize.reprints) is compared against the wrong pixels.
The references that need telling apart carry a grey detail image at the canvas's resolution;
dense alignment of the crop onto it (enhanced correlation, OpenCV's findTransformECC, under a
homography) takes the remaining px out. Refined only where the printings are compared, once per
comparison; a refinement that does not converge, correlates poorly or moves a corner further
than a keypoint fit can be wrong by keeps the keypoints' homography.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge.recognize.features import FeatureSpec
from edge.recognize.verify import Homography, canvas_quad, frame_onto, project
from edge.types import ImageRGB

ITERATIONS = 40
EPSILON = 1e-4
MIN_CORRELATION = 0.6  # ECC's correlation of the aligned crop with the detail, [-1, 1]
MAX_SHIFT = 0.06  # of the canvas's short side: the most a refinement may move a corner
SMOOTH = 5  # ECC's Gaussian filter size (px): noise and JPEG blocks out of the gradients


def refined(
    image: ImageRGB, warp: Homography, h: Homography, detail: npt.NDArray[np.uint8],
    spec: FeatureSpec,
) -> Homography:  # fmt: skip
    """`h` (reference canvas -> crop canvas, as verification gives it) refined by aligning the
    frame, mapped onto the canvas through `warp` and `h`, with the reference's grey `detail`; `h`
    itself where the refinement fails its checks."""
    size = (spec.height, spec.width)
    if detail.shape[:2] != size:
        return h
    raw, valid = frame_onto(image, warp, h, size, spec)
    grey = cv2.cvtColor(raw, cv2.COLOR_RGB2GRAY)
    mask = valid.astype(np.uint8)
    if mask.sum() < 0.5 * mask.size:
        return h
    start = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ITERATIONS, EPSILON)
    try:
        cc, found = cv2.findTransformECC(
            detail, grey, start, cv2.MOTION_HOMOGRAPHY, criteria, mask, SMOOTH
        )
    except cv2.error:  # did not converge, or the images hold nothing to align by
        return h
    w = np.asarray(found, np.float64)
    if not np.isfinite(w).all() or cc < MIN_CORRELATION:
        return h
    canvas = canvas_quad(spec)
    moved = np.linalg.norm(project(w, canvas) - canvas, axis=1).max()
    if moved > MAX_SHIFT * min(spec.width, spec.height):
        return h
    # ECC's w maps a detail pixel to where it lies in the aligned crop (canvas px)
    out: Homography = h @ w
    return out
