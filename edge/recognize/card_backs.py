"""Card backs: a detector class of its own, reported as `back`, never as an unknown card face.

A card lying face down carries nothing to identify, so its box skips verification: it is a
`back` (known false, no card id) when the detector is sure enough of it (`back_conf`, calibrated
for backs by training/calibrate_backs.py; a bundle without it uses `background_conf`, the bar for
a face box that verifies against nothing), and dropped below that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from edge.bundles.manifest import Thresholds
from edge.types import Candidate, CardMatch, Match

BACK_REASON = "a card lying face down"

FaceDecision = Callable[[list[CardMatch], list[list[Candidate]]], list[CardMatch | None]]


def card_back(card: CardMatch, thresholds: Thresholds) -> CardMatch | None:
    """The verdict on a box of the back class (None: too unsure to report)."""
    floor = thresholds.background_conf if thresholds.back_conf is None else thresholds.back_conf
    if card.box.conf < floor:
        return None
    back = Match(
        card_id="", score=0.0, margin=0.0, known=False, confidence="back", reason=BACK_REASON
    )
    return replace(card, match=back, top_k=())


def decide_with_backs(
    cards: Sequence[CardMatch],
    shortlists: Sequence[list[Candidate]],
    back_class: int,
    thresholds: Thresholds,
    decide_faces: FaceDecision,
) -> list[CardMatch | None]:
    """Verdicts aligned with `cards`: backs decided here, faces by `decide_faces`."""
    faces = [i for i, c in enumerate(cards) if c.box.class_id != back_class]
    out: list[CardMatch | None] = [
        card_back(c, thresholds) if c.box.class_id == back_class else None for c in cards
    ]
    if faces:
        decided = decide_faces([cards[i] for i in faces], [shortlists[i] for i in faces])
        for i, verdict in zip(faces, decided, strict=True):
            out[i] = verdict
    return out
