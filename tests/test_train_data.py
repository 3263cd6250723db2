"""Training data: one preprocessing implementation, deterministic augmentation, retrieval metrics,
threshold calibration."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.recognize.embed import preprocess  # noqa: E402
from training import data  # noqa: E402
from training.index_build import calibrate, top2  # noqa: E402

pytestmark = pytest.mark.train


def _crop_folder(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"card{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 256, (60, 40, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / f"{i}.jpg"), img)
    return root


def test_collate_is_exactly_edge_embed_preprocess(tmp_path: Path) -> None:
    # given a crop dataset without augmentation and two input specs
    ds = data.crop_dataset(_crop_folder(tmp_path / "cls"), (56, 40))
    specs = [data.embedder_spec(56, 40), data.embedder_spec(28, 20)]
    items = [ds[i] for i in range(len(ds))]
    # when collated
    inputs, labels, indices = data.make_collate(specs)(items)
    # then each input is bit-identical to edge.recognize.embed.preprocess of the same uint8 crops
    crops = np.stack([it[0] for it in items])
    for spec, x in zip(specs, inputs, strict=True):
        np.testing.assert_array_equal(x.numpy(), preprocess(crops, spec))
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert indices.tolist() == list(range(6))


def test_augmentation_repeats_per_sample_and_variant(tmp_path: Path) -> None:
    # given an augmenting dataset
    ds = data.crop_dataset(_crop_folder(tmp_path / "cls"), (56, 40), augment_strength=1.0)
    # when the same sample is read twice in one epoch and once in another variant
    ds.set_epoch(0)
    a, b = ds[1][0], ds[1][0]
    ds.set_epoch(1)
    c = ds[1][0]
    # then a variant repeats exactly (cacheable) and another variant differs
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_retrieval_topk_collapses_views_to_cards() -> None:
    # given a gallery with two views per card and queries near card "b" and "a"
    gallery = np.eye(4, dtype=np.float32)
    gallery_ids = ["a", "a", "b", "b"]
    queries = np.array([[0, 0, 0.9, 0.1], [0.2, 0, 0, 0.8]], dtype=np.float32)
    # when scored
    result = data.retrieval_topk(queries, ["b", "a"], gallery, gallery_ids, ks=(1, 2))
    # then the first is a hit, the second only within top-2
    assert result == {"top1": 0.5, "top2": 1.0}


def test_top2_reports_the_margin_to_the_best_other_card() -> None:
    # given references of two cards (two views each) and one query
    refs = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], dtype=np.float32)
    ids = ["a", "a", "b", "b"]
    q = np.array([[0.6, 0.8]], dtype=np.float32)
    # when searched
    best, score, margin = top2(q, refs, ids)
    # then card b wins with score 1.0, margin to a's best view (0.96)
    assert best == ["b"]
    assert score[0] == pytest.approx(1.0, abs=1e-6)
    assert margin[0] == pytest.approx(1.0 - 0.96, abs=1e-6)


def test_calibration_keeps_false_accepts_under_the_target() -> None:
    # given well-separated known (high score) and unknown (low score) crops
    rng = np.random.default_rng(0)
    ks, km = rng.uniform(0.8, 1.0, 200), rng.uniform(0.1, 0.3, 200)
    us, um = rng.uniform(0.3, 0.7, 200), rng.uniform(0.0, 0.1, 200)
    correct = np.ones(200, dtype=bool)
    # when calibrated for a 1% false-accept rate
    cal = calibrate((ks, km, correct), (us, um), 0.01)
    # then unknowns accepted <= 1% and every known crop passes
    accepted_unknown = ((us >= cal.unknown_score) & (um >= cal.unknown_margin)).mean()
    assert accepted_unknown <= 0.01
    assert cal.false_accept_rate == pytest.approx(accepted_unknown)
    assert cal.known_accept_rate == pytest.approx(1.0)


def test_calibration_trades_known_accepts_when_classes_overlap() -> None:
    # given overlapping score distributions
    rng = np.random.default_rng(1)
    ks, us = rng.normal(0.7, 0.1, 500), rng.normal(0.5, 0.1, 500)
    km, um = np.full(500, 0.2), np.full(500, 0.2)
    # when calibrated for 5% false accepts
    cal = calibrate((ks, km, np.ones(500, bool)), (us, um), 0.05)
    # then the rate is met and some known crops are flagged
    assert cal.false_accept_rate <= 0.05
    assert 0.0 < cal.known_flagged_rate < 0.5
