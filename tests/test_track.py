"""Tracker: association across frames, voting, re-embedding policy, events."""

from __future__ import annotations

import numpy as np
import pytest

from edge.live.track import Tracker, TrackerConfig, vote
from edge.recognize.rectify import polygon_iou
from edge.types import Candidate, Match, OrientedBox
from tests.fakes.recognizer import FakeRecognizer, Placement, compose, make_cards, placement_corners


def box(cx: float, cy: float, angle: float = 0.0, height: float = 150.0) -> OrientedBox:
    return OrientedBox(placement_corners(Placement("x", cx, cy, angle, height)), 0.9)


def verdict(
    card_id: str, score: float = 0.95, known: bool = True
) -> tuple[Match, tuple[Candidate, ...]]:
    return Match(card_id, score, 0.1, known), (Candidate(card_id, score),)


def step(tracker: Tracker, boxes: list[OrientedBox], frame_id: int, ids: list[str]):
    plan = tracker.plan(boxes, frame_id, frame_id / 30)
    events = tracker.commit(plan, {i: verdict(ids[i]) for i in plan.to_embed})
    return plan, events


def test_polygon_iou_of_identical_boxes_is_one_and_of_disjoint_boxes_zero() -> None:
    a, b = box(100, 100), box(400, 100)
    assert polygon_iou(a.corners, a.corners) == pytest.approx(1.0, abs=1e-6)
    assert polygon_iou(a.corners, b.corners) == 0.0


def test_polygon_iou_of_half_shifted_square() -> None:
    sq = np.float32([[0, 0], [10, 0], [10, 10], [0, 10]])
    assert polygon_iou(sq, sq + np.float32([5, 0])) == pytest.approx(50 / 150, abs=1e-6)


def test_moving_box_keeps_its_track_id() -> None:
    tracker = Tracker()
    ids = []
    for f in range(20):
        plan, _ = step(tracker, [box(100 + 12 * f, 200, angle=f)], f, ["card-a"])
        ids.append(plan.track_ids[0])
    assert set(ids) == {ids[0]}


def test_fast_motion_is_associated_by_predicted_centre() -> None:
    # given a card moving 60 px/frame: IoU with the previous box is low, but the motion fits
    tracker = Tracker()
    ids = [
        step(tracker, [box(100 + 60 * f, 200, height=120)], f, ["a"])[0].track_ids[0]
        for f in range(6)
    ]
    assert len(set(ids)) == 1


def test_two_cards_swapping_nothing_stay_apart() -> None:
    tracker = Tracker()
    for f in range(5):
        plan, _ = step(tracker, [box(100, 200), box(400, 200)], f, ["a", "b"])
    assert len(set(plan.track_ids)) == 2


def test_static_scene_embeddings_per_frame_fall_towards_zero() -> None:
    # given three static cards and a refresh every 30 frames
    tracker = Tracker(TrackerConfig(refresh_every=30))
    boxes = [box(100, 200), box(300, 200), box(500, 200)]
    embedded = []
    for f in range(300):
        plan, _ = step(tracker, boxes, f, ["a", "b", "c"])
        embedded.append(len(plan.to_embed))
    # then: every card is embedded until its vote settles (3 frames), then only on refresh
    assert sum(embedded[:3]) == 9
    steady = np.mean(embedded[100:])
    assert steady == pytest.approx(3 / 30, abs=0.02)


def test_uncertain_track_is_re_embedded_every_frame() -> None:
    tracker = Tracker()
    b = [box(200, 200)]
    counts = []
    for f in range(10):
        plan = tracker.plan(b, f, 0.0)
        counts.append(len(plan.to_embed))
        card = "abc"[f % 3]  # three-way disagreement never reaches the winning share
        tracker.commit(plan, {i: verdict(card, 0.9) for i in plan.to_embed})
    assert counts == [1] * 10


def test_a_card_whose_first_looks_proved_nothing_is_named_once_geometry_proves_it() -> None:
    # given a card that lay still while its first looks proved nothing (sliding in, half out of
    # the frame: unknown verdicts that settle the track's vote as unknown)
    tracker = Tracker(TrackerConfig(refresh_every=1000, unknown_every=3))
    b = [box(200, 200)]
    looked = []
    for f in range(6):
        plan = tracker.plan(b, f, f / 30)
        looked.append(len(plan.to_embed))
        tracker.commit(plan, {i: verdict("x", 0.9, known=False) for i in plan.to_embed})
    # then it is still looked at every unknown_every frames (a known card's track would rest)
    assert looked == [1, 1, 1, 0, 0, 1]
    # when a later look verifies it by geometry
    plan = tracker.plan(b, 8, 8 / 30)
    assert plan.to_embed == (0,)
    proven = Match("card-a", 0.93, 0.1, True, confidence="verified")
    events = tracker.commit(plan, {0: (proven, (Candidate("card-a", 0.93),))})
    # then the card is named at once, not outvoted by the looks that proved nothing
    snap = tracker.snapshot()
    assert snap[0].card_id == "card-a" and snap[0].known and snap[0].verified
    assert [(e.kind, e.card_id) for e in events] == [("card_identified", "card-a")]


def test_one_of_several_printings_is_named_once_two_looks_prove_the_same_one() -> None:
    # given a card whose art has another printing: a poor first look proves the wrong printing
    # (its small print misread), the looks after it the right one
    tracker = Tracker(TrackerConfig(refresh_every=1000))
    b = [box(200, 200)]

    def proof(card_id: str) -> tuple[Match, tuple[Candidate, ...]]:
        m = Match(card_id, 0.93, 0.01, True, confidence="verified", inliers=40, printings=1)
        return m, (Candidate(card_id, 0.93),)

    named, looked = [], []
    for f, card in enumerate(["print-x", "print-y", "print-y", "print-y"]):
        plan = tracker.plan(b, f, f / 30)
        looked.append(len(plan.to_embed))
        events = tracker.commit(plan, {i: proof(card) for i in plan.to_embed})
        named += [e.card_id for e in events if e.kind == "card_identified"]
    # then the track keeps looking after the first proof and is named only the right printing
    assert looked == [1, 1, 1, 0] and named == ["print-y"]


def _named_after(leans: list[float]) -> list[str | None]:
    """The cards a track is named after undecided looks of print-x against print-y whose small
    print leans by `leans` (positive: towards print-x), one look a frame."""
    tracker = Tracker(TrackerConfig(refresh_every=1000, unknown_every=1))
    b = [box(200, 200)]
    named: list[str | None] = []
    for f, lean in enumerate(leans):
        plan = tracker.plan(b, f, f / 30)
        m = Match("print-x", 0.93, 0.01, False, inliers=40, runner_up="print-y", printings=1,
                  reason="same art as print-y", lean=lean)  # fmt: skip
        events = tracker.commit(
            plan, {i: (m, (Candidate("print-x", 0.93),)) for i in plan.to_embed}
        )
        named += [e.card_id for e in events if e.kind == "card_identified"]
    return named


def test_a_printing_is_named_once_its_looks_small_print_leans_to_it_enough() -> None:
    # given looks that each name both printings, the small print leaning a little each time
    # (0.02 a look: under the 0.03 that decides one look alone)
    # when three such looks lean to print-y, or to print-x with one look against
    to_y = _named_after([-0.02, -0.02, -0.025, -0.02])
    to_x = _named_after([0.02, -0.005, 0.025, 0.02, 0.02])
    # then the track is named the printing they lean to, once their sum reaches 0.06 (before
    # that, unknown), and never the other
    assert to_y == ["print-y"] and to_x == [None, "print-x"]


def test_looks_whose_small_print_disagrees_name_no_printing() -> None:
    # given looks leaning either way, or too little
    assert all(n is None for n in _named_after([0.02, -0.02, 0.02, -0.02, 0.02, -0.02]))
    assert all(n is None for n in _named_after([0.005] * 7))


def test_a_printing_proven_by_its_leans_where_another_card_lay_is_a_new_card() -> None:
    # given a track proven as card-a, a bare table for a few frames, then at the same spot a
    # card whose looks each name print-x or print-y, leaning to print-x
    tracker = Tracker(TrackerConfig(refresh_every=1000))
    b = [box(200, 200)]
    proof = Match("card-a", 0.95, 0.1, True, confidence="verified", inliers=60)
    undecided = Match("print-x", 0.93, 0.01, False, inliers=40, runner_up="print-y",
                      printings=1, reason="same art as print-y", lean=0.025)  # fmt: skip
    events = []
    for f in range(12):
        boxes = b if f < 4 or f >= 9 else []
        m = proof if f < 4 else undecided
        plan = tracker.plan(boxes, f, f / 30)
        events += tracker.commit(
            plan, {i: (m, (Candidate(m.card_id, 0.9),)) for i in plan.to_embed}
        )
    # when the leans prove print-x, then card-a's track has left and a new one names print-x
    [a] = [e.track_id for e in events if e.kind == "card_identified" and e.card_id == "card-a"]
    [x] = [e.track_id for e in events if e.kind == "card_identified" and e.card_id == "print-x"]
    assert x != a and any(e.kind == "card_left" and e.track_id == a for e in events)


def test_large_move_since_last_embedding_triggers_re_embedding() -> None:
    tracker = Tracker(TrackerConfig(refresh_every=1000))
    for f in range(5):
        step(tracker, [box(200, 200)], f, ["a"])
    plan = tracker.plan([box(260, 200)], 5, 0.0)
    assert plan.to_embed == (0,)


def test_events_appeared_identified_left_in_order() -> None:
    tracker = Tracker(TrackerConfig(min_hits=2, min_votes=3, max_misses=2))
    kinds = []
    for f in range(5):
        _, ev = step(tracker, [box(200, 200)], f, ["card-a"])
        kinds += [(e.kind, e.card_id) for e in ev]
    for f in range(5, 9):
        _, ev = step(tracker, [], f, [])
        kinds += [(e.kind, e.card_id) for e in ev]
    # appeared carries the provisional identity; identified follows once the vote settles
    assert kinds == [
        ("card_appeared", "card-a"),
        ("card_identified", "card-a"),
        ("card_left", "card-a"),
    ]


def test_vote_prefers_the_majority_and_marks_a_minority_winner_unknown() -> None:
    from collections import deque

    (card, _, known), settled = vote(deque([("a", 0.9, True)] * 4 + [("b", 0.9, True)]), 3, 0.6)
    assert (card, known, settled) == ("a", True, True)
    (card, _, known), _ = vote(
        deque([("a", 0.9, True), ("b", 0.9, True), ("c", 0.9, True)]), 3, 0.6
    )
    assert (card, known) == (None, False)


def test_unknown_verdicts_vote_unknown() -> None:
    from collections import deque

    (card, _, known), settled = vote(deque([("a", 0.4, False)] * 3), 3, 0.6)
    assert (card, known, settled) == (None, False, True)


def test_tracker_on_fake_recognizer_frames_identifies_each_card() -> None:
    # given real detections of two cards drifting slowly across 40 frames
    cards = make_cards(4, seed=1)
    rec = FakeRecognizer(cards)
    tracker = Tracker()
    for f in range(40):
        frame = compose(
            cards,
            [
                Placement("card-001", 150 + f, 240, f / 2),
                Placement("card-003", 450, 240 - f, -f / 3),
            ],
        )
        boxes = rec.detect(frame)
        plan = tracker.plan(boxes, f, f / 30)
        idx = list(plan.to_embed)
        res = rec.match(rec.embed(rec.crops(frame, [boxes[i] for i in idx]))) if idx else []
        tracker.commit(plan, dict(zip(idx, res, strict=True)))
    # then both tracks vote their true identity
    assert sorted(t.card_id for t in tracker.snapshot()) == ["card-001", "card-003"]


def test_one_verified_verdict_names_the_card_as_soon_as_its_track_is_confirmed() -> None:
    # given a tracker and a card whose first verdict is proven by geometry
    tracker = Tracker(TrackerConfig(min_hits=2, min_votes=3))
    proven = Match("c1", 0.6, 0.01, True, "verified", 40)
    events = []
    for frame in range(2):
        plan = tracker.plan([box(200, 200)], frame, float(frame))
        verdicts = {i: (proven, ()) for i in plan.to_embed}
        events += tracker.commit(plan, verdicts)
    # then it is identified at the second frame, not after three votes, and not looked at again
    # when it moves a little
    assert [e.kind for e in events] == ["card_appeared", "card_identified"]
    assert events[-1].card_id == "c1" and events[-1].frame_id == 1
    assert tracker.plan([box(240, 230)], 2, 2.0).to_embed == ()


def test_a_background_box_is_never_announced_and_not_examined_every_frame() -> None:
    # given a box the verification stage calls background
    from edge.live.identify import NOT_A_CARD

    tracker = Tracker(TrackerConfig(min_hits=2))
    events, examined = [], 0
    for frame in range(6):
        plan = tracker.plan([box(500, 300)], frame, float(frame))
        examined += len(plan.to_embed)
        events += tracker.commit(plan, {i: (NOT_A_CARD, ()) for i in plan.to_embed})
    # then no event names it, the scene does not show it, and it was looked at once
    assert events == [] and tracker.snapshot() == [] and examined == 1


def test_the_snapshot_says_which_tracks_were_proven_by_geometry() -> None:
    # given one card verified and one known on the embedding alone
    tracker = Tracker(TrackerConfig(min_hits=1, min_votes=1))
    proven = Match("c1", 0.9, 0.2, True, "verified", 40)
    embedded = Match("c2", 0.9, 0.2, True, "probable")
    plan = tracker.plan([box(200, 200), box(600, 200)], 0, 0.0)
    tracker.commit(plan, {0: (proven, ()), 1: (embedded, ())})
    # then the snapshot tells them apart
    assert [(t.card_id, t.verified) for t in tracker.snapshot()] == [("c1", True), ("c2", False)]
