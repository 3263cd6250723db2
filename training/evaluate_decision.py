"""The decision's figures in the evaluation report: the device's verified decision beside the
embedding-only one, on the same detections.

- named right: reported known and the right card (what a user sees), for unoccluded known cards
  whose short side is >= 80 px, and for same-art reprints among them;
- precision: of every card reported known (false detections included), the share that is right;
- unknown cards flagged, known cards flagged, false cards per scene (a card reported where there
  is none), and the confidence tiers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge.recognize.verify_stage import short_side

if TYPE_CHECKING:
    from training.evaluate import FalseBox, Outcome

BIG_PX = 80.0  # short side of a card, frame px
UNOCCLUDED = 0.98  # visible fraction
TARGETS = {
    "named_right_unoccluded_80px": (">=", 0.98),
    "reprints_named_right": (">=", 0.95),
    "precision_known": (">=", 0.995),
    "unknown_flagged": (">=", 0.97),
    "known_flagged": ("<=", 0.02),
    "false_cards_per_scene": ("<=", 0.05),
}


def _rate(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _figures(
    outcomes: Sequence[Outcome], false_boxes: Sequence[FalseBox], n_scenes: int, verified: bool
) -> dict[str, Any]:
    def said(o: Outcome) -> tuple[str, bool]:
        return (
            (o.predicted, o.accepted) if verified else (o.embedding_predicted, o.embedding_accepted)
        )

    detected = [o for o in outcomes if o.detected]
    known = [o for o in detected if o.gt.known]
    unknown = [o for o in detected if not o.gt.known]
    in_view = [
        o
        for o in outcomes
        if o.gt.known and o.gt.visible >= UNOCCLUDED and short_side(o.gt.corners) >= BIG_PX
    ]
    big = [o for o in in_view if o.detected]
    right = [said(o)[1] and said(o)[0] == o.gt.card_id for o in known]
    reported_known = [said(o)[1] for o in detected]
    n_right = sum(right)
    n_false_known = sum(fb.reported_known if verified else fb.embedding_known for fb in false_boxes)
    n_known_reports = sum(reported_known) + n_false_known
    n_false = sum(fb.reported if verified else True for fb in false_boxes)
    return {
        "named_right_unoccluded_80px": _rate(
            [said(o)[1] and said(o)[0] == o.gt.card_id for o in big]
        ),
        "n_unoccluded_80px": len(big),
        # end to end: of every such card in view, detected or not (what a user sees)
        "named_right_unoccluded_80px_in_view": _rate(
            [o.detected and said(o)[1] and said(o)[0] == o.gt.card_id for o in in_view]
        ),
        "n_unoccluded_80px_in_view": len(in_view),
        "best_candidate_right_unoccluded_80px": _rate([said(o)[0] == o.gt.card_id for o in big]),
        "reprints_named_right": _rate(
            [said(o)[1] and said(o)[0] == o.gt.card_id for o in big if o.gt.reprint]
        ),
        "n_reprints": sum(o.gt.reprint for o in big),
        "named_right_all_known": _rate(right),
        "precision_known": round(n_right / n_known_reports, 4) if n_known_reports else None,
        "n_reported_known": n_known_reports,
        "unknown_flagged": _rate([not said(o)[1] for o in unknown]),
        "known_flagged": _rate([not said(o)[1] for o in known]),
        "false_cards_per_scene": round(n_false / n_scenes, 4) if n_scenes else None,
        "false_cards": n_false,
    }


def decision_report(
    outcomes: Sequence[Outcome], false_boxes: Sequence[FalseBox], n_scenes: int
) -> dict[str, Any]:
    """Both decisions' figures, the tiers, inlier percentiles and the targets."""
    verified = _figures(outcomes, false_boxes, n_scenes, verified=True)
    detected = [o for o in outcomes if o.detected]
    right_inliers = sorted(
        o.inliers for o in detected if o.gt.known and o.predicted == o.gt.card_id and o.inliers
    )
    return {
        "verified": verified,
        "embedding_only": _figures(outcomes, false_boxes, n_scenes, verified=False),
        "tiers_known": dict(Counter(o.confidence for o in detected if o.gt.known)),
        "tiers_unknown": dict(Counter(o.confidence for o in detected if not o.gt.known)),
        "runner_up_reported": sum(bool(o.runner_up) for o in detected),
        # the worst outcome, one by one: a card reported known that is another card
        "wrong_known": [
            {
                "card": o.gt.card_id,
                "named": o.predicted,
                "inliers": o.inliers,
                "reprint": o.gt.reprint,
                "visible": round(o.gt.visible, 2),
                "short_side_px": round(short_side(o.gt.corners)),
            }
            for o in detected
            if o.gt.known and o.accepted and o.predicted != o.gt.card_id
        ],
        "right_card_inliers_p5_p50": [
            right_inliers[int(0.05 * (len(right_inliers) - 1))] if right_inliers else None,
            right_inliers[len(right_inliers) // 2] if right_inliers else None,
        ],
        "targets": {
            key: {
                "value": verified[key],
                "target": f"{op} {target}",
                "met": verified[key] is not None
                and (verified[key] >= target if op == ">=" else verified[key] <= target),
            }
            for key, (op, target) in TARGETS.items()
        },
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def decision_markdown(d: dict[str, Any]) -> list[str]:
    """The decision section of report.md."""
    lines = [
        "",
        "## Decision: verified (retrieve, then verify) beside the embedding alone",
        "",
        "| figure | verified | embedding only | target | met |",
        "|---|---|---|---|---|",
    ]
    v, e = d["verified"], d["embedding_only"]
    for key in v:
        gate = d["targets"].get(key)
        target = gate["target"] if gate else "-"
        met = ("yes" if gate["met"] else "NO") if gate else "-"
        lines.append(f"| {key} | {_fmt(v[key])} | {_fmt(e[key])} | {target} | {met} |")
    lines += [
        "",
        f"Tiers of detected known cards: {d['tiers_known']}; of unknown cards: "
        f"{d['tiers_unknown']}. Runner-up reported for {d['runner_up_reported']} cards. "
        f"Inliers of the right card (5th percentile, median): {d['right_card_inliers_p5_p50']}.",
    ]
    wrong = d.get("wrong_known", [])
    if wrong:
        named = "; ".join(
            f"{w['card']} named {w['named']} ({w['inliers']} inliers, {w['visible']:.0%} visible, "
            f"{w['short_side_px']} px{', a reprint' if w['reprint'] else ''})"
            for w in wrong
        )  # fmt: skip
        lines.append(f"Known cards named as another card: {named}.")
    return lines
