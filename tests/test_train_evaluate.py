"""Evaluation logic: polygon IoU, box matching, per-card outcomes and the summary figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("imagehash")

from edge.recognize.rectify import rectify
from edge.types import Candidate, CardCrop, CardMatch, Match, OrientedBox
from training import evaluate, evaluate_detection

pytestmark = pytest.mark.train


def _quad(x: float, y: float, w: float, h: float) -> np.ndarray:
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float32)


def _gt(card_id: str, corners: np.ndarray, known: bool = True, **kw: Any) -> evaluate.GtCard:
    return evaluate.GtCard(card_id, corners, known, kw.get("reprint", False),
                           kw.get("size_frac", 0.1), kw.get("tilt_deg", 0.0), kw.get("glare", 0.0))  # fmt: skip


def test_polygon_iou_of_half_overlapping_squares_is_one_third() -> None:
    # given two 10 x 10 squares offset by half their width
    a, b = _quad(0, 0, 10, 10), _quad(5, 0, 10, 10)
    # then intersection 50 over union 150
    assert evaluate_detection.polygon_iou(a, b) == pytest.approx(1 / 3, abs=1e-3)


def test_match_boxes_is_one_to_one_and_needs_iou_half() -> None:
    # given two cards, a box on the first, a duplicate of it and a box barely touching the second
    gt = [_gt("a", _quad(0, 0, 10, 10)), _gt("b", _quad(50, 0, 10, 10))]
    boxes = [OrientedBox(_quad(0, 0, 10, 10), 0.9), OrientedBox(_quad(1, 0, 10, 10), 0.8),
             OrientedBox(_quad(58, 0, 10, 10), 0.7)]  # fmt: skip
    # when matched
    pairs = evaluate_detection.match_boxes(gt, boxes)
    # then only the first card matches, to its best box
    assert pairs == {0: 0}


def test_a_box_on_the_seen_part_of_a_half_hidden_card_matches_it() -> None:
    # given a card whose right 60% lies under another card, a box on its seen left part, and an
    # unoccluded card with a box on its art alone
    hidden = _gt("a", _quad(0, 0, 10, 20))
    hidden.visible = 0.4
    whole = _gt("b", _quad(50, 0, 10, 20))
    boxes = [OrientedBox(_quad(0, 0, 4.2, 20), 0.9), OrientedBox(_quad(51, 2, 8, 8), 0.8)]
    # when matched (the first box's IoU with its whole card is 0.42)
    pairs = evaluate_detection.match_boxes([hidden, whole], boxes)
    # then the hidden card matches the box on what is seen of it; the art-only box matches nothing
    assert pairs == {0: 0}
    # and a box twice the seen part's size, half on the card, matches nothing either
    wide = [OrientedBox(_quad(-4.2, 0, 8.4, 20), 0.9)]
    assert evaluate_detection.match_boxes([hidden], wide) == {}


class _FakeRecognizer:
    """Stands in for edge.recognize.recognizer.Recognizer: detects given boxes, names crops by a lookup."""

    def __init__(self, boxes: list[OrientedBox], answers: list[Match]) -> None:
        self.boxes, self.answers = boxes, answers

    def detect(self, image: np.ndarray) -> list[OrientedBox]:
        return self.boxes

    def crops(self, image: np.ndarray, boxes: list[OrientedBox]) -> list[CardCrop]:
        return [rectify(image, b, 56, 40) for b in boxes]

    def shortlist(
        self, image: np.ndarray, boxes: list[OrientedBox]
    ) -> tuple[list[CardMatch], list[list[Candidate]], tuple[float, ...]]:
        cards = [CardMatch(b, m) for b, m in zip(boxes, self.answers, strict=False)]
        return cards, [[] for _ in cards], (0.0, 0.0, 0.0, 0.0)

    def decide(
        self, image: np.ndarray, cards: list[CardMatch], shortlists: list[list[Candidate]]
    ) -> list[CardMatch | None]:
        return list(cards)


def _catalogue(tmp_path: Path, images: dict[str, np.ndarray]) -> Path:
    (tmp_path / "cat" / "images").mkdir(parents=True)
    lines = ["card_id,name,set_id,set_name,number,rarity"]
    for cid, img in images.items():
        cv2.imwrite(str(tmp_path / "cat" / "images" / f"{cid}.jpg"), img[..., ::-1])
        lines.append(f"{cid},{cid.upper()},s,S,1,common")
    (tmp_path / "cat" / "cards.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "cat"


def test_scene_outcomes_follow_the_recognizer_and_phash_reads_the_same_crops(
    tmp_path: Path,
) -> None:
    # given a scene with card "a" pasted upright, a catalogue of "a" and a different "b"
    rng = np.random.default_rng(0)
    card_a = cv2.resize(
        rng.integers(0, 256, (11, 8, 3), dtype=np.uint8), (40, 56), interpolation=cv2.INTER_NEAREST
    )
    card_b = 255 - card_a
    scene = np.zeros((100, 100, 3), np.uint8)
    scene[20:76, 30:70] = card_a
    corners = _quad(30, 20, 40, 56)
    phash = evaluate.PhashBaseline(_catalogue(tmp_path, {"a": card_a, "b": card_b}), (56, 40))
    rec = _FakeRecognizer([OrientedBox(corners, 0.9)], [Match("b", 0.6, 0.01, False)])
    # when the scene is evaluated
    outcomes, false_boxes = evaluate.evaluate_scene(rec, scene, [_gt("a", corners)], phash)  # type: ignore[arg-type]
    # then the card was detected, the model's wrong answer recorded and pHash found the truth
    o = outcomes[0]
    assert false_boxes == [] and o.detected and o.reported
    assert (o.predicted, o.accepted, o.phash_predicted) == ("b", False, "a")


def _outcome(card: str, pred: str, accepted: bool, *, known: bool = True, detected: bool = True,
             **kw: Any) -> evaluate.Outcome:  # fmt: skip
    return evaluate.Outcome(_gt(card, _quad(0, 0, 1, 1), known, **kw), detected, pred, 0.9, 0.1,
                            accepted, kw.get("phash", card))  # fmt: skip


def test_summary_separates_identification_rejection_and_detection() -> None:
    # given 3 detected knowns (2 right, one of them flagged), 1 missed known, 2 unknowns (1 flagged)
    outcomes = [
        _outcome("a", "a", True),
        _outcome("b", "b", False, reprint=True),
        _outcome("c", "a", True, phash="x"),
        _outcome("d", "", False, detected=False),
        _outcome("u1", "a", False, known=False),
        _outcome("u2", "a", True, known=False),
    ]
    # when summarised with 6 detections in total
    s = evaluate.summarise(outcomes, 6, {"a": "A", "c": "C"})
    # then each figure counts only its own population
    assert s["detection_recall"] == pytest.approx(5 / 6, abs=1e-4)
    assert s["detection_precision"] == pytest.approx(5 / 6, abs=1e-4)
    assert s["identification_top1"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["end_to_end_top1"] == pytest.approx(2 / 4, abs=1e-4)
    assert s["known_wrongly_flagged"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["unknown_flagged"] == pytest.approx(1 / 2, abs=1e-4)
    assert s["phash_top1"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["reprints"]["model"] == {"top1": 1.0, "n": 1}
    assert s["worst_confusions"] == [
        {"true": "c", "true_name": "C", "predicted": "a", "predicted_name": "A", "count": 1}
    ]


def test_gates_compare_each_figure_with_its_target() -> None:
    # given figures on both sides of their targets
    report = {"detection_recall": 0.96, "identification_top1": 0.9, "unknown_flagged": 0.95,
              "known_wrongly_flagged": 0.06}  # fmt: skip
    # when gated
    g = evaluate.gates(report)
    # then only the passing ones are met
    assert {k: v["met"] for k, v in g.items()} == {
        "detection_recall": True, "identification_top1": False, "unknown_flagged": True,
        "known_wrongly_flagged": False,
    }  # fmt: skip


def test_load_scenes_reads_the_agreed_scene_format(tmp_path: Path) -> None:
    # given one scene in the agreed on-disk format
    cv2.imwrite(str(tmp_path / "s1.jpg"), np.zeros((20, 30, 3), np.uint8))
    meta = {"scene_id": "s1", "width": 30, "height": 20, "cards": [
        {"card_id": "a", "corners": [[1, 1], [5, 1], [5, 8], [1, 8]], "visible_fraction": 1.0,
         "tilt_deg": 12.0, "size_frac": 0.2, "glare": 0.3, "rotation_deg": 0, "known": False,
         "reprint_group": "g1"}]}  # fmt: skip
    (tmp_path / "s1.json").write_text(json.dumps(meta))
    # when loaded
    [(scene_id, image, cards)] = list(evaluate.load_scenes(tmp_path))
    # then image and ground truth come back typed
    assert scene_id == "s1" and image.shape == (20, 30, 3)
    c = cards[0]
    assert (c.card_id, c.known, c.reprint, c.tilt_deg, c.glare) == ("a", False, True, 12.0, 0.3)


def test_tertile_bins_place_every_card_in_exactly_one_bin() -> None:
    # given cards of many sizes, the largest an unrounded value
    sizes = [0.0123, 0.05, 0.08, 0.1, 0.2, 0.77734]
    outcomes = [_outcome(f"c{i}", f"c{i}", True, size_frac=s) for i, s in enumerate(sizes)]
    # when binned by size tertiles
    bins = evaluate._bins(outcomes, "size_frac", evaluate._tertiles(sizes))
    # then the bin counts add up to the number of cards
    assert sum(cell["model"]["n"] for cell in bins.values()) == len(sizes)
