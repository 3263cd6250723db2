"""Verification: local features, the reference feature file, homography checks, the decision.

Cards are the synthetic world's own renders (training.synth), so ORB finds what it finds on real
printed cards: text, frames and art. Crops are made by warping a reference into a frame by a
known homography, so the refined corners have a truth to be held to.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bundles.errors import BundleModelError
from edge.bundles.manifest import Thresholds
from edge.bundles.reference_features import catalogue_scans, detail_image, thumbnail_image
from edge.errors import BadImageError
from edge.recognize.decide import Evidence, without_duplicates
from edge.recognize.feature_file import ReferenceFeatures, write_reference_features
from edge.recognize.features import (
    Extractor,
    Features,
    FeatureSpec,
    distinctive,
)
from edge.recognize.repeatable import reference_features
from edge.recognize.verify import (
    TEMPLATE_MIN_SHARE,
    Verification,
    Verifier,
    distinct_cells,
    frame_onto,
    implausible,
    photometric,
)
from edge.recognize.verify_stage import VerifyStage
from edge.types import Candidate, CardMatch, Match, OrientedBox
from tests.card_renders import rendered_cards

SPEC = FeatureSpec(n_features=400)


@pytest.fixture(scope="module")
def cards() -> dict[str, np.ndarray]:
    """Eight distinct cards of one procedural catalogue (shared frame and text layout), RGB."""
    return rendered_cards(8, 3)


@pytest.fixture(scope="module")
def refs(
    cards: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> ReferenceFeatures:
    path = tmp_path_factory.mktemp("feat") / "features.bin"
    items = reference_features(cards.items(), SPEC)
    write_reference_features(path, SPEC, items, {c: thumbnail_image(im) for c, im in cards.items()})
    return ReferenceFeatures(path)


def _scene(card: np.ndarray, quad: np.ndarray, size: tuple[int, int] = (720, 1280)) -> np.ndarray:
    """`card` warped onto `quad` (TL, TR, BR, BL of the upright card) over a textured table."""
    rng = np.random.default_rng(1)
    h, w = size
    table = cv2.resize(rng.integers(60, 120, (h // 40, w // 40, 3), np.uint8), (w, h))
    src = np.array(
        [
            [0, 0],
            [card.shape[1] - 1, 0],
            [card.shape[1] - 1, card.shape[0] - 1],
            [0, card.shape[0] - 1],
        ],
        np.float32,
    )
    m = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    warped = cv2.warpPerspective(card, m, (w, h))
    mask = cv2.warpPerspective(np.full(card.shape[:2], 255, np.uint8), m, (w, h)) > 0
    out = table.copy()
    out[mask] = warped[mask]
    return out


# A card tilted in perspective and turned upside down: its true top-left lies bottom-right.
TRUE_QUAD = np.array([[820, 610], [560, 640], [520, 250], [770, 230]], np.float32)


def _box(quad: np.ndarray, conf: float = 0.9) -> OrientedBox:
    """A detector-like rotated rectangle around the card, in portrait order (no 180 knowledge)."""
    from edge.recognize.rectify import order_corners

    rect = cv2.boxPoints(cv2.minAreaRect(quad.astype(np.float32)))
    return OrientedBox(corners=order_corners(rect), conf=conf)


# --- features and the reference file -----------------------------------------------------


def test_extractor_gives_strongest_features_first_and_none_on_a_flat_image(cards) -> None:
    # given a card and a flat grey image
    ex = Extractor(SPEC)
    card = next(iter(cards.values()))
    # when features are extracted
    feats = ex.extract(ex.gray(card))
    flat = ex.extract(np.full((SPEC.height, SPEC.width), 128, np.uint8))
    # then the card gives at most n_features 32-byte descriptors and the flat image none
    assert 100 < len(feats) <= SPEC.n_features and feats.descriptors.shape[1] == 32
    assert len(flat) == 0 and flat.descriptors.shape == (0, 32)


def test_distinctive_drops_features_the_catalogue_shares(cards) -> None:
    # given cards that share one printed frame (the catalogue's template) and features of each
    ex = Extractor(FeatureSpec(n_features=800))
    raw = [ex.extract(ex.gray(c)) for c in cards.values()]
    # when the distinctive features are kept
    kept = distinctive(raw, 400, sample=7)

    # then fewer remain, and the kept ones match other cards' features far less than the raw do
    def shared(f: Features, others: list[Features]) -> float:
        hits = 0
        for g in others:
            dist, nn = cv2.batchDistance(
                f.descriptors, g.descriptors, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=1
            )
            near = np.linalg.norm(f.points - g.points[nn.reshape(-1)], axis=1) < 12
            hits += int(((dist.reshape(-1) < 48) & near).sum())
        return hits / max(len(f), 1) / len(others)

    before = np.mean([shared(f, raw[:i] + raw[i + 1 :]) for i, f in enumerate(raw)])
    after = np.mean([shared(f, kept[:i] + kept[i + 1 :]) for i, f in enumerate(kept)])
    assert all(len(k) < len(r) for k, r in zip(kept, raw, strict=True))
    assert after < 0.5 * before


def test_reference_file_round_trips_points_descriptors_and_thumbnails(refs, cards) -> None:
    # given the written file, opened memory-mapped
    ex = Extractor(SPEC)
    card_id, card = next(iter(cards.items()))
    # when one card's features are read back
    got = refs.get(card_id)
    # then they cover the catalogue, points within the 1/16 px quantisation, thumbnails decode
    assert got is not None and len(refs) == len(cards) and refs.thumbnails == len(cards)
    assert refs.spec == SPEC and card_id in refs and refs.get("nope") is None
    assert got.points.dtype == np.float32 and got.descriptors.dtype == np.uint8
    fresh = ex.extract(ex.gray(card))
    assert len(fresh) > 100 and len(got) <= SPEC.n_features
    thumb = refs.thumbnail(card_id)
    assert thumb is not None and thumb.shape == (112, 80, 3)
    assert refs.details == 0 and refs.detail(card_id) is None  # written without detail images
    refs.check_cards(sorted(cards))
    with pytest.raises(BundleModelError, match="does not match the catalogue"):
        refs.check_cards([*sorted(cards), "extra-card"])


def test_a_truncated_or_foreign_feature_file_is_a_typed_error(refs, tmp_path: Path) -> None:
    # given a truncated copy and a file that is not a feature file
    data = refs.path.read_bytes()
    (tmp_path / "short.bin").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.bin").write_bytes(b"not a feature file at all")
    # when each is opened, then a BundleModelError says what is wrong
    with pytest.raises(BundleModelError, match="truncated"):
        ReferenceFeatures(tmp_path / "short.bin")
    with pytest.raises(BundleModelError, match="not a feature file"):
        ReferenceFeatures(tmp_path / "junk.bin")


def test_writing_a_card_twice_is_refused(tmp_path: Path) -> None:
    f = Features(np.zeros((1, 2), np.float32), np.zeros((1, 32), np.uint8))
    with pytest.raises(ValueError, match="duplicate card_id"):
        write_reference_features(tmp_path / "f.bin", SPEC, [("a", f), ("a", f)])


# --- geometry --------------------------------------------------------------------------------


def test_implausible_homographies_are_named() -> None:
    canvas = np.array([[0, 0], [239, 0], [239, 335], [0, 335]], np.float64)
    mirror = np.diag([-1.0, 1.0, 1.0])
    mirror[0, 2] = 239
    assert implausible(np.eye(3), canvas) == ""
    assert implausible(mirror, canvas) == "mirrored homography"
    assert "scale" in implausible(np.diag([0.1, 0.1, 1.0]), canvas)
    assert implausible(np.zeros((3, 3)), canvas) == "degenerate homography"
    collapsed = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1]])  # every point onto one line
    assert implausible(collapsed, canvas) != ""


def test_photometric_agreement_separates_the_same_art_from_other_art(cards) -> None:
    # given a card's thumbnail, the same under other light, and another card
    a, b = list(cards.values())[:2]
    small = lambda im: cv2.resize(im, (80, 112), interpolation=cv2.INTER_AREA)  # noqa: E731
    ref = small(a)
    relit = np.clip(small(a).astype(np.float32) * 0.7 + 30, 0, 255).astype(np.uint8)
    valid = np.ones((112, 80), bool)
    # then the relit view agrees strongly and the other card much less
    assert photometric(relit, valid, ref) > 0.9
    assert photometric(small(b), valid, ref) < 0.6
    assert photometric(relit, np.zeros((112, 80), bool), ref) == 0.0


def test_the_colour_check_looks_where_the_catalogues_cards_differ(cards) -> None:
    # given the thumbnails of one catalogue's cards (shared frame and text boxes, their own art)
    small = lambda im: cv2.resize(im, (80, 112), interpolation=cv2.INTER_AREA)  # noqa: E731
    thumbs = [small(im) for im in cards.values()]
    ref, others = thumbs[0], thumbs[1:]
    valid = np.ones((112, 80), bool)
    # when the cells where they differ are found
    cells = distinct_cells(thumbs)
    assert cells is not None
    # then those lie in the art window's rows (the upper half), the text boxes below are left out,
    # and other cards agree with a reference less there than over the whole card, while the
    # same card under other light still agrees
    rows = np.flatnonzero(cells.any(axis=1))
    assert rows.max() < cells.shape[0] // 2 and cells.sum() >= TEMPLATE_MIN_SHARE * cells.size
    whole = [photometric(o, valid, ref) for o in others]
    distinct = [photometric(o, valid, ref, cells) for o in others]
    assert np.median(distinct) < np.median(whole) and max(distinct) < 0.5
    relit = np.clip(ref.astype(np.float32) * 0.7 + 30, 0, 255).astype(np.uint8)
    assert photometric(relit, valid, ref, cells) > 0.9


def test_a_catalogue_without_variety_is_compared_over_its_least_shared_cells(cards) -> None:
    # given one reference, or three copies of one card (every cell is template)
    thumb = cv2.resize(next(iter(cards.values())), (80, 112), interpolation=cv2.INTER_AREA)
    # then one reference gives no choice of cells (the whole card), and copies still leave at
    # least the minimum share of cells to compare
    assert distinct_cells([thumb]) is None
    same = distinct_cells([thumb, thumb, thumb])
    assert same is not None and same.sum() >= TEMPLATE_MIN_SHARE * same.size


def test_a_verified_cards_other_printings_are_checked_beside_the_shortlist(
    cards, tmp_path: Path
) -> None:
    # given the right card alone in the shortlist, and a catalogue where two other cards share its
    # name: a reprint of its art (another frame colour) the embedder did not shortlist, and a card
    # with other art
    ids = list(cards)
    twin = cards[ids[0]].copy()
    twin[int(0.7 * twin.shape[0]) :] = (200, 40, 40)
    catalogue = {**cards, "twin": twin}
    path = tmp_path / "features.bin"
    write_reference_features(path, SPEC, reference_features(catalogue.items(), SPEC),
                             {c: thumbnail_image(im) for c, im in catalogue.items()})  # fmt: skip
    stage = VerifyStage(ReferenceFeatures(path), Thresholds(verify_min_inliers=15), threads=1)
    stage.decision.printings = {ids[0]: ("twin", ids[3])}
    scene = _scene(cards[ids[0]], TRUE_QUAD)
    gray = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    # when the shortlist is verified
    evidence, _ = stage.gather(scene, gray, _box(TRUE_QUAD), [Candidate(ids[0], 0.9)])
    stage.close()
    # then the reprint was checked too (the card of other art was not), and the right card leads
    assert [v.card_id for v in evidence.results] == [ids[0], "twin"]
    assert stage.decision.same_art(ids[0]) == ("twin",)


def test_the_right_card_verifies_and_an_unrelated_one_does_not(refs, cards) -> None:
    # given a frame with the first card tilted and upside down, and its crop's features
    ids = list(cards)
    scene = _scene(cards[ids[0]], TRUE_QUAD)
    stage = VerifyStage(refs, Thresholds(verify_min_inliers=15), threads=1)
    gray = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    shortlist = [Candidate(ids[1], 0.9), Candidate(ids[0], 0.8), Candidate(ids[2], 0.7)]
    # when the shortlist is verified
    evidence, _ = stage.gather(scene, gray, _box(TRUE_QUAD), shortlist)
    stage.close()
    # then the right card (not the embedder's top-1) has the most inliers and agrees in colour
    best = evidence.results[0]
    assert best.card_id == ids[0] and best.inliers >= 40 and best.photometric > 0.6
    others = [v.inliers for v in evidence.results[1:]]
    assert max(others) < best.inliers / 3


def test_the_distinct_point_verifies_a_card_nothing_else_maps_onto(refs, cards, tmp_path) -> None:
    # given the right card second in the shortlist, thresholds whose two usual operating points
    # no candidate can reach, and a second catalogue where the card also has a same-art twin
    ids = list(cards)
    scene = _scene(cards[ids[0]], TRUE_QUAD)
    shortlist = [Candidate(ids[1], 0.9), Candidate(ids[0], 0.8), Candidate(ids[2], 0.7)]
    t = Thresholds(verify_min_inliers=1000, verify_strong_inliers=1000, background_conf=0.5,
                   verify_distinct_inliers=15, verify_distinct_photometric=0.5,
                   verify_distinct_ratio=2.0)  # fmt: skip
    with_twin = {**cards, "twin": cards[ids[0]]}
    path = tmp_path / "features.bin"
    thumbs = {c: thumbnail_image(im) for c, im in with_twin.items()}
    write_reference_features(path, SPEC, reference_features(with_twin.items(), SPEC), thumbs)
    alone = VerifyStage(refs, t, threads=1)
    crowded = VerifyStage(ReferenceFeatures(path), t, threads=1)
    # when decided at the distinct point, in each catalogue
    verdict = _decide(alone, scene, _box(TRUE_QUAD), shortlist)
    refused = _decide(crowded, scene, _box(TRUE_QUAD), [*shortlist, Candidate("twin", 0.6)])
    alone.close()
    crowded.close()
    # then the card is verified as itself where nothing else maps onto the crop, and is
    # unknown where its twin does as well (the usual points and the reprint check decide those)
    assert verdict is not None and verdict.match.confidence == "verified"
    assert verdict.match.card_id == ids[0]
    assert refused is not None and refused.match.confidence == "unknown"


def test_the_distinct_point_needs_a_look_that_checked_the_whole_shortlist(refs) -> None:
    # given a best candidate with 14 inliers and agreeing colours, and one other candidate
    t = Thresholds(verify_min_inliers=1000, verify_distinct_inliers=12,
                   verify_distinct_photometric=0.5, verify_distinct_ratio=2.0)  # fmt: skip
    stage = VerifyStage(refs, t, threads=1)
    h = np.eye(3)
    best = Verification("a", 14, 20, h, photometric=0.9)
    far, near = Verification("b", 5, 9, h, photometric=0.1), Verification("b", 8, 9, h)
    # then it is distinct over a whole shortlist whose runner-up has at most half its inliers,
    # and not over a look that checked only a few candidates, nor beside a closer runner-up
    assert stage.decision.distinct(Evidence((best, far), 200, complete=True))
    assert not stage.decision.distinct(Evidence((best, far), 200, complete=False))
    assert not stage.decision.distinct(Evidence((best, near), 200, complete=True))
    assert not stage.decision.distinct(
        Evidence((replace(best, photometric=0.4), far), 200, complete=True)
    )
    stage.close()


def test_coverage_counts_the_cells_of_the_card_its_inliers_span(refs, cards) -> None:
    # given a card seen whole on the canvas, and the same view with only its top-left quarter's
    # features (the rest hidden)
    ex = Extractor(SPEC)
    card_id = next(iter(cards))
    view = cv2.resize(cards[card_id], (SPEC.width, SPEC.height), interpolation=cv2.INTER_AREA)
    whole = ex.extract(ex.gray(view))
    corner = (whole.points[:, 0] < SPEC.width / 2) & (whole.points[:, 1] < SPEC.height / 2)
    part = Features(whole.points[corner], whole.descriptors[corner])
    # when each is verified against the card
    verifier = Verifier(refs)
    seen, hidden = verifier.verify(whole, card_id), verifier.verify(part, card_id)
    # then both verify, the whole card's inliers over the cells of its distinctive features (art
    # and name: a third of the 8 x 6 grid and more), the quarter's over at most its own 4 x 3
    # (and a cell or two of slack at its edges)
    assert seen.inliers >= 30 and hidden.inliers >= 15
    assert seen.coverage >= 16 and hidden.coverage <= 14 and hidden.coverage < seen.coverage / 2


def test_the_spread_point_needs_inliers_over_enough_of_the_card(refs) -> None:
    # given thresholds whose usual points no candidate reaches, and a spread point of 20
    # inliers over 12 cells with colours of 0 at least
    t = Thresholds(verify_min_inliers=1000, verify_spread_inliers=20, verify_spread_cells=12,
                   verify_spread_photometric=0.0)  # fmt: skip
    stage = VerifyStage(refs, t, threads=1)
    spread = Verification("a", 25, 30, np.eye(3), photometric=0.1, coverage=14)
    # then inliers spread over 14 cells pass under poor colours, and not when they cluster, are
    # too few, the colours disagree outright, or there is no homography
    assert stage.decision.passes(spread)
    assert not stage.decision.passes(replace(spread, coverage=6))
    assert not stage.decision.passes(replace(spread, inliers=15))
    assert not stage.decision.passes(replace(spread, photometric=-0.2))
    assert not stage.decision.passes(replace(spread, homography=None))
    stage.close()


def test_the_framed_point_needs_the_reference_mapped_onto_the_detectors_box(refs, cards) -> None:
    # given the tilted card, thresholds whose other points no candidate reaches and a framed
    # point of 15 inliers whose outline overlaps the box 0.7
    ids = list(cards)
    scene = _scene(cards[ids[0]], TRUE_QUAD)
    gray = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    t = Thresholds(verify_min_inliers=1000, verify_framed_inliers=15,
                   verify_framed_photometric=0.4, verify_framed_iou=0.7)  # fmt: skip
    stage = VerifyStage(refs, t, threads=1)
    box = _box(TRUE_QUAD)
    # when its evidence is gathered through the detector's box
    evidence, warp = stage.gather(scene, gray, box, [Candidate(ids[0], 0.9)])
    best = evidence.results[0]
    # then the reference's outline lies on the box and the card passes at the framed point; the
    # same homography measured against a box beside the card (a chance match maps the card
    # elsewhere) overlaps it little and does not pass, nor does it with too few inliers
    assert best.card_id == ids[0] and best.outline > 0.8 and stage.decision.passes(best)
    elsewhere = box.corners + np.float32([260, 0])
    off = stage.decision.measured(scene, warp, replace(best, outline=0.0), elsewhere)
    assert off.outline < 0.3 and not stage.decision.passes(off)
    assert not stage.decision.passes(replace(best, inliers=14))
    assert not stage.decision.passes(replace(best, outline=0.0))
    stage.close()


def test_a_crop_without_features_is_not_verified(refs, cards) -> None:
    v = Verifier(refs).verify(
        Features(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)), next(iter(cards))
    )
    assert v.inliers == 0 and v.homography is None and "few features" in v.reason


def test_a_mirrored_card_is_not_verified(refs, cards) -> None:
    # given the card printed mirror-wise (a reflection, or a fake)
    card_id = next(iter(cards))
    mirrored = np.ascontiguousarray(cards[card_id][:, ::-1])
    ex = Extractor(SPEC)
    # when verified against its own reference, beside the card as printed
    v = Verifier(refs).verify(ex.extract(ex.gray(mirrored)), card_id)
    upright = Verifier(refs).verify(ex.extract(ex.gray(cards[card_id])), card_id)
    # then only the frame's symmetric parts line up: a handful of inliers against hundreds
    assert v.inliers < 20 and v.inliers < 0.1 * upright.inliers


# --- the decision ------------------------------------------------------------------------------


def _decide(stage: VerifyStage, scene: np.ndarray, box: OrientedBox, shortlist: list[Candidate]):
    card = CardMatch(box=box, match=Match(shortlist[0].card_id, shortlist[0].score, 0.05, False),
                     top_k=tuple(shortlist))  # fmt: skip
    [verdict] = stage.run(scene, [card], [shortlist])
    return verdict


def test_a_verified_card_reports_the_reference_corners_as_its_polygon(refs, cards) -> None:
    # given the tilted, upside-down card behind a loose rotated-rectangle box
    ids = list(cards)
    scene = _scene(cards[ids[0]], TRUE_QUAD)
    stage = VerifyStage(
        refs, Thresholds(verify_min_inliers=15, verify_min_photometric=0.4), threads=1
    )
    # when decided
    verdict = _decide(
        stage, scene, _box(TRUE_QUAD), [Candidate(ids[2], 0.9), Candidate(ids[0], 0.8)]
    )
    stage.close()
    # then it is verified as the right card, and its polygon follows the true trapezoid from the
    # card's own top-left, within a few pixels
    assert verdict is not None and verdict.match.confidence == "verified" and verdict.match.known
    assert verdict.match.card_id == ids[0] and verdict.match.inliers >= 40
    err = np.linalg.norm(verdict.box.corners - TRUE_QUAD, axis=1)
    assert err.max() < 6.0, err


def _decided_with(
    monkeypatch: pytest.MonkeyPatch, name: str, value: object, refs: ReferenceFeatures,
    thresholds: Thresholds, scene: np.ndarray, box: OrientedBox, shortlist: list[Candidate],
):  # fmt: skip
    """The verdict with edge.recognize.verify_stage's constant `name` set to `value` (a look on or off)."""
    import edge.recognize.verify_stage as verify_stage

    monkeypatch.setattr(verify_stage, name, value)
    stage = VerifyStage(refs, thresholds, threads=1)
    try:
        return _decide(stage, scene, box, shortlist)
    finally:
        stage.close()


def test_a_box_mostly_off_its_card_is_verified_from_its_surroundings(
    refs, cards, monkeypatch
) -> None:
    import edge.recognize.verify_stage as verify_stage

    # given an upright card whose detector box slid four fifths of a card off it (a box
    # straddling a card and the table)
    ids = list(cards)
    quad = np.array([[500, 150], [740, 150], [740, 485], [500, 485]], np.float32)
    scene = _scene(cards[ids[1]], quad)
    half = quad + np.float32([0, 270])
    shortlist = [Candidate(ids[1], 0.9), Candidate(ids[3], 0.8)]
    thresholds = Thresholds(verify_min_inliers=10, verify_min_photometric=0.4)

    box = OrientedBox(corners=half, conf=0.5)
    # when verified without and with the look at the box's surroundings
    context = verify_stage.CONTEXT
    without, verdict = (
        _decided_with(monkeypatch, "CONTEXT", value, refs, thresholds, scene, box, shortlist)
        for value in (1.0, context)
    )
    # then only the wider look proves the card, and its polygon is the whole card's (within 5%
    # of its height; the box was 270 px off)
    assert without is None or without.match.confidence != "verified"
    assert verdict is not None and verdict.match.confidence == "verified"
    assert verdict.match.card_id == ids[1]
    assert np.linalg.norm(verdict.box.corners - quad, axis=1).max() < 17.0


def test_a_steeply_tilted_card_is_verified_through_its_own_trapezoid(
    refs, cards, monkeypatch
) -> None:
    import edge.recognize.verify_stage as verify_stage

    # given a card seen at a steep tilt (its far edge a fifth of its near edge), behind the
    # detector's rotated rectangle, which squashes its far half and stretches its near half
    ids = list(cards)
    quad = np.array([[620, 300], [680, 300], [800, 600], [500, 600]], np.float32)
    scene = _scene(cards[ids[0]], quad)
    shortlist = [Candidate(c, 0.9 - 0.01 * i) for i, c in enumerate(ids[:4])]
    thresholds = Thresholds(verify_min_inliers=35, verify_min_photometric=0.4)

    # when decided without and with the look through the best homography's corners
    rectify_min = verify_stage.RECTIFY_MIN
    without, verdict = (
        _decided_with(
            monkeypatch, "RECTIFY_MIN", value, refs, thresholds, scene, _box(quad), shortlist
        )
        for value in (10**6, rectify_min)
    )
    # then only the rectified look finds enough inliers (42 here when written), and the polygon
    # is the true trapezoid
    assert without is None or without.match.confidence != "verified"
    assert verdict is not None and verdict.match.confidence == "verified"
    assert verdict.match.card_id == ids[0] and verdict.match.inliers >= 38
    assert np.linalg.norm(verdict.box.corners - quad, axis=1).max() < 8.0


def test_an_unknown_card_is_unknown_with_a_reason_and_background_is_dropped(refs, cards) -> None:
    # given a card that is not among the references (another seed's card) in the same style
    from training.synth.card_render import render_card
    from training.synth.catalogue import procedural_catalogue

    [stranger] = procedural_catalogue(1, 99, reprint_rate=0.0, near_duplicate_rate=0.0)
    scene = _scene(render_card(stranger, 448), TRUE_QUAD)
    ids = list(cards)
    shortlist = [Candidate(c, 0.9 - 0.1 * i) for i, c in enumerate(ids[:5])]
    thresholds = Thresholds(verify_min_inliers=20, verify_min_photometric=0.5, background_conf=0.5)
    stage = VerifyStage(refs, thresholds, threads=1)
    # when decided with a confident box and with a weak one
    confident = _decide(stage, scene, _box(TRUE_QUAD, 0.9), shortlist)
    weak = _decide(stage, scene, _box(TRUE_QUAD, 0.3), shortlist)
    stage.close()
    # then the confident box is an unknown card saying why, and the weak one is background
    assert confident is not None and confident.match.confidence == "unknown"
    assert not confident.match.known and "no candidate verified" in confident.match.reason
    assert weak is None


def test_a_card_too_small_to_verify_is_never_verified(refs, cards) -> None:
    # given the card 30 px wide in the frame
    ids = list(cards)
    quad = np.array([[600, 300], [630, 300], [630, 342], [600, 342]], np.float32)
    scene = _scene(cards[ids[0]], quad)
    stage = VerifyStage(refs, Thresholds(verify_min_px=48, background_conf=0.5), threads=1)
    shortlist = [Candidate(ids[0], 0.95), Candidate(ids[1], 0.2)]
    verdict = _decide(stage, scene, _box(quad), shortlist)
    weak = _decide(stage, scene, _box(quad, 0.3), shortlist)
    stage.close()
    # then the embedding alone decides, on the strict probable thresholds (here: never)
    assert verdict is not None and verdict.match.confidence == "unknown"
    assert "too small" in verdict.match.reason
    # and a box that proves nothing below the background confidence is background, as one that
    # verifies against nothing is
    assert weak is None


def test_same_art_reprints_are_told_apart_where_their_references_differ(
    cards, tmp_path: Path
) -> None:
    # given two printings of one card that differ in the colour of the lower third of the card
    base = next(iter(cards.values()))
    other = base.copy()
    other[int(0.7 * other.shape[0]) :, :, :] = (200, 40, 40)
    printings = {"print-a": base, "print-b": other}
    path = tmp_path / "features.bin"
    items = reference_features(printings.items(), SPEC)
    write_reference_features(
        path, SPEC, items, {c: thumbnail_image(im) for c, im in printings.items()}
    )
    refs = ReferenceFeatures(path)
    stage = VerifyStage(
        refs, Thresholds(verify_min_inliers=15, verify_min_photometric=0.2), threads=1
    )
    shortlist = [Candidate("print-a", 0.9), Candidate("print-b", 0.89)]
    # when the frame shows printing b
    verdict = _decide(stage, _scene(other, TRUE_QUAD), _box(TRUE_QUAD), shortlist)
    # and when the two printings are the very same picture
    write_reference_features(path.with_name("same.bin"), SPEC, reference_features({"x": base, "y": base}.items(), SPEC),
                             {"x": thumbnail_image(base), "y": thumbnail_image(base)})  # fmt: skip
    same = VerifyStage(ReferenceFeatures(path.with_name("same.bin")), stage.thresholds, threads=1)
    tie = _decide(
        same, _scene(base, TRUE_QUAD), _box(TRUE_QUAD), [Candidate("x", 0.9), Candidate("y", 0.9)]
    )
    stage.close()
    same.close()
    # then b is named, and identical printings give an honest unknown naming both
    assert verdict is not None and verdict.match.card_id == "print-b" and verdict.match.known
    assert tie is not None and not tie.match.known and "same art" in tie.match.reason
    assert {tie.match.card_id, tie.match.runner_up} == {"x", "y"}


def test_reprints_differing_in_their_text_are_told_apart_under_a_lamps_fall_off(
    cards, tmp_path: Path
) -> None:
    # given two printings of one art whose text boxes differ (another card's attacks below the
    # art), and a frame of printing b lit by a lamp whose light falls off across the card
    ids = list(cards)
    base = cards[ids[0]]
    other = base.copy()
    cut = int(0.55 * other.shape[0])
    other[cut:] = cards[ids[1]][cut:]
    printings = {"print-a": base, "print-b": other}
    path = tmp_path / "features.bin"
    write_reference_features(path, SPEC, reference_features(printings.items(), SPEC),
                             {c: thumbnail_image(im) for c, im in printings.items()})  # fmt: skip
    stage = VerifyStage(
        ReferenceFeatures(path), Thresholds(verify_min_inliers=15, verify_min_photometric=0.2),
        threads=1,
    )  # fmt: skip
    scene = _scene(other, TRUE_QUAD).astype(np.float32)
    across = np.linspace(0.0, 1.0, scene.shape[1], dtype=np.float32)[None, :, None]
    warm = np.array([1.3, 1.0, 0.6], np.float32)  # a warm lamp on the left, daylight on the right
    fall_off = (1.0 - across) * warm + across * np.float32(0.5)
    lit = np.clip(scene * fall_off + 10, 0, 255).astype(np.uint8)
    # when the frame is decided
    verdict = _decide(
        stage, lit, _box(TRUE_QUAD), [Candidate("print-a", 0.9), Candidate("print-b", 0.89)]
    )
    stage.close()
    # then printing b is named
    assert verdict is not None and verdict.match.known and verdict.match.card_id == "print-b"


# The lower right corner reprinted with a collector number: (rows, columns as shares of the card,
# box colour, ink, font scale, stroke, baseline above the box's bottom). "light": dark print on a
# light box; "faint": dark grey on a dark grey box (about 25 grey levels apart), as some frames
# print it.
PRINT_STYLES = {
    "light": ((0.89, 0.95), (0.45, 0.95), (235, 235, 225), (20, 20, 20), 0.5, 2, 6),
    "faint": ((0.9, 0.95), (0.5, 0.95), (52, 56, 64), (80, 84, 92), 0.45, 1, 5),
}


def _small_print(card: np.ndarray, number: str, style: str = "light") -> np.ndarray:
    """`card` with its lower right corner reprinted in PRINT_STYLES[style] with `number`."""
    (r0, r1), (c0, c1), box, ink, scale, stroke, baseline = PRINT_STYLES[style]
    out = card.copy()
    h, w = out.shape[:2]
    y0, y1, x0, x1 = int(r0 * h), int(r1 * h), int(c0 * w), int(c1 * w)
    out[y0:y1, x0:x1] = box
    cv2.putText(out, number, (x0 + 4, y1 - baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, ink,
                stroke, cv2.LINE_AA)  # fmt: skip
    return out


def test_printings_differing_only_in_small_print_are_told_apart_by_their_detail_images(
    cards, tmp_path: Path
) -> None:
    # given two printings of one card that differ only in their collector number (about 3 px
    # tall on a thumbnail, 9 px on the canvas), written without and with detail images
    base = next(iter(cards.values()))
    printings = {"print-a": _small_print(base, "012/204"), "print-b": _small_print(base, "087/191")}
    items = reference_features(printings.items(), SPEC)
    thumbs = {c: thumbnail_image(im) for c, im in printings.items()}
    details = {c: detail_image(im, SPEC) for c, im in printings.items()}
    write_reference_features(tmp_path / "thumbs.bin", SPEC, items, thumbs)
    write_reference_features(tmp_path / "details.bin", SPEC, items, thumbs, details)
    with_details = ReferenceFeatures(tmp_path / "details.bin")
    assert with_details.details == 2
    detail = with_details.detail("print-a")
    assert detail is not None and detail.shape == (SPEC.height, SPEC.width)
    thresholds = Thresholds(verify_min_inliers=15, verify_min_photometric=0.2)

    def verdicts(refs: ReferenceFeatures) -> list[CardMatch | None]:
        stage = VerifyStage(refs, thresholds, threads=1)
        try:
            pairs = (("print-b", "print-a"), ("print-a", "print-b"))
            shortlists = [[Candidate(other, 0.9), Candidate(truth, 0.89)] for truth, other in pairs]
            return [
                _decide(stage, _scene(printings[truth], TRUE_QUAD), _box(TRUE_QUAD), shortlist)
                for (truth, _), shortlist in zip(pairs, shortlists, strict=True)
            ]
        finally:
            stage.close()

    # when each printing is in view, the other first on the shortlist
    coarse, fine = verdicts(ReferenceFeatures(tmp_path / "thumbs.bin")), verdicts(with_details)
    # then thumbnails alone cannot tell them apart (an honest unknown naming both), and the
    # detail images name each printing right
    for v in coarse:
        assert v is not None and not v.match.known and v.match.runner_up
    for v, truth in zip(fine, ("print-b", "print-a"), strict=True):
        assert v is not None and v.match.known and v.match.card_id == truth, v


def _with_details(printings: dict[str, np.ndarray], path: Path) -> ReferenceFeatures:
    """A reference file of `printings` with thumbnails and detail images, as bundles write it."""
    items = reference_features(printings.items(), SPEC)
    thumbs = {k: thumbnail_image(im) for k, im in printings.items()}
    details = {k: detail_image(im, SPEC) for k, im in printings.items()}
    write_reference_features(path, SPEC, items, thumbs, details)
    return ReferenceFeatures(path)


def test_printings_differing_only_in_faint_print_are_told_apart(cards, tmp_path: Path) -> None:
    # given two printings that differ only in a collector number printed faintly (dark grey on
    # dark grey: nowhere 25 grey levels apart once blurred), and a third whose art differs only
    # by a faint tint (a finish, no print)
    from edge.recognize.reprints import DETAIL_LEVEL, differing

    base = next(iter(cards.values()))
    printings = {
        "print-a": _small_print(base, "012/204", "faint"),
        "print-b": _small_print(base, "087/191", "faint"),
    }
    refs = _with_details(printings, tmp_path / "details.bin")
    a, b = refs.detail("print-a"), refs.detail("print-b")
    assert a is not None and b is not None
    blurred = [cv2.GaussianBlur(d, (0, 0), 1.0).astype(np.int16) for d in (a, b)]
    assert np.abs(blurred[0] - blurred[1]).max() <= DETAIL_LEVEL
    tinted = a.copy()
    tinted[40:200] = np.clip(tinted[40:200].astype(np.int16) + 14, 0, 255).astype(np.uint8)
    # when the regions where they differ are looked for
    found, finish = differing(a, b), differing(a, tinted)
    # then the number is one line of print, and a tint over the art is none
    assert found and all(h <= 12 and y > 0.85 * SPEC.height for _, y, _, h, _ in found), found
    assert finish == []
    # and with each printing in view, the other first on the shortlist, each is named right
    stage = VerifyStage(refs, Thresholds(verify_min_inliers=15, verify_min_photometric=0.2),
                        threads=1)  # fmt: skip
    try:
        for truth, other in (("print-a", "print-b"), ("print-b", "print-a")):
            shortlist = [Candidate(other, 0.9), Candidate(truth, 0.89)]
            v = _decide(stage, _scene(printings[truth], TRUE_QUAD), _box(TRUE_QUAD), shortlist)
            assert v is not None and v.match.known and v.match.card_id == truth, v
    finally:
        stage.close()


def test_two_printings_are_told_apart_by_their_number_beside_a_third_with_other_text(
    cards, tmp_path: Path
) -> None:
    # given three printings of one art: a and b differ only in their collector number, c also in
    # its text boxes (laid out mirrored: a region far larger than the number, where a and b
    # agree), and b in view with the art's homography found
    from edge.recognize.reprints import DETAIL_CLEAR, by_detail

    base = next(iter(cards.values()))
    c = _small_print(base, "087/191")
    h = c.shape[0]
    c[h // 2 : int(0.88 * h)] = c[h // 2 : int(0.88 * h), ::-1]
    printings = {"print-a": _small_print(base, "012/204"), "print-b": _small_print(base, "087/191"),
                 "print-c": c}  # fmt: skip
    refs = _with_details(printings, tmp_path / "details.bin")
    stage = VerifyStage(refs, Thresholds(verify_min_inliers=15), threads=1)
    scene = _scene(printings["print-b"], TRUE_QUAD)
    gray = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    evidence, warp = stage.gather(scene, gray, _box(TRUE_QUAD), [Candidate("print-b", 0.9)])
    stage.close()
    art = evidence.results[0].homography
    assert art is not None
    # when the three are compared by their detail images, c and a first
    cands = [Verification(k, 40, 60, homography=art) for k in ("print-c", "print-a", "print-b")]
    got = by_detail(refs, scene, warp, cands)
    # then b wins clearly: a and b are compared where they differ, not where c differs from both
    assert got is not None
    win, gap, agree = got.win, got.gap, got.agree
    assert cands[win].card_id == "print-b" and gap >= DETAIL_CLEAR and agree > 0.5, got


def test_a_card_proven_at_the_distinct_point_is_compared_with_every_printing_of_its_art(
    cards, tmp_path: Path
) -> None:
    # given two printings that differ only in their number, b in view, and evidence of the kind
    # RANSAC gives by chance on a few inliers: printing a found 12, printing b (the one in view)
    # none, so that only the distinct point (12 >= 2 x 0) proves the art
    base = next(iter(cards.values()))
    printings = {"print-a": _small_print(base, "012/204"), "print-b": _small_print(base, "087/191")}
    refs = _with_details(printings, tmp_path / "details.bin")
    thresholds = Thresholds(verify_min_inliers=500, verify_strong_inliers=500,
                            verify_distinct_inliers=9, verify_distinct_photometric=0.0)  # fmt: skip
    stage = VerifyStage(
        refs, thresholds, threads=1, printings={"print-a": ["print-b"], "print-b": ["print-a"]}
    )
    scene = _scene(printings["print-b"], TRUE_QUAD)
    gray = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    found, warp = stage.gather(scene, gray, _box(TRUE_QUAD), [Candidate("print-b", 0.9)])
    art = found.results[0].homography
    assert art is not None
    chance = Evidence(
        (replace(found.results[0], card_id="print-a", inliers=12), Verification("print-b", 0, 3)),
        found.query_features, complete=True,
    )  # fmt: skip
    assert stage.decision.distinct(chance) and not stage.decision.passes(chance.results[0])
    # when decided
    shortlist = [Candidate("print-a", 0.9), Candidate("print-b", 0.89)]
    card = CardMatch(_box(TRUE_QUAD), Match("print-a", 0.9, 0.01, False), tuple(shortlist))
    verdict = stage.decision.decide(card, shortlist, chance, warp, scene)
    stage.close()
    # then the printing is the one in view (its number decides), never the one RANSAC favoured
    assert verdict is not None and verdict.match.known, verdict
    assert verdict.match.card_id == "print-b" and verdict.match.inliers == 12


def test_a_homography_that_explains_only_the_art_gives_no_polygon(refs) -> None:
    # given a verified candidate whose art agrees but whose whole card does not (its far corners
    # are not proven), and one whose whole card agrees too
    h = np.diag([0.9, 0.9, 1.0])
    art_only = Verification("print-a", 30, 40, h, photometric=0.95, card_colour=0.5)
    whole = replace(art_only, card_colour=0.9)
    shortlist = [Candidate("print-a", 0.9)]
    stage = VerifyStage(refs, Thresholds(), threads=1)
    card = CardMatch(box=_box(TRUE_QUAD), match=Match("print-a", 0.9, 0.1, True), top_k=())
    image = np.zeros((720, 1280, 3), np.uint8)
    try:
        kept, mapped = (
            stage.decision._verified(card, shortlist, Evidence((v,), 200), np.eye(3), image)
            for v in (art_only, whole)
        )
    finally:
        stage.close()
    # then the first keeps the detector's box, the second reports the reference's mapped corners
    assert kept.match.known and np.array_equal(kept.box.corners, card.box.corners)
    assert mapped.match.known and not np.allclose(mapped.box.corners, card.box.corners)


def test_an_art_only_homography_proves_no_printing_of_an_art_with_reprints(refs) -> None:
    # given a verified candidate whose art agrees but whose whole card does not, and a catalogue
    # where its art has another printing
    h = np.diag([0.9, 0.9, 1.0])
    art_only = Verification("print-a", 30, 40, h, photometric=0.95, card_colour=0.5)
    stage = VerifyStage(refs, Thresholds(), threads=1)
    stage.decision._same_art = {"print-a": ("print-b",)}
    card = CardMatch(box=_box(TRUE_QUAD), match=Match("print-a", 0.9, 0.1, True), top_k=())
    image = np.zeros((720, 1280, 3), np.uint8)
    try:
        verdict = stage.decision._verified(
            card, [Candidate("print-a", 0.9)], Evidence((art_only,), 200), np.eye(3), image
        )
    finally:
        stage.close()
    # then neither printing is named known: unknown, naming the other
    assert not verdict.match.known and verdict.match.runner_up == "print-b"
    assert "same art" in verdict.match.reason


def test_a_card_cut_by_the_frames_edge_proves_no_printing_of_an_art_with_reprints(refs) -> None:
    # given a candidate whose whole card verifies, mapped once wholly inside the frame and once
    # 30 px beyond its left edge (a card sliding in), in a catalogue where its art has another
    # printing, and once more where it has none
    inside = Verification("print-a", 40, 60, np.diag([0.9, 0.9, 1.0]), photometric=0.95,
                          card_colour=0.93)  # fmt: skip
    cut = replace(inside, homography=np.array([[0.9, 0, -30], [0, 0.9, 0], [0, 0, 1.0]]))
    card = CardMatch(box=_box(TRUE_QUAD), match=Match("print-a", 0.9, 0.1, True), top_k=())
    image = np.zeros((720, 1280, 3), np.uint8)
    # (its 40 inliers beyond the strong point: a printing of its art would have found inliers too)
    stage = VerifyStage(
        refs, Thresholds(verify_strong_inliers=30, verify_strong_photometric=0.5), threads=1
    )

    def verdict(v: Verification, printings: tuple[str, ...], frame: np.ndarray = image) -> Match:
        stage.decision._same_art = {"print-a": printings}
        evidence = Evidence((v,), 200)
        return stage.decision._verified(
            card, [Candidate("print-a", 0.9)], evidence, np.eye(3), frame
        ).match

    # (and a scan the card fills: its corners on the image's edge, a px beyond it)
    scan = np.zeros((SPEC.height, SPEC.width, 3), np.uint8)
    filling = replace(inside, homography=np.eye(3))
    try:
        whole, sliding, alone = (
            verdict(inside, ("print-b",)),
            verdict(cut, ("print-b",)),
            verdict(cut, ()),
        )
        filled = verdict(filling, ("print-b",), scan)
    finally:
        stage.close()
    # then the card wholly in view is named, and so is the scan; the one cut by the edge is
    # unknown naming the other printing (its small print may be what is out of view); a card
    # without reprints is named
    assert whole.known and whole.card_id == "print-a"
    assert filled.known and filled.card_id == "print-a"
    assert not sliding.known and sliding.runner_up == "print-b" and "same art" in sliding.reason
    assert alone.known and alone.card_id == "print-a"


def test_a_card_short_of_the_strong_point_is_compared_with_every_printing_of_its_art(
    refs,
) -> None:
    # given a card verified on 40 inliers wholly in view, whose art has another printing that
    # found no inliers (on so few, its RANSAC may fail by chance), in a frame that shows nothing
    # to tell the two by
    v = Verification("print-a", 40, 60, np.diag([0.9, 0.9, 1.0]), photometric=0.95,
                     card_colour=0.93)  # fmt: skip
    card = CardMatch(box=_box(TRUE_QUAD), match=Match("print-a", 0.9, 0.1, True), top_k=())
    image = np.zeros((720, 1280, 3), np.uint8)
    verdicts = []
    for strong in (60, 30):
        stage = VerifyStage(
            refs, Thresholds(verify_strong_inliers=strong, verify_strong_photometric=0.5),
            threads=1,
        )  # fmt: skip
        try:
            stage.decision._same_art = {"print-a": ("print-b",)}
            verdicts.append(
                stage.decision._verified(
                    card, [Candidate("print-a", 0.9)], Evidence((v,), 200), np.eye(3), image
                ).match
            )
        finally:
            stage.close()
    short, beyond = verdicts
    # then short of the strong point the other printing is compared, and with nothing to tell
    # them by neither is named; beyond it the card is named
    assert not short.known and short.runner_up == "print-b" and "same art" in short.reason
    assert beyond.known and beyond.card_id == "print-a"


def _printing_verdicts(
    refs: ReferenceFeatures, picked: Verification, evidence: list[tuple[Verification, ...]],
    shortlist: list[Candidate],
) -> list[CardMatch]:  # fmt: skip
    """`_verified` on each evidence, with the pixel comparison of the differing parts made to
    pick `picked` (with a clear gap)."""
    stage = VerifyStage(refs, Thresholds(verify_min_inliers=15), threads=1)
    stage.decision.discriminate = lambda image, warp, cands: (picked, "", None)  # type: ignore[method-assign]
    card = CardMatch(box=_box(TRUE_QUAD), match=Match("print-a", 0.9, 0.01, True), top_k=())
    image = np.zeros((720, 1280, 3), np.uint8)
    try:
        return [
            stage.decision._verified(card, shortlist, Evidence(results, 200), np.eye(3), image)
            for results in evidence
        ]
    finally:
        stage.close()


def test_a_reprint_the_whole_cards_evidence_speaks_against_is_never_named(refs) -> None:
    # given printing a with more inliers and closer colours than printing b, and a pixel
    # comparison of their differing parts that (as on a blurred or oddly lit card) picks b
    h = np.eye(3)
    strong = Verification("print-a", 60, 90, h, photometric=0.95, card_colour=0.95)
    weak = Verification("print-b", 40, 70, h, photometric=0.95, card_colour=0.85)
    shortlist = [Candidate("print-b", 0.9), Candidate("print-a", 0.89)]
    # when the verified card is decided
    [verdict] = _printing_verdicts(refs, weak, [(strong, weak)], shortlist)
    # then neither printing is named known: unknown, naming both
    assert not verdict.match.known and verdict.match.confidence == "unknown"
    assert {verdict.match.card_id, verdict.match.runner_up} == {"print-a", "print-b"}


def test_a_printing_picked_against_a_rivals_clearly_closer_colours_is_never_named(refs) -> None:
    # given printing a with more inliers, printing b with the same art's colours and clearly
    # closer colours over the whole card (the printing in view, as a foil or another set's frame
    # shows), and a pixel comparison of their differing parts that picks a with a clear gap
    h = np.eye(3)
    more = Verification("print-a", 49, 80, h, photometric=0.97, card_colour=0.93)
    closer = Verification("print-b", 38, 60, h, photometric=0.97, card_colour=0.99)
    level = replace(closer, card_colour=0.95)
    shortlist = [Candidate("print-b", 0.98), Candidate("print-a", 0.97)]
    # when the verified card is decided, and again with colours that hardly differ
    doubted, named = _printing_verdicts(refs, more, [(more, closer), (more, level)], shortlist)
    # then neither printing is named while the colours speak against the pick, and the pick
    # stands when they do not
    assert not doubted.match.known and doubted.match.confidence == "unknown"
    assert {doubted.match.card_id, doubted.match.runner_up} == {"print-a", "print-b"}
    assert named.match.known and named.match.card_id == "print-a"


def test_two_boxes_on_one_card_report_it_once() -> None:
    quad = np.array([[0, 0], [63, 0], [63, 88], [0, 88]], np.float32)
    a = CardMatch(OrientedBox(quad, 0.9), Match("a", 0.9, 0.1, True, "verified", 50))
    b = CardMatch(OrientedBox(quad + 2, 0.8), Match("a", 0.9, 0.1, True, "verified", 30))
    c = CardMatch(OrientedBox(quad + 300, 0.8), Match("", 0.2, 0.0, False))
    assert without_duplicates([b, a, c, None]) == [None, a, c, None]


# --- building from a catalogue folder ----------------------------------------------------------


def _catalogue(folder: Path, cards: dict[str, np.ndarray], rows: list[str] | None = None) -> Path:
    (folder / "images").mkdir(parents=True)
    for cid, img in cards.items():
        cv2.imwrite(str(folder / "images" / f"{cid}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    lines = rows if rows is not None else list(cards)
    (folder / "cards.csv").write_text("card_id,name\n" + "".join(f"{c},{c}\n" for c in lines))
    return folder


def test_the_cards_with_printings_are_those_whose_name_another_card_shares(tmp_path: Path) -> None:
    # given a catalogue where two cards share a name (in another case) and one has no name
    (tmp_path / "cards.csv").write_text(
        "card_id,name\npika-1,Pikachu\npika-2,PIKACHU\neevee-1,Eevee\nblank-1,\nblank-2,\n",
        encoding="utf-8",
    )
    # then only the two of one name carry detail images (an unnamed card is no one's reprint)
    from edge.bundles.reference_features import cards_with_printings

    assert cards_with_printings(tmp_path) == {"pika-1": ("pika-2",), "pika-2": ("pika-1",)}


def test_detail_images_are_kept_for_the_printings_of_one_art(cards) -> None:
    # given two printings of one art (another collector number) and a card of their name with
    # other art
    from edge.bundles.reference_features import same_art

    base, other = list(cards.values())[:2]
    scans = {"p-1": _small_print(base, "012/204"), "p-2": _small_print(base, "087/191"),
             "p-3": other}  # fmt: skip
    names = {"p-1": ("p-2", "p-3"), "p-2": ("p-1", "p-3"), "p-3": ("p-1", "p-2")}
    # when the printings that share their art are found from the reference features
    got = same_art(reference_features(scans.items(), SPEC), names, SPEC)
    # then the two of one art are, and the other is not
    assert got == {"p-1", "p-2"}


def test_catalogue_scans_refuse_missing_corrupt_and_duplicate_cards(cards, tmp_path: Path) -> None:
    some = dict(list(cards.items())[:2])
    ids = list(some)
    ok = _catalogue(tmp_path / "ok", some)
    assert [c for c, _ in catalogue_scans(ok)] == ids
    missing = _catalogue(tmp_path / "missing", some, [*ids, "ghost"])
    with pytest.raises(BadImageError, match="ghost"):
        list(catalogue_scans(missing))
    dup = _catalogue(tmp_path / "dup", some, [ids[0], ids[0]])
    with pytest.raises(BadImageError, match="twice"):
        list(catalogue_scans(dup))
    corrupt = _catalogue(tmp_path / "corrupt", some)
    (corrupt / "images" / f"{ids[1]}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(BadImageError, match=ids[1]):
        list(catalogue_scans(corrupt))
    shutil.rmtree(tmp_path / "ok")


def test_printings_details_and_regions_are_computed_once_per_reference_file(
    cards, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a reference file with two printings' details
    import gc
    import weakref

    import edge.recognize.reprints as reprints

    base = next(iter(cards.values()))
    printings = {"print-a": _small_print(base, "012/204"), "print-b": _small_print(base, "087/191")}
    refs = _with_details(printings, tmp_path / "details.bin")
    memo = reprints._memo(refs)
    # when the pair's windows are asked for twice
    first = memo.windows(refs, "print-a", "print-b", True)
    # then the second answer is the kept one, and it is the regions where the two differ
    assert first and memo.windows(refs, "print-a", "print-b", True) is first
    a, b = refs.detail("print-a"), refs.detail("print-b")
    assert a is not None and b is not None
    assert [w[4] for w in first] == [r[4] for r in reprints.differing(a, b, True)]
    # and the memo is bounded, and goes with its reference file
    monkeypatch.setattr(reprints, "MEMO_DETAILS", 1)
    small = reprints._Memo()
    small.detail(refs, "print-a")
    small.detail(refs, "print-b")
    assert list(small._details) == ["print-b"]
    gone = weakref.ref(refs)
    refs.close()
    del refs, memo
    gc.collect()
    assert gone() is None  # the memo did not keep it alive (nor its memory map open)


def test_the_small_prints_lean_is_reported_for_the_two_printings_named() -> None:
    # given the small print leaning to print-a over print-b by 0.02 (too little to decide)
    from edge.recognize.decide import _leaning

    lean = ("print-a", "print-b", 0.02)
    # then a verdict naming print-a with print-b as runner-up leans +0.02, the other way -0.02,
    # and one naming another pair (or no lean) not at all
    assert _leaning(lean, "print-a", "print-b") == 0.02
    assert _leaning(lean, "print-b", "print-a") == -0.02
    assert _leaning(lean, "print-a", "print-c") == 0.0 and _leaning(None, "print-a", "print-b") == 0


def test_a_crop_gives_the_bundles_count_of_query_features_and_a_blurred_card_more_inliers(
    refs, cards
) -> None:
    # given a defocused frame of a card, and stages extracting the references' own count of
    # features from a crop (a bundle calibrated before the setting) and twice as many
    ids = list(cards)
    scene = cv2.GaussianBlur(_scene(cards[ids[1]], TRUE_QUAD), (0, 0), 1.6)
    gray = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    shortlist = [Candidate(i, 0.9 - 0.1 * n) for n, i in enumerate(ids[:3])]
    found = {}
    for n in (None, 2 * SPEC.n_features):
        stage = VerifyStage(refs, Thresholds(verify_query_features=n), threads=1)
        # when the card is verified
        evidence, _ = stage.gather(scene, gray, _box(TRUE_QUAD), shortlist)
        stage.close()
        found[n] = evidence
    # then each extracted its count, and the wider extraction matched more of the card
    old, wide = found[None], found[2 * SPEC.n_features]
    assert old.query_features <= SPEC.n_features < wide.query_features
    right = {n: max(v.inliers for v in e.results if v.card_id == ids[1]) for n, e in found.items()}
    assert right[2 * SPEC.n_features] > 1.2 * right[None] > 0


def test_a_look_verifies_on_the_strongest_features_first_and_on_all_where_they_do_not_pass(
    refs, cards
) -> None:
    # given a sharp frame of a card, and a stage extracting twice a reference's features
    ids = list(cards)
    scene = _scene(cards[ids[1]], TRUE_QUAD)
    gray = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    stage = VerifyStage(refs, Thresholds(verify_query_features=2 * SPEC.n_features), threads=1)
    try:
        # when the embedder's best candidate is the card
        right_first = [Candidate(i, 0.9 - 0.1 * n) for n, i in enumerate([ids[1], ids[0], ids[2]])]
        first, _ = stage.gather(scene, gray, _box(TRUE_QUAD), right_first)
        # then it is verified on the crop's strongest half (a reference's count)
        assert first.results[0].card_id == ids[1] and stage.decision.confirmed(first)
        assert first.query_features == SPEC.n_features
        # and when the best candidate is another card, the whole shortlist is checked on all
        wrong_first = [Candidate(i, 0.9 - 0.1 * n) for n, i in enumerate(ids[:3])]
        full, _ = stage.gather(scene, gray, _box(TRUE_QUAD), wrong_first)
        assert full.results[0].card_id == ids[1] and stage.decision.confirmed(full)
        assert full.query_features > SPEC.n_features
        assert {v.card_id for v in full.results} >= {ids[0], ids[1]}
    finally:
        stage.close()
    # and calibration's exhaustive stage always looks with every feature
    every = VerifyStage(
        refs, Thresholds(verify_query_features=2 * SPEC.n_features), threads=1, exhaustive=True
    )
    try:
        evidence, _ = every.gather(scene, gray, _box(TRUE_QUAD), right_first)
        assert evidence.query_features > SPEC.n_features
    finally:
        every.close()


def test_a_first_pass_with_a_rival_is_contested(refs) -> None:
    # given a stage, and first-pass evidence whose best candidate passed
    stage = VerifyStage(refs, Thresholds(verify_ambiguous=0.5), threads=1)
    h = np.eye(3)
    best = Verification("a", 60, 80, homography=h)
    try:
        # then a runner-up with half its inliers is its rival (the full pass decides them) ...
        assert stage.decision.contested((best, Verification("b", 30, 40, homography=h)))
        # ... and one with fewer, or without a homography, or nothing else, is not
        assert not stage.decision.contested((best, Verification("b", 29, 40, homography=h)))
        assert not stage.decision.contested((best, Verification("b", 40, 40)))
        assert not stage.decision.contested((best,)) and not stage.decision.contested(())
    finally:
        stage.close()


def test_frame_onto_says_where_the_reference_lands_inside_the_frame() -> None:
    # given a 720 x 1280 frame and homographies that put a card wholly inside it, across an
    # edge, or beyond the horizon
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (720, 1280, 3), np.uint8)
    warp = np.eye(3)
    h, w = 112, 80
    ys, xs = np.mgrid[0:h, 0:w]
    inside = edge = 0
    for _ in range(300):
        back = np.eye(3) + rng.normal(0, [[0.3, 0.3, 200], [0.3, 0.3, 200], [3e-4, 3e-4, 0.05]])
        back[:2, 2] += rng.uniform([0, 0], [900, 500])
        m = np.diag([w / SPEC.width, h / SPEC.height, 1.0]) @ np.linalg.inv(back)
        # when the frame is mapped onto a reference of 112 x 80
        _, valid = frame_onto(image, warp, back, (h, w), SPEC)
        # then `valid` is exactly the pixels whose source lies inside the frame
        src = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ np.linalg.inv(m).T
        x, y = src[:, 0] / src[:, 2], src[:, 1] / src[:, 2]
        truth = ((x >= 0) & (x <= 1279) & (y >= 0) & (y <= 719)).reshape(h, w)
        assert np.array_equal(valid, truth)
        inside += bool(truth.all())
        edge += bool(truth.any() and not truth.all())
    # (both kinds were drawn: the whole card in view, and part of it beyond the edge)
    assert inside > 30 and edge > 30
