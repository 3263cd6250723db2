"""Corner ordering and the perspective warp of a detected card to an upright portrait crop."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge.recognize.rectify import order_corners, rectify, rotate180, warp_card
from edge.types import OrientedBox

CARD_H, CARD_W = 176, 126  # a 63:88 card image
OUT_H, OUT_W = 224, 160
MARK = 16  # side of the red square in the card's top-left corner


def _card() -> npt.NDArray[np.uint8]:
    """A grey card with a red square marking its top-left corner."""
    card = np.full((CARD_H, CARD_W, 3), 90, dtype=np.uint8)
    card[:MARK, :MARK] = (255, 0, 0)
    return card


def _placed(angle_deg: float, centre: tuple[float, float] = (320, 240)) -> npt.NDArray[np.float32]:
    """The card's TL, TR, BR, BL corners in a scene, turned clockwise by angle_deg about centre."""
    src = np.array([[0, 0], [CARD_W, 0], [CARD_W, CARD_H], [0, CARD_H]], dtype=np.float32)
    t = np.radians(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], dtype=np.float32)
    return ((src - (CARD_W / 2, CARD_H / 2)) @ rot.T + centre).astype(np.float32)


def _scene(corners: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The marked card warped into a 640x480 dark scene at the given corners."""
    src = np.array([[0, 0], [CARD_W, 0], [CARD_W, CARD_H], [0, CARD_H]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(src, corners)
    scene = np.full((480, 640, 3), 20, dtype=np.uint8)
    warped = cv2.warpPerspective(_card(), m, (640, 480), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((CARD_H, CARD_W), 255, np.uint8), m, (640, 480))
    scene[mask > 127] = warped[mask > 127]
    return scene


def _mark_centre(crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    red = (crop[..., 0] > 180) & (crop[..., 1] < 80)
    ys, xs = np.nonzero(red)
    return np.array([xs.mean(), ys.mean()])


EXPECTED_MARK = np.array([MARK / 2 * OUT_W / CARD_W, MARK / 2 * OUT_H / CARD_H])


def _shuffled(corners: npt.NDArray[np.float32], seed: int = 0) -> npt.NDArray[np.float32]:
    return corners[np.random.default_rng(seed).permutation(4)]


# --- order_corners ---------------------------------------------------------------------------


def test_order_corners_of_an_upright_portrait_card() -> None:
    corners = _placed(0)
    np.testing.assert_allclose(order_corners(_shuffled(corners)), corners)


@pytest.mark.parametrize("angle", [-40, -15, 10, 30, 44])
def test_order_corners_of_a_tilted_portrait_card(angle: float) -> None:
    corners = _placed(angle)
    np.testing.assert_allclose(order_corners(_shuffled(corners, seed=int(angle) + 50)), corners)


def test_order_corners_of_an_upside_down_card_starts_at_the_image_top() -> None:
    # given a card turned by 180 degrees (its own top-left is now bottom-right)
    corners = _placed(180)
    # when ordered
    ordered = order_corners(_shuffled(corners))
    # then the order is the upright one: the 180-degree ambiguity is left to the index
    np.testing.assert_allclose(ordered, np.roll(corners, 2, axis=0), atol=1e-4)


@pytest.mark.parametrize("angle", [90, 80, 100, 270])
def test_order_corners_of_a_landscape_card_is_portrait_and_clockwise(angle: float) -> None:
    # given a card lying on its side
    ordered = order_corners(_shuffled(_placed(angle)))
    # then the first edge is a short side and the order runs clockwise on screen (y down)
    edges = np.linalg.norm(ordered - np.roll(ordered, -1, axis=0), axis=1)
    np.testing.assert_allclose(edges, [CARD_W, CARD_H, CARD_W, CARD_H], rtol=1e-4)
    x, y = ordered[:, 0], ordered[:, 1]
    assert float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) > 0


# --- warp ----------------------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0, 25, -35])
def test_rectify_puts_the_marked_corner_at_the_crop_top_left(angle: float) -> None:
    # given a marked card placed at an angle in a scene, detected with unordered corners
    corners = _placed(angle)
    box = OrientedBox(corners=_shuffled(corners), conf=0.9)
    # when rectified
    crop = rectify(_scene(corners), box, OUT_H, OUT_W)
    # then the crop is portrait and the mark sits where it sits on the card, within 1 px
    assert crop.image.shape == (OUT_H, OUT_W, 3) and crop.box is box
    np.testing.assert_allclose(_mark_centre(crop.image), EXPECTED_MARK, atol=1.0)


def test_rectify_turns_a_landscape_card_upright() -> None:
    # given a card lying on its side (turned 90 degrees clockwise)
    corners = _placed(90)
    crop = rectify(_scene(corners), OrientedBox(corners=_shuffled(corners), conf=0.9), OUT_H, OUT_W)
    # then the crop is a portrait card, the right way up or upside down, and its twin the other
    assert crop.image.shape == (OUT_H, OUT_W, 3)
    found = _mark_centre(crop.image)
    upright = crop.image if np.linalg.norm(found - EXPECTED_MARK) < 20 else rotate180(crop.image)
    np.testing.assert_allclose(_mark_centre(upright), EXPECTED_MARK, atol=1.0)


def test_warp_card_maps_corners_to_the_crop_corners() -> None:
    # given an image with single bright pixels at four corners of a quadrilateral
    img = np.zeros((100, 100, 3), dtype=np.uint8)
    quad = np.array([[10, 20], [60, 20], [60, 90], [10, 90]], dtype=np.float32)
    for x, y in quad.astype(int):
        img[y, x] = 255
    # when warped to the quadrilateral's own size
    crop = warp_card(img, quad, 71, 51)
    # then those pixels are the crop's corners
    assert crop[0, 0, 0] == crop[0, -1, 0] == crop[-1, -1, 0] == crop[-1, 0, 0] == 255


def test_rotate180_is_its_own_inverse() -> None:
    crop = np.random.default_rng(0).integers(0, 256, (OUT_H, OUT_W, 3), dtype=np.uint8)
    twin = rotate180(crop)
    assert twin[0, 0].tolist() == crop[-1, -1].tolist()
    np.testing.assert_array_equal(rotate180(twin), crop)
