"""The verification thresholds chosen from evidence: the two usual operating points, then the
spread point (inliers over much of the card, colours loose), the framed point (few inliers whose
homography maps the card onto its box) and the distinct point (few inliers, nothing else close)
beside them."""

from __future__ import annotations

from training.calibrate_verify import (
    BUFFER_CELLS,
    BUFFER_IOU,
    OTHER,
    OWN,
    Evidence,
    Result,
    choose_rule,
)


def box(kind: str, results: list[Result]) -> Evidence:
    return Evidence(kind, 0.9, results, small=False, score=0.9, margin=0.1, top1_right=True)


def test_a_card_alone_at_few_inliers_is_verified_where_template_lookalikes_are_not() -> None:
    # given known cards seen clearly (40 inliers) and known cards seen poorly (14 inliers, the
    # other candidates at 4), and unknown cards of the same style whose best candidate also has
    # 14 inliers, next to another candidate at 12 (the shared template)
    clear = [box("known", [(40, 0.95, OWN), (4, 0.2, OTHER)]) for _ in range(100)]
    poor = [box("known", [(14, 0.9, OWN), (4, 0.2, OTHER), (3, 0.1, OTHER)]) for _ in range(100)]
    lookalike = [box("unknown", [(14, 0.9, OTHER), (12, 0.9, OTHER)]) for _ in range(100)]
    # when the rule is chosen
    rule, n_right = choose_rule([*clear, *poor], lookalike)
    t_i, _, s_i, _, d_i, d_p, d_r = rule[:7]
    # then the usual points stay above the lookalikes' inliers (even loosened by the buffer),
    # and the distinct point verifies the poorly seen cards, which the lookalikes cannot pass
    assert t_i > 14 and s_i > 14
    assert d_i <= 14 and d_p <= 0.9 and d_r * 4 <= 14 and d_r * 12 > 14
    assert n_right == 200


def test_no_distinct_point_where_it_would_let_a_wrong_card_through() -> None:
    # given poorly seen known cards whose runner-up is as far behind as an unknown card's
    clear = [box("known", [(40, 0.95, OWN), (4, 0.2, OTHER)]) for _ in range(100)]
    poor = [box("known", [(14, 0.9, OWN), (4, 0.2, OTHER)]) for _ in range(100)]
    alone = [box("unknown", [(14, 0.9, OTHER), (4, 0.2, OTHER)]) for _ in range(100)]
    # when the rule is chosen
    rule, n_right = choose_rule([*clear, *poor], alone)
    # then no distinct point is used (it would name the unknown cards) and only the clear pass
    assert rule[4] == 1000 and n_right == 100


def test_inliers_spread_over_the_card_verify_where_light_spoils_the_colours() -> None:
    # given known cards seen clearly, known cards under odd light (30 inliers over 14 cells of
    # the card, colours 0.4), and unknown cards of the same style whose template matches as many
    # inliers on 4 cells, colours 0.4 too
    clear = [box("known", [(40, 0.95, OWN, 16), (4, 0.2, OTHER, 2)]) for _ in range(100)]
    odd = [box("known", [(30, 0.4, OWN, 14), (4, 0.2, OTHER, 2)]) for _ in range(100)]
    lookalike = [box("unknown", [(30, 0.4, OTHER, 4), (12, 0.9, OTHER, 3)]) for _ in range(100)]
    # when the rule is chosen
    rule, n_right = choose_rule([*clear, *odd], lookalike)
    # then the spread point verifies the cards under odd light and not the lookalikes
    assert 4 + BUFFER_CELLS < rule.spread_cells <= 14 and rule.spread_inliers <= 30
    assert rule.spread_photometric <= 0.4 and n_right == 200
    # and where the lookalikes spread as widely, there is no spread point
    spread = [box("unknown", [(30, 0.4, OTHER, 14)]) for _ in range(100)]
    rule, n_right = choose_rule([*clear, *odd], spread)
    assert rule.spread_inliers == 1000 and n_right == 100


def test_few_inliers_that_map_the_card_onto_its_box_verify_where_lookalikes_map_it_askew() -> None:
    # given known cards seen clearly, known cards seen poorly (16 inliers, colours 0.85, the
    # reference's outline on the box at IoU 0.85, a runner-up at 12), and unknown cards of the
    # same style as strong by inliers, colours and runner-up whose matches map the card askew
    # (IoU 0.45)
    clear = [box("known", [(40, 0.95, OWN, 16, 0.9), (4, 0.2, OTHER, 2, 0.1)]) for _ in range(100)]
    poor = [box("known", [(16, 0.85, OWN, 6, 0.85), (12, 0.8, OTHER, 4, 0.4)]) for _ in range(100)]
    askew = [box("unknown", [(16, 0.85, OTHER, 6, 0.45), (12, 0.8, OTHER, 4, 0.4)])] * 100
    # when the rule is chosen
    rule, n_right = choose_rule([*clear, *poor], askew)
    # then the framed point verifies the poorly seen cards and asks an overlap the lookalikes
    # do not reach even loosened by the buffer
    assert rule.framed_inliers <= 16 and rule.framed_photometric <= 0.85
    assert 0.45 + BUFFER_IOU < rule.framed_iou <= 0.85 and n_right == 200
    # and where the lookalikes also map the card onto their box, there is no framed point
    framed = [box("unknown", [(16, 0.85, OTHER, 6, 0.85), (12, 0.8, OTHER, 4, 0.4)])] * 100
    rule, n_right = choose_rule([*clear, *poor], framed)
    assert rule.framed_inliers == 1000 and n_right == 100


def test_background_confidence_counts_boxes_too_small_to_verify() -> None:
    # given 100 scenes of clearly seen known cards and, on no card, 20 boxes that verify nothing
    # (confidence 0.3) and 20 too small to verify (confidence 0.6; the embedding never names a
    # small crop here, so none of them is probable)
    from training.calibrate_verify import choose

    clear = [box("known", [(40, 0.95, OWN), (4, 0.2, OTHER)]) for _ in range(100)]
    flat = [Evidence("none", 0.3, [(3, 0.1, OTHER)], False, 0.5, 0.0, False) for _ in range(20)]
    tiny = [Evidence("none", 0.6, [], True, 0.5, 0.0, False) for _ in range(20)]
    # when the thresholds are chosen
    got = choose([*clear, *flat, *tiny], n_scenes=100)
    # then background_conf keeps the small boxes out too (3 false cards allowed in 100 scenes)
    assert got.background_conf > 0.6 and got.background_dropped_rate == 1.0
