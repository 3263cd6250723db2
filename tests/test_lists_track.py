"""The tracker under a person scanning a pile: a card swapped for another at the same spot,
with a moment of bare table between, is a new track (so a scan list counts both), while a card
merely lost for a few frames keeps its track."""

from __future__ import annotations

from edge.live.track import Tracker
from edge.types import Candidate, Match, OrientedBox
from tests.fakes.recognizer import Placement, placement_corners

BOX = OrientedBox(placement_corners(Placement("x", 200, 200, 0.0, 160.0)), 0.9)


def verified(card_id: str) -> tuple[Match, tuple[Candidate, ...]]:
    return Match(card_id, 0.95, 0.2, True, "verified", inliers=40), (Candidate(card_id, 0.95),)


def run(tracker: Tracker, frames: range, card_id: str | None) -> list[tuple[str, int]]:
    """Show BOX (as `card_id`) or nothing on each frame; the events as (kind, track id)."""
    events = []
    for f in frames:
        plan = tracker.plan([BOX] if card_id else [], f, f / 10)
        verdicts = {i: verified(card_id) for i in plan.to_embed} if card_id else {}
        events += [(e.kind, e.track_id) for e in tracker.commit(plan, verdicts)]
    return events


def test_a_card_swapped_in_place_after_a_gap_is_a_new_track() -> None:
    # given a verified card, then a bare table for three frames, then another card in its place
    tracker = Tracker()
    first = run(tracker, range(0, 10), "a")
    run(tracker, range(10, 13), None)
    after = run(tracker, range(13, 25), "b")
    # then the first track leaves and a new one is identified as the new card
    old = first[0][1]
    assert ("card_left", old) in after
    new = [tid for kind, tid in after if kind == "card_identified"]
    assert new and new[0] != old
    assert [c.card_id for c in tracker.snapshot()] == ["b"]


def test_the_same_card_lost_for_a_few_frames_keeps_its_track() -> None:
    tracker = Tracker()
    first = run(tracker, range(0, 10), "a")
    run(tracker, range(10, 13), None)
    after = run(tracker, range(13, 25), "a")
    assert not [e for e in after if e[0] == "card_left"]
    assert tracker.snapshot()[0].track_id == first[0][1]
