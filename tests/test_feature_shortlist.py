"""The local-feature shortlist: an inverted index over the reference features (edge.recognize.shortlist)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bundles.manifest import Thresholds
from edge.bundles.reference_features import thumbnail_image
from edge.config import RuntimeSettings
from edge.recognize.feature_file import ReferenceFeatures, write_reference_features
from edge.recognize.features import Features, FeatureSpec
from edge.recognize.repeatable import reference_features
from edge.recognize.shortlist import FeatureShortlist, merged, widened
from edge.recognize.verify_stage import VerifyStage
from edge.types import Candidate, CardMatch, Match, OrientedBox

SPEC = FeatureSpec(n_features=400)


def _synthetic(n_cards: int, per_card: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [f"c{i:05d}" for i in range(n_cards)]
    desc = rng.integers(0, 256, (n_cards * per_card, 32), dtype=np.uint8)
    return ids, desc, np.repeat(np.arange(n_cards, dtype=np.int64), per_card)


def _noisy(desc: np.ndarray, flips: int, rng: np.random.Generator) -> np.ndarray:
    """Each descriptor with `flips` of its 256 bits flipped (another view of the same point)."""
    bits = np.unpackbits(desc, axis=1)
    for row in bits:
        row[rng.choice(256, flips, replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def test_the_right_card_comes_first_among_thousands_on_features_alone() -> None:
    # given 3,000 cards of 200 random binary features each, and a crop that shows 120 of one
    # card's features seen again (about 8% of their bits changed) among 200 features of clutter
    ids, desc, owner = _synthetic(3000, 200, seed=1)
    index = FeatureShortlist(ids, desc, owner)
    rng = np.random.default_rng(2)
    hits = 0
    for card in rng.choice(3000, 20, replace=False):
        seen = _noisy(desc[owner == card][:120], 20, rng)
        clutter = rng.integers(0, 256, (200, 32), dtype=np.uint8)
        # when queried
        top = index.query(np.concatenate([clutter, seen]), k=10)
        hits += top[0].card_id == ids[card]
    # then the right card is the first candidate for every crop, and the scores are vote shares
    assert hits == 20
    assert 0 < top[0].score <= 1 and top[0].score > top[1].score


def test_bad_input_gives_an_empty_shortlist_never_an_exception() -> None:
    # given an index, and an index with no features at all
    ids, desc, owner = _synthetic(50, 40, seed=3)
    index = FeatureShortlist(ids, desc, owner)
    empty = FeatureShortlist(["a", "b"], np.zeros((0, 32), np.uint8), np.zeros(0, np.int64))
    bad = [
        None,
        np.zeros((0, 32), np.uint8),  # a crop with no descriptors
        np.zeros((10, 128), np.float32),  # SIFT-like floats
        np.zeros((10, 2), np.uint8),  # too narrow for the sampled bits
        np.zeros(32, np.uint8),  # not a matrix
        "not descriptors",
    ]
    # then every query is an empty list
    for d in bad:
        assert index.query(d) == [], d
    assert empty.query(desc[:40]) == []
    assert index.query(desc[:40], k=0) == []
    assert index.query(desc[:40], exclude=ids) == []


def test_merge_keeps_the_embedders_order_and_adds_only_new_cards() -> None:
    embedder = [Candidate("a", 0.9), Candidate("b", 0.8)]
    local = [Candidate("c", 0.4), Candidate("a", 0.3), Candidate("d", 0.1)]
    assert [c.card_id for c in merged(embedder, local)] == ["a", "b", "c", "d"]
    assert [c.card_id for c in merged(embedder, local, cap=3)] == ["a", "b", "c"]
    assert merged([], local) == local


def test_the_index_is_asked_only_once_the_embedders_candidates_are_spent() -> None:
    # given an index whose best card for a crop is also the embedder's first candidate
    ids, desc, owner = _synthetic(100, 50, seed=4)
    index = FeatureShortlist(ids, desc, owner)
    query = Features(np.zeros((50, 2), np.float32), desc[owner == 7])
    first = [Candidate(ids[7], 0.9), Candidate(ids[8], 0.8)]
    asked: list[bool] = []

    def needed(answer: bool):
        return lambda: asked.append(answer) or answer

    # when the embedder's candidates verify (nothing more needed), and when they do not
    done = list(widened(first, index, query, needed(False)))
    more = list(widened(first, index, query, needed(True)))
    # then the first is the embedder's list alone; the second adds the index's other cards,
    # without an embedding score, after the embedder's
    assert done == first and asked == [False, True]
    assert more[:2] == first and len(more) > 2
    assert all(c.card_id not in {ids[7], ids[8]} and c.score == 0.0 for c in more[2:])
    assert list(widened(first, None, query, needed(True))) == first


# --- in the verification stage, on rendered cards ------------------------------------------


@pytest.fixture(scope="module")
def cards() -> dict[str, np.ndarray]:
    """Forty distinct cards of one procedural catalogue (shared frame and text layout), RGB."""
    from training.synth.card_render import render_card
    from training.synth.catalogue import procedural_catalogue

    records = procedural_catalogue(40, 5, reprint_rate=0.0, near_duplicate_rate=0.0)
    return {r.card_id: render_card(r, 448) for r in records}


@pytest.fixture(scope="module")
def refs(cards: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("feat") / "features.bin"
    items = reference_features(cards.items(), SPEC)
    write_reference_features(path, SPEC, items, {c: thumbnail_image(im) for c, im in cards.items()})
    return ReferenceFeatures(path)


QUAD = np.array([[520, 240], [780, 260], [800, 620], [540, 640]], np.float32)


def _scene(card: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    table = cv2.resize(rng.integers(60, 120, (18, 32, 3), np.uint8), (1280, 720))
    h, w = card.shape[:2]
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    m = cv2.getPerspectiveTransform(src, QUAD)
    warped = cv2.warpPerspective(card, m, (1280, 720))
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), m, (1280, 720)) > 0
    table[mask] = warped[mask]
    return table


def _verdict(stage: VerifyStage, scene: np.ndarray, shortlist: list[Candidate]):
    box = OrientedBox(corners=QUAD.copy(), conf=0.9)
    card = CardMatch(box=box, match=Match(shortlist[0].card_id, shortlist[0].score, 0.01, False),
                     top_k=tuple(shortlist))  # fmt: skip
    [verdict] = stage.run(scene, [card], [shortlist])
    return verdict


def test_a_card_the_embedder_missed_is_verified_through_the_local_features(refs, cards) -> None:
    # given a card whose embedder shortlist holds only wrong cards
    ids = list(cards)
    scene = _scene(cards[ids[0]])
    wrong = [Candidate(c, 0.8 - 0.01 * i) for i, c in enumerate(ids[10:15])]
    thresholds = Thresholds(verify_min_inliers=15, verify_min_photometric=0.4)
    without = VerifyStage(refs, thresholds, threads=1)
    widening = VerifyStage(refs, thresholds, threads=1)
    widening.more = FeatureShortlist.from_references(refs)
    # when decided without the index and with it
    before = _verdict(without, scene, wrong)
    after = _verdict(widening, scene, wrong)
    without.close()
    widening.close()
    # then only the index finds it, verified under the same thresholds, saying how it was found
    assert before is not None and not before.match.known
    assert after is not None and after.match.confidence == "verified"
    assert after.match.card_id == ids[0] and after.match.inliers >= 30
    assert after.match.reason == "local-feature shortlist" and after.match.score == 0.0


def test_an_unknown_card_stays_unknown_with_the_index(refs, cards) -> None:
    # given a card of the same style that is not in the catalogue
    from training.synth.card_render import render_card
    from training.synth.catalogue import procedural_catalogue

    [stranger] = procedural_catalogue(1, 99, reprint_rate=0.0, near_duplicate_rate=0.0)
    ids = list(cards)
    stage = VerifyStage(refs, Thresholds(verify_min_inliers=15), threads=1)
    stage.more = FeatureShortlist.from_references(refs)
    # when decided with the index widening its shortlist
    verdict = _verdict(stage, _scene(render_card(stranger, 448)), [Candidate(ids[3], 0.7)])
    stage.close()
    # then it is still unknown
    assert verdict is not None and not verdict.match.known


def test_a_bundle_without_reference_features_still_loads_and_identifies(
    factory_bundle: Path,
) -> None:
    from edge.recognize.recognizer import Recognizer

    # given the test bundle (no features.bin) loaded with the local-feature shortlist on
    rec = Recognizer.from_bundle(factory_bundle, RuntimeSettings(feature_shortlist=True))
    try:
        image = np.full((480, 640, 3), 120, np.uint8)
        # then there is no verification stage (so no index) and a frame is still identified
        assert rec.verify_stage is None
        assert rec.identify(image).bundle_id == rec.bundle_id
    finally:
        rec.close()
