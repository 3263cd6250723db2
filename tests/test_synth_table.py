"""The detector's world: real backgrounds by family (one held out), things that are not cards,
card backs as a second class, and the detection report that reads them back."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.synth import photos
from training.synth.card_back import BACK_ID, TEST_BACK_DESIGNS, TRAIN_BACK_DESIGNS, backs
from training.synth.card_render import render_card
from training.synth.catalogue import procedural_catalogue
from training.synth.clutter import KINDS, random_thing
from training.synth.io import item_rng, load_scene_dir
from training.synth.scene import DETECTOR_SCENES, TABLE_TEST_SCENES, TRAIN_SCENES, render_scene
from training.synth.writers import write_obb, write_test_scenes

os.environ.setdefault("OMP_NUM_THREADS", "1")
cv2.setNumThreads(1)


def _photo(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.clip(np.array(colour) + rng.normal(0, 20, (180, 320, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


@pytest.fixture()
def background_dir(tmp_path: Path) -> Path:
    """Two training families and the held-out one, each a flat colour we can recognise."""
    root = tmp_path / "backgrounds"
    for i in range(3):
        _photo(root / "plasma" / f"p{i}.jpg", (200, 40, 40), i)  # BGR blue-ish red
        _photo(root / "nexuiz" / f"n{i}.jpg", (40, 200, 40), i)
        _photo(root / "mate" / "nature" / f"m{i}.jpg", (40, 40, 200), i)
    return root


@pytest.fixture(scope="module")
def cards() -> dict[str, np.ndarray]:
    return {r.card_id: render_card(r, 256) for r in procedural_catalogue(6, 0)}


def test_training_scenes_use_training_photo_families_only(
    background_dir: Path, cards: dict[str, np.ndarray]
) -> None:
    # given a background folder with the held-out family "mate" in it
    cfg = replace(DETECTOR_SCENES, background_dir=background_dir, background_image_prob=1.0)
    # when many training scenes are drawn
    families = {render_scene(cards, item_rng(0, "t", i), cfg).background for i in range(24)}
    # then both training families appear, named by folder, and the held-out one never does
    assert families == {"photo:plasma", "photo:nexuiz"}


def test_held_out_scenes_use_the_held_out_family(
    background_dir: Path, cards: dict[str, np.ndarray]
) -> None:
    cfg = replace(TABLE_TEST_SCENES, background_dir=background_dir, background_image_prob=1.0)
    families = {render_scene(cards, item_rng(0, "h", i), cfg).background for i in range(8)}
    assert families == {"photo:mate"}


def test_default_configs_draw_the_same_scenes_as_before(cards: dict[str, np.ndarray]) -> None:
    # given the embedder's and calibration's config, which has no clutter or backs
    a = render_scene(cards, item_rng(3, "obb-train", 1), TRAIN_SCENES)
    # when backs are offered but the config's back_prob is 0
    b = render_scene(cards, item_rng(3, "obb-train", 1), TRAIN_SCENES, backs=backs((0,)))
    # then the scene is byte-identical (the new draws happen only when asked for)
    assert np.array_equal(a.image, b.image)
    assert [c.card_id for c in a.cards] == [c.card_id for c in b.cards]


def test_every_kind_of_clutter_draws_an_opaque_patch() -> None:
    rng = np.random.default_rng(0)
    for kind, draw in KINDS.items():
        thing = draw(rng) if kind != "photo" else draw(rng, None)
        assert thing.image.shape[:2] == thing.alpha.shape, kind
        assert thing.alpha.max() == 255 and thing.image.dtype == np.uint8, kind
        assert 0 < thing.size_frac[0] < thing.size_frac[1] < 1, kind
    assert random_thing(rng).kind in KINDS


def test_clutter_changes_pixels_but_adds_no_labels(cards: dict[str, np.ndarray]) -> None:
    # given the same scene with and without objects on the table
    plain = replace(DETECTOR_SCENES, back_prob=0.0, clutter=(0, 0), effects=False)
    busy = replace(plain, clutter=(4, 4))
    ids = ["0000", "0001"] if "0000" in cards else sorted(cards)[:2]
    a = render_scene(cards, item_rng(1, "c", 0), plain, card_ids=ids)
    b = render_scene(cards, item_rng(1, "c", 0), busy, card_ids=ids)
    # then only the cards are labelled, in the same places
    assert [c.card_id for c in a.cards] == [c.card_id for c in b.cards] == ids
    for ca, cb in zip(a.cards, b.cards, strict=True):
        assert np.allclose(ca.corners, cb.corners)
    assert not np.array_equal(a.image, b.image)


def test_face_down_cards_are_class_one_in_the_obb_labels(
    tmp_path: Path, cards: dict[str, np.ndarray]
) -> None:
    # given a detector world where half the cards lie face down
    cfg = replace(DETECTOR_SCENES, back_prob=0.5, n_cards=(3, 5))
    # when the OBB dataset is written
    write_obb(tmp_path, cards, 6, 1, 0, cfg, backs=backs(TRAIN_BACK_DESIGNS[:2], (), 256))
    # then labels carry both classes and data.yaml names them
    classes = [
        line.split()[0]
        for f in (tmp_path / "labels" / "train").glob("*.txt")
        for line in f.read_text().splitlines()
    ]
    assert set(classes) == {"0", "1"}
    assert "back" in (tmp_path / "data.yaml").read_text()


def test_held_out_backs_are_another_design_and_never_known(
    tmp_path: Path, cards: dict[str, np.ndarray]
) -> None:
    assert not set(TEST_BACK_DESIGNS) & set(TRAIN_BACK_DESIGNS)
    train_back, test_back = backs(TRAIN_BACK_DESIGNS[:1])[0], backs(TEST_BACK_DESIGNS)[0]
    assert train_back.shape == test_back.shape and not np.array_equal(train_back, test_back)
    # when held-out scenes are written with backs
    recs = procedural_catalogue(6, 0)
    cfg = replace(TABLE_TEST_SCENES, back_prob=0.6)
    write_test_scenes(tmp_path, recs, [], cards, 4, 0, cfg, backs=backs(TEST_BACK_DESIGNS, (), 256))
    # then a face-down card's truth says so, is not a known card, and reads back
    truths = [c for s in load_scene_dir(tmp_path) for c in s.cards]
    downs = [c for c in truths if c.face_down]
    assert downs and all(c.card_id == BACK_ID and not c.known for c in downs)
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert "face_down" in doc["cards"][0]


def test_a_real_back_image_joins_the_designs(tmp_path: Path) -> None:
    path = tmp_path / "back.png"
    cv2.imwrite(str(path), np.full((300, 420, 3), 77, np.uint8))  # landscape: turned upright
    got = backs((0,), (path,), 256)
    assert len(got) == 2 and got[1].shape == got[0].shape and int(got[1][10, 10, 0]) == 77
    with pytest.raises(OSError, match="card back"):
        backs((), (tmp_path / "missing.png",))


def fake_packages(root: Path) -> None:
    """Stand-ins for the installed packages' folders and the textures zip under `root`."""
    wall = root / "usr/share/wallpapers/Autumn/contents/images"
    _photo(wall / "1920x1080.jpg", (90, 120, 150), 0)
    _photo(wall / "1080x1920.jpg", (90, 120, 150), 1)  # portrait: skipped
    _photo(root / "usr/share/backgrounds/mate/nature/Wood.jpg", (30, 80, 120), 2)
    _photo(root / "usr/share/backgrounds/gnome/blobs.jpg", (200, 100, 50), 3)
    tex = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8))[
        1
    ]
    pk3 = root / "usr/share/games/nexuiz/data/textures.pk3"
    pk3.parent.mkdir(parents=True)
    with zipfile.ZipFile(pk3, "w") as z:
        z.writestr("textures/wood/plank.jpg", tex.tobytes())
        z.writestr("textures/wood/plank_norm.jpg", tex.tobytes())  # a normal map: not a surface


def test_gather_writes_one_folder_per_family(tmp_path: Path) -> None:
    fake_packages(tmp_path / "root")
    # when gathered
    counts = photos.gather(tmp_path / "out", root=tmp_path / "root")
    # then each family has its folder, textures are tiled surfaces, normal maps are left out
    assert counts == {"plasma": 1, "mate": 1, "gnome": 1, "nexuiz": 1}
    surface = cv2.imread(str(next((tmp_path / "out" / "nexuiz").glob("*.jpg"))))
    assert surface.shape[:2] == (720, 1280)
    assert set(photos.TRAIN_PHOTO_FAMILIES).isdisjoint(photos.HELD_OUT_PHOTO_FAMILIES)


def test_detection_report_counts_backs_sizes_and_families() -> None:
    from training.evaluate_detection import DetOutcome, detection_report
    from training.synth.io import TruthCard

    def truth(side: float, face_down: bool = False, visible: float = 1.0) -> TruthCard:
        c = np.array([[0, 0], [side, 0], [side, side * 1.4], [0, side * 1.4]], np.float32)
        return TruthCard(
            "back" if face_down else "a",
            c,
            visible,
            5.0,
            0.1,
            0.0,
            0.0,
            not face_down,
            None,
            face_down,
        )

    outcomes = [
        DetOutcome.of(truth(100), "photo:mate", True, False),
        DetOutcome.of(truth(100), "granite", False, False),
        DetOutcome.of(truth(50), "granite", True, False),
        DetOutcome.of(truth(100, visible=0.5), "granite", False, False),
        DetOutcome.of(truth(100, face_down=True), "granite", True, True),
        DetOutcome.of(truth(100, face_down=True), "granite", True, False),
    ]
    r = detection_report(outcomes, n_reported=6, n_false=1, n_scenes=2)
    assert r["recall_unoccluded_80px"] == 0.5 and r["recall_unoccluded_40_80px"] == 1.0
    assert r["by_family"] == {"granite": 0.3333, "photo:mate": 1.0}
    assert r["recall_worst_family"] == 0.3333
    assert r["backs_detected"] == 1.0 and r["backs_as_faces"] == 0.5
    assert r["false_per_scene"] == 0.5 and r["precision"] == round(1 - 1 / 6, 4)
    assert r["targets"]["backs_as_faces"]["met"] is False


def test_training_hours_skip_the_time_a_run_lay_stopped() -> None:
    from training.detector_curve import training_hours

    # given three epochs of an hour each, with a day's stop before the third
    rows = [
        {"time": 3600.0, "epoch_s": 3600.0},
        {"time": 7200.0, "epoch_s": 3600.0},
        {"time": 7200.0 + 86_400 + 3600, "epoch_s": 3600.0},
    ]
    assert training_hours(rows) == [1.0, 2.0, 3.0]
    # an epoch logged without its length counts as the given first epoch's
    assert training_hours([{"time": 1.0}], first_epoch_s=1800.0) == [0.5]
