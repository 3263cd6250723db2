"""Refining a verified homography on the reference's detail image (edge.recognize.align)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.recognize.align import refined
from edge.recognize.features import FeatureSpec
from edge.recognize.verify import project
from tests.card_renders import rendered_cards

SPEC = FeatureSpec()
CANVAS = np.array([[0, 0], [SPEC.width, 0], [SPEC.width, SPEC.height], [0, SPEC.height]], float)


@pytest.fixture(scope="module")
def card() -> np.ndarray:
    [image] = rendered_cards(1, 5).values()
    return image


def _scene(card: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, the detail image, the true reference-canvas -> frame homography): the card seen
    tilted in a 640 x 480 frame, its warp to the crop canvas the identity."""
    detail = cv2.cvtColor(
        cv2.resize(card, (SPEC.width, SPEC.height), interpolation=cv2.INTER_AREA),
        cv2.COLOR_RGB2GRAY,
    )
    quad = np.array([[210, 60], [430, 90], [450, 420], [180, 400]], np.float32)
    truth = cv2.getPerspectiveTransform(CANVAS.astype(np.float32), quad).astype(np.float64)
    big = cv2.resize(card, (SPEC.width, SPEC.height), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 90, np.uint8)
    cv2.warpPerspective(big, truth, (640, 480), frame, flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_TRANSPARENT)  # fmt: skip
    return frame, detail, truth


def test_a_homography_a_few_px_off_is_brought_onto_the_pixels(card: np.ndarray) -> None:
    # given a frame of the card, and its homography 3-5 px wrong at the corners (as a keypoint
    # fit on a compact reference is), the crop's warp being the identity
    frame, detail, truth = _scene(card)
    off = CANVAS + np.array([[4, -3], [-5, 2], [3, 4], [-2, -5]], float)
    wrong = truth @ cv2.getPerspectiveTransform(
        CANVAS.astype(np.float32), off.astype(np.float32)
    ).astype(np.float64)
    before = np.linalg.norm(project(wrong, CANVAS) - project(truth, CANVAS), axis=1).max()
    # when refined on the detail image
    got = refined(frame, np.eye(3), wrong, detail, SPEC)
    # then its corners land within a px of the truth
    after = np.linalg.norm(project(got, CANVAS) - project(truth, CANVAS), axis=1).max()
    assert before > 4.0
    assert after < 1.0, (before, after)


def test_nothing_to_align_by_keeps_the_keypoints_homography(card: np.ndarray) -> None:
    # given a frame where the card is not (a flat table), and one where another picture is
    frame, detail, truth = _scene(card)
    flat = np.full_like(frame, 120)
    noise = np.random.default_rng(0).integers(0, 256, frame.shape, dtype=np.uint8)
    # then the homography comes back as it was
    assert np.array_equal(refined(flat, np.eye(3), truth, detail, SPEC), truth)
    assert np.array_equal(refined(noise, np.eye(3), truth, detail, SPEC), truth)
    # and a detail of another size is not used
    assert np.array_equal(refined(frame, np.eye(3), truth, detail[:100], SPEC), truth)
