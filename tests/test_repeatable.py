"""Choosing a reference's keypoints by how often simulated camera views find them again.

The views are real renders of the synthetic world's cards, shrunk, tilted, degraded and warped
back as the device warps a crop; the counts come from the verifier's own matching.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from edge.recognize.features import (
    Extractor,
    Features,
    FeatureSpec,
    distinctive,
)
from edge.recognize.repeatable import (
    COVER_GRID,
    COVER_SHARE,
    camera_view,
    most_repeated,
    reference_features,
    repeat_counts,
)
from edge.recognize.verify import FeaturesInMemory, Verifier
from tests.card_renders import rendered_cards

SPEC = FeatureSpec(n_features=150)


@pytest.fixture(scope="module")
def cards() -> dict[str, np.ndarray]:
    return rendered_cards(6, 4)


def test_a_camera_view_knows_where_every_canvas_point_went() -> None:
    # given a canvas with one bright dot on it
    h, w = SPEC.height, SPEC.width
    rng = np.random.default_rng(3)
    for _ in range(5):
        canvas = np.full((h, w), 40, np.uint8)
        x, y = rng.uniform(40, w - 40), rng.uniform(40, h - 40)
        cv2.circle(canvas, (round(x), round(y)), 6, 255, -1)
        # when it is seen as a simulated crop
        view, g = camera_view(canvas, rng)
        # then the dot is where the view's homography puts it, within a few canvas px
        expected = cv2.perspectiveTransform(np.array([[[x, y]]], np.float64), g).reshape(2)
        blurred = cv2.GaussianBlur(view.astype(np.float32), (0, 0), 4)
        found = np.unravel_index(int(np.argmax(blurred)), blurred.shape)[::-1]
        assert view.shape == (h, w)
        assert np.linalg.norm(np.array(found, float) - expected) < 6, (found, expected)


def test_coarse_features_outscore_fine_ones(cards) -> None:
    # given a canvas whose left half holds large shapes and its right half fine speckle
    rng = np.random.default_rng(0)
    h, w = SPEC.height, SPEC.width
    canvas = np.full((h, w), 128, np.uint8)
    for _ in range(14):
        cx, cy = int(rng.integers(10, w // 2 - 10)), int(rng.integers(10, h - 10))
        cv2.rectangle(canvas, (cx - 9, cy - 12), (cx + 9, cy + 12), int(rng.integers(0, 256)), -1)
    canvas[:, w // 2 :] = rng.integers(0, 256, (h, w - w // 2), np.uint8)
    ex = Extractor(replace(SPEC, n_features=600))
    pool = ex.extract(canvas)
    # when each keypoint's repeats are counted over views of the canvas
    hits = repeat_counts(canvas, pool, Extractor(replace(SPEC, n_features=1000)), views=8)
    left = pool.points[:, 0] < w // 2 - 8
    right = pool.points[:, 0] > w // 2 + 8
    # then the shapes' keypoints are found again far more often than the speckle's
    assert left.sum() > 10 and right.sum() > 10
    assert hits[left].mean() > 2 * hits[right].mean(), (hits[left].mean(), hits[right].mean())
    # and the same seed gives the same counts
    again = repeat_counts(canvas, pool, Extractor(replace(SPEC, n_features=1000)), views=8)
    assert np.array_equal(hits, again)


def test_most_repeated_keeps_the_top_counts_and_the_pool_order_among_equals() -> None:
    pts = np.arange(10, dtype=np.float32).reshape(5, 2)
    pool = Features(pts, np.arange(5, dtype=np.uint8).repeat(32).reshape(5, 32))
    got = most_repeated(pool, np.array([1, 3, 0, 3, 1], np.int32), 3, (336, 240))
    assert got.descriptors[:, 0].tolist() == [1, 3, 0]


def test_most_repeated_leaves_no_part_of_the_card_bare() -> None:
    # given a pool whose most repeated features all lie in the art (top third of the canvas) and
    # less repeated ones over the text box and edges below it
    rng = np.random.default_rng(0)
    top = np.column_stack([rng.uniform(0, 240, 300), rng.uniform(0, 110, 300)])
    low = np.column_stack([rng.uniform(0, 240, 300), rng.uniform(110, 336, 300)])
    pool = Features(np.vstack([top, low]).astype(np.float32), np.zeros((600, 32), np.uint8))
    hits = np.concatenate([np.full(300, 8), np.full(300, 2)]).astype(np.int32)
    # when 200 are kept
    got = most_repeated(pool, hits, 200, (336, 240))
    # then every cell of the cover grid has its quota, the rest is the most repeated, and the
    # order is still most repeated first
    rows, cols = COVER_GRID
    cell = (got.points[:, 1] * rows // 336).astype(int) * cols + (
        got.points[:, 0] * cols // 240
    ).astype(int)
    quota = int(COVER_SHARE * 200) // (rows * cols)
    assert len(got) == 200
    assert np.bincount(cell, minlength=rows * cols).min() >= quota
    kept_hits = np.where(got.points[:, 1] < 110, 8, 2)
    assert (np.diff(kept_hits) <= 0).all()
    assert (kept_hits == 8).sum() >= 200 - 9 * quota


def test_references_chosen_by_repeats_verify_small_tilted_crops_better(cards) -> None:
    # given the references built as bundles build them, and each scan's strongest distinctive
    # features alone (as bundles chose them before)
    chosen = dict(reference_features(cards.items(), SPEC))
    wide = Extractor(replace(SPEC, n_features=2 * SPEC.n_features))
    raw = [wide.extract(wide.gray(c)) for c in cards.values()]
    strongest = dict(zip(cards, distinctive(raw, SPEC.n_features), strict=True))
    # when each card is seen small and tilted (real renders, not the views that chose them)
    query = Extractor(replace(SPEC, n_features=1000))
    rng = np.random.default_rng(99)
    wins = []
    for card_id, card in cards.items():
        canvas = query.gray(card)
        for _ in range(3):
            view, _ = camera_view(canvas, rng)
            q = query.extract(view)
            a = Verifier(FeaturesInMemory(SPEC, chosen)).verify(q, card_id).inliers
            b = Verifier(FeaturesInMemory(SPEC, strongest)).verify(q, card_id).inliers
            wins.append((a, b))
    got = np.array(wins)
    # then the chosen features find more inliers, summed over the crops
    assert all(len(f) <= SPEC.n_features for f in chosen.values())
    assert got[:, 0].sum() > 1.2 * got[:, 1].sum(), got.sum(axis=0)
