"""Card backs: boxes of the detector's `back` class are reported as backs, never as unknown
faces, skip verification, and reach the live scene with their own tier."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundles.manifest import DetectorSpec, InputSpec, Thresholds
from edge.live.track import Tracker, TrackerConfig
from edge.recognize.card_backs import BACK_REASON, card_back, decide_with_backs
from edge.types import Candidate, CardMatch, Match, OrientedBox

CORNERS = np.array([[0, 0], [63, 0], [63, 88], [0, 88]], np.float32)


def card(class_id: int, conf: float = 0.9, card_id: str = "c1") -> CardMatch:
    return CardMatch(
        box=OrientedBox(CORNERS, conf, class_id),
        match=Match(card_id, 0.9, 0.1, True),
        top_k=(Candidate(card_id, 0.9),),
    )


def test_a_back_box_is_a_back_and_never_an_unknown_face() -> None:
    verdict = card_back(card(1), Thresholds(background_conf=0.5))
    assert verdict is not None
    m = verdict.match
    assert (m.confidence, m.known, m.card_id, m.reason) == ("back", False, "", BACK_REASON)
    assert verdict.top_k == ()


def test_an_unsure_back_box_is_dropped_like_background() -> None:
    assert card_back(card(1, conf=0.3), Thresholds(background_conf=0.5)) is None


def test_a_calibrated_back_threshold_judges_backs_instead_of_the_face_one() -> None:
    # given a bundle whose backs were calibrated below its face boxes' background bar
    t = Thresholds(background_conf=0.7, back_conf=0.45)
    # then a back the detector is fairly sure of is a back, and an unsure one is dropped
    reported = card_back(card(1, conf=0.5), t)
    assert reported is not None and reported.match.confidence == "back"
    assert card_back(card(1, conf=0.4), t) is None


def test_back_calibration_lets_through_only_the_allowed_false_backs() -> None:
    from training.calibrate_backs import FALSE_BACKS_PER_SCENE, BackEvidence, choose

    # given 100 scenes: back boxes on backs, and back boxes on faces or nothing at 0.2-0.6
    n_scenes = 100
    wrong = [0.6, 0.55, 0.5, 0.45, 0.4, 0.3, 0.2]
    evidence = [BackEvidence(c, False) for c in wrong] + [
        BackEvidence(c, True) for c in (0.9, 0.8, 0.7, 0.52, 0.35)
    ]
    per_back = [0.9, 0.8, 0.7, 0.52, 0.35, 0.0]  # the last back was not boxed as a back
    # when the threshold is chosen above a floor of 0.25
    cal = choose(evidence, per_back, n_scenes, floor=0.25)
    # then exactly the allowed number of false backs passes, and the rate counts every back
    allowed = int(FALSE_BACKS_PER_SCENE * n_scenes)
    assert sum(c >= cal.back_conf for c in wrong) == allowed
    assert cal.false_backs_per_scene == allowed / n_scenes
    assert cal.backs_reported_rate == pytest.approx(
        sum(c >= cal.back_conf for c in per_back) / len(per_back), abs=1e-4
    )
    # and with no false back at all it falls to the floor, never below it
    clean = choose([BackEvidence(0.9, True)], [0.9], n_scenes, floor=0.25)
    assert clean.back_conf == 0.25


def test_faces_go_to_the_face_decision_and_backs_do_not() -> None:
    # given a face, a back and a face, in frame order
    seen: list[list[int]] = []

    def faces(cards: list[CardMatch], lists: list[list[Candidate]]) -> list[CardMatch | None]:
        seen.append([c.box.class_id for c in cards])
        return [c for c in cards]

    cards = [card(0, card_id="a"), card(1), card(0, card_id="b")]
    out = decide_with_backs(cards, [[], [], []], 1, Thresholds(background_conf=0.5), faces)
    # then only the faces were decided (verification never saw the back), order is kept
    assert seen == [[0, 0]]
    assert [v.match.confidence if v else None for v in out] == ["unknown", "back", "unknown"]
    assert out[0] is not None and out[0].match.card_id == "a"
    assert out[2] is not None and out[2].match.card_id == "b"


def test_the_manifest_names_the_back_class() -> None:
    spec = InputSpec(height=256, width=448, resize="letterbox")
    one = DetectorSpec(file="d.onnx", sha256="0" * 64, output_name="o", input=spec)
    two = one.model_copy(update={"num_classes": 2, "class_names": ("card", "back")})
    assert one.back_class is None and two.back_class == 1
    with pytest.raises(ValueError, match="class_names"):
        DetectorSpec(file="d", sha256="0" * 64, output_name="o", input=spec, num_classes=2)


def test_a_back_track_reaches_the_scene_as_a_back_without_a_card_id() -> None:
    back = card_back(card(1), Thresholds(background_conf=0.5))
    assert back is not None
    tracker = Tracker(TrackerConfig(min_hits=1, min_votes=1))
    plan = tracker.plan([back.box], 0, 0.0)
    tracker.commit(plan, {0: (back.match, ())})
    [tc] = tracker.snapshot()
    assert tc.back and not tc.known and not tc.verified
