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


def test_a_share_of_the_calibration_scenes_shows_the_cards_from_lower_resolution_copies(
    monkeypatch,
) -> None:
    # given sharp 512 px card images, known and unknown
    import cv2
    import numpy as np

    import training.calibrate_verify as cv
    from training.synth.card_render import render_card
    from training.synth.catalogue import procedural_catalogue

    cards = {r.card_id: render_card(r, 512) for r in procedural_catalogue(8, 2)}
    known, unknown = dict(list(cards.items())[:6]), dict(list(cards.items())[6:])

    def sharpness(soft_share: float) -> list[float]:
        monkeypatch.setattr(cv, "SOFT_SCENES", soft_share)
        values = []
        for scene, truth in cv.fresh_scenes(known, unknown, 3, seed=3):
            grey = cv2.cvtColor(scene.image, cv2.COLOR_RGB2GRAY)
            inside = np.zeros(grey.shape, np.uint8)
            for g in truth:
                cv2.fillConvexPoly(inside, g.corners.astype(np.int32), 1)
            values.append(float(cv2.Laplacian(grey, cv2.CV_64F)[inside > 0].var()))
        return values

    # when three scenes are made with every scene softened, and with none (the same layouts:
    # the softening draws from its own generator)
    soft, sharp = sharpness(1.0), sharpness(0.0)
    # then each softened scene's cards carry less fine detail (0.68-0.84x when written: a card
    # drawn smaller than its copy loses little)
    assert all(a < 0.9 * b for a, b in zip(soft, sharp, strict=True)), (soft, sharp)
