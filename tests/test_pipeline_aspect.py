"""A card tilted far back along its long axis projects nearly square or even landscape, so the
detector's box can start on the wrong side: the Recognizer also tries such boxes turned 90 degrees
and keeps the orientation that matches better."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import RuntimeSettings
from edge.recognize.recognizer import Recognizer
from edge.recognize.rectify import ambiguous_aspect, turned_90
from edge.types import OrientedBox
from tests import bundle_factory
from tests.bundle_factory import card_images_for

factory_bundle = bundle_factory.factory_bundle

SETTINGS = RuntimeSettings(onnx_threads=1, backend="onnx")


@pytest.fixture(scope="module")
def rec(factory_bundle: Path) -> Iterator[Recognizer]:
    recognizer = Recognizer.from_bundle(factory_bundle, SETTINGS)
    yield recognizer
    recognizer.close()


def _quad(w: float, h: float, x0: float = 100, y0: float = 80) -> np.ndarray:
    return np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], np.float32)


def test_portrait_card_seen_flat_is_not_ambiguous() -> None:
    # given a box with the card's own 63:88 aspect
    corners = _quad(63 * 3, 88 * 3)
    # then it is trusted as ordered
    assert not ambiguous_aspect(corners)


def test_foreshortened_card_is_ambiguous_either_way_round() -> None:
    # given a card whose long side is foreshortened to about its short side
    assert ambiguous_aspect(_quad(190, 200))
    assert ambiguous_aspect(_quad(200, 190))


def test_turned_90_starts_one_corner_later() -> None:
    # given an ordered box
    box = OrientedBox(_quad(10, 20), 0.9)
    # when it is turned
    turned = turned_90(box)
    # then the old top-right is the new top-left and the confidence is kept
    np.testing.assert_array_equal(turned.corners[0], box.corners[1])
    np.testing.assert_array_equal(turned.corners[3], box.corners[0])
    assert turned.conf == box.conf


def test_squashed_card_ordered_the_wrong_way_is_identified(
    rec: Recognizer, factory_bundle: Path
) -> None:
    # given a frame holding each self-test card squashed along its long axis (tilted back ~50
    # degrees), and a box ordered so that its first edge is the card's LEFT side (90 degrees off)
    for card_id, scan in card_images_for(factory_bundle).items():
        h, w = scan.shape[:2]
        frame = np.full((400, 500, 3), 40, np.uint8)
        dst = _quad(w * 0.9, h * 0.62)  # card width 0.9 w, long side foreshortened to 0.62 h
        m = cv2.getPerspectiveTransform(_quad(w, h, 0, 0), dst)
        cv2.warpPerspective(scan, m, (500, 400), frame, borderMode=cv2.BORDER_TRANSPARENT)
        wrong = OrientedBox(np.roll(dst, 1, axis=0), 0.9)  # starts at the card's bottom-left
        assert ambiguous_aspect(wrong.corners)
        # when the Recognizer matches the box
        cards, _ = rec.recognise(frame, [wrong])
        # then the card is found, with its corners back in the card's own order
        assert cards[0].match.card_id == card_id
        np.testing.assert_allclose(cards[0].box.corners, dst)
