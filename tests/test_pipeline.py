"""edge.recognize.recognizer.Recognizer on a real bundle: the factory bundle (random weights: plumbing and
index behaviour) and, when it exists, the demo bundle (end-to-end identification)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edge.bundles.errors import BundleDimensionError
from edge.cli.bench import compose_scene
from edge.config import RuntimeSettings
from edge.errors import BackendError, BadImageError, BundleHashMismatchError
from edge.recognize.recognizer import Recognizer
from edge.types import OrientedBox
from tests import bundle_factory
from tests.bundle_factory import card_images_for, demo_bundle_or_none

# The project-wide fixtures (tests/conftest.py may also import them: the bundle is built once).
factory_bundle = bundle_factory.factory_bundle
bundle_copy = bundle_factory.bundle_copy

SETTINGS = RuntimeSettings(onnx_threads=1, backend="onnx")


@pytest.fixture(scope="module")
def rec(factory_bundle: Path) -> Iterator[Recognizer]:
    recognizer = Recognizer.from_bundle(factory_bundle, SETTINGS)
    yield recognizer
    recognizer.close()


def _full_box(img: np.ndarray) -> OrientedBox:
    h, w = img.shape[:2]
    return OrientedBox(np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32), 1.0)


def test_loads_with_backend_reasons(rec: Recognizer) -> None:
    assert rec.bundle_id == "test-bundle-1"
    assert rec.backends["detector"].startswith("onnx") and rec.backends["embedder"].startswith(
        "onnx"
    )
    assert len(rec.catalogue) == 6


def test_scene_without_cards_gives_empty_list(rec: Recognizer) -> None:
    # given a plain grey 1280x720 frame
    frame = np.full((720, 1280, 3), 128, np.uint8)
    # when identified
    result = rec.identify(frame)
    # then no cards, and every stage was timed
    assert result.cards == [] and result.bundle_id == "test-bundle-1"
    assert result.timings.total >= result.timings.detect >= result.timings.detect_forward > 0


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10, 4), np.uint8),
    ],
)
def test_non_rgb_arrays_are_bad_images(rec: Recognizer, bad: np.ndarray) -> None:
    with pytest.raises(BadImageError):
        rec.identify(bad)


def test_selftest_scans_identify_as_themselves(rec: Recognizer, factory_bundle: Path) -> None:
    # given each selftest scan, as a crop covering the whole image
    for card_id, img in card_images_for(factory_bundle).items():
        # when embedded and matched
        [(match, top)] = rec.match(rec.embed(rec.crops(img, [_full_box(img)])))
        # then the top card is itself, and the top-k lists distinct cards
        assert match.card_id == card_id
        assert len({c.card_id for c in top}) == len(top) == 5


def test_upside_down_scan_matches_through_rot180_view(
    rec: Recognizer, factory_bundle: Path
) -> None:
    # given a scan turned 180 degrees
    card_id, img = next(iter(card_images_for(factory_bundle).items()))
    flipped = np.ascontiguousarray(img[::-1, ::-1])
    # when matched
    [(match, _)] = rec.match(rec.embed(rec.crops(flipped, [_full_box(flipped)])))
    # then it is still the same card
    assert match.card_id == card_id


def test_embed_batches_in_chunks_equal_to_single_runs(
    rec: Recognizer, factory_bundle: Path
) -> None:
    # given 10 crops (more than the manifest's max_batch of 8)
    imgs = list(card_images_for(factory_bundle).values())
    crops = [c for img in imgs for c in rec.crops(img, [_full_box(img)])] * 4
    crops = crops[:10]
    # when embedded together and one by one
    together = rec.embed(crops)
    single = np.concatenate([rec.embed([c]) for c in crops])
    # then shapes agree, rows are unit length and each matches its single run (cosine >= 0.999)
    assert together.shape == (10, 64)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert (np.sum(together * single, axis=1) >= 0.999).all()


def test_concurrent_identify_gives_the_same_results(rec: Recognizer, factory_bundle: Path) -> None:
    # given the selftest scans embedded from four threads at once
    imgs = list(card_images_for(factory_bundle).values())

    def top1(i: int) -> str:
        img = imgs[i % len(imgs)]
        return rec.match(rec.embed(rec.crops(img, [_full_box(img)])))[0][0].card_id

    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(top1, range(12)))
    # then they equal the sequential answers
    assert parallel == [top1(i) for i in range(12)]


def test_describe_is_json_and_names_backends(rec: Recognizer) -> None:
    info = json.loads(json.dumps(rec.describe()))
    assert info["backends"]["embedder"]["backend"] == "onnx"
    assert info["index"]["exact"] is True and info["index"]["vectors"] == 12


def test_tampered_bundle_does_not_load(bundle_copy: Path) -> None:
    path = bundle_copy / "embedder.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleHashMismatchError):
        Recognizer.from_bundle(bundle_copy, SETTINGS)


def test_embedder_index_dimension_mismatch_is_refused(bundle_copy: Path) -> None:
    # given a manifest whose embedder claims 128 dims over a 64-dim index (hashes still valid)
    path = bundle_copy / "manifest.json"
    raw = json.loads(path.read_text())
    raw["embedder"]["embedding_dim"] = 128
    path.write_text(json.dumps(raw))
    # then loading refuses it before any model is loaded
    with pytest.raises(BundleDimensionError):
        Recognizer.from_bundle(bundle_copy, SETTINGS)


@pytest.mark.slow
def test_demo_bundle_identifies_composed_scenes() -> None:
    # given the demo bundle and scenes composed from its selftest scans (4 cards each)
    demo = demo_bundle_or_none()
    if demo is None:
        pytest.skip("models/demo is not built yet")
    recognizer = Recognizer.from_bundle(demo, SETTINGS)
    try:
        scans = card_images_for(demo)
        ids, images = list(scans), list(scans.values())
        rng = np.random.default_rng(3)
        found = correct = placed = 0
        for _ in range(3):
            frame, chosen = compose_scene(images, rng)
            # when identified
            result = recognizer.identify(frame)
            placed += len(chosen)
            found += len(result.cards)
            truth = {ids[k] for k in chosen}
            correct += sum(c.match.known and c.match.card_id in truth for c in result.cards)
        # then most cards are found and identified (a trained demo model, loose bar)
        assert found >= 0.75 * placed
        assert correct >= 0.75 * placed
    finally:
        recognizer.close()


def test_crops_equal_rectify_for_detector_ordered_boxes(rec: Recognizer) -> None:
    # given a frame and a rotated box whose corners the detector would have ordered
    from edge.recognize.rectify import order_corners, rectify

    rng = np.random.default_rng(5)
    frame = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    raw = np.array([[300, 60], [420, 110], [330, 300], [210, 250]], np.float32)
    box = OrientedBox(order_corners(raw), 0.9)
    # when cropped by the recognizer
    [crop] = rec.crops(frame, [box])
    # then the pixels are exactly edge.recognize.rectify.rectify's
    assert np.array_equal(crop.image, rectify(frame, box, 224, 160).image)
    assert crop.box is box


def test_zero_embeddings_are_a_backend_error(
    rec: Recognizer, factory_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an embedder backend that fails silently, returning zeros
    monkeypatch.setattr(
        rec._embedder_backend,
        "run",
        lambda batch: {"embedding": np.zeros((len(batch), 64), np.float32)},
    )
    img = next(iter(card_images_for(factory_bundle).values()))
    # when embedding
    # then it raises instead of producing matches that look like "unknown card"
    with pytest.raises(BackendError, match="zero or non-finite"):
        rec.embed(rec.crops(img, [_full_box(img)]))


def test_a_bundle_without_reference_features_says_it_decides_on_the_embedding_alone(
    rec: Recognizer, factory_bundle: Path
) -> None:
    # given the test bundle, which carries no features.bin, and one of its own scans
    from edge.bundles.hotswap import full_frame_box

    scan = next(iter(card_images_for(factory_bundle).values()))
    # when described and when recognising the scan
    v = rec.describe()["verification"]
    [card], _ = rec.verdicts(scan, [full_frame_box(*scan.shape[:2])])
    # then verification is off, with the reason, and no card is ever `verified`
    assert v["enabled"] is False and "embedding alone" in v["reason"]
    assert card is not None and card.match.confidence in ("probable", "unknown")
