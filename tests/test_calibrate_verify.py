"""The verification thresholds chosen from evidence: the two usual operating points, then the
distinct point beside them (few inliers, nothing else close)."""

from __future__ import annotations

from training.calibrate_verify import OTHER, OWN, Evidence, choose_rule


def box(kind: str, results: list[tuple[int, float, int]]) -> Evidence:
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
    t_i, _, s_i, _, d_i, d_p, d_r = rule
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
