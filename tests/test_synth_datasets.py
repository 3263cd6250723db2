"""The written datasets load in the tools that train on them; the tiny world builds fast."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.synth.catalogue import load_catalogue
from training.synth.io import load_scene_dir
from training.synth.world import TinyWorld, tiny_world

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
cv2.setNumThreads(1)

N_CARDS, N_SCENES = 12, 8


@pytest.fixture(scope="module")
def world_and_seconds(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyWorld, float]:
    t0 = time.perf_counter()
    world = tiny_world(tmp_path_factory.mktemp("world"), n_cards=N_CARDS, n_scenes=N_SCENES, seed=0)
    return world, time.perf_counter() - t0


@pytest.fixture(scope="module")
def world(world_and_seconds: tuple[TinyWorld, float]) -> TinyWorld:
    return world_and_seconds[0]


def test_tiny_world_builds_in_seconds(world_and_seconds: tuple[TinyWorld, float]) -> None:
    # given / when the tiny world is built (fixture), then it took seconds, not minutes
    _, seconds = world_and_seconds
    assert seconds < 30.0  # ~3 s on one idle core; generous for a shared CI machine


def test_tiny_world_writes_every_folder(world: TinyWorld) -> None:
    # then every dataset folder exists and holds items
    assert len(load_catalogue(world.catalogue)) == N_CARDS
    assert len(load_catalogue(world.unknown)) >= 2
    assert len(list((world.obb / "images" / "train").glob("*.jpg"))) == N_SCENES
    assert len(list(world.calib.glob("*.jpg"))) == 4
    assert sorted(p.name for p in (world.cls / "train").iterdir()) == sorted(
        r.card_id for r in world.records
    )


def test_unknown_cards_are_disjoint_from_the_catalogue(world: TinyWorld) -> None:
    known = {r.card_id for r in world.records}
    unknown = {r.card_id for r in world.unknown_records}
    assert known.isdisjoint(unknown)
    assert {r.art_id for r in world.records}.isdisjoint({r.art_id for r in world.unknown_records})


def test_test_scenes_load_with_ground_truth(world: TinyWorld) -> None:
    # when the held-out scenes are read back
    scenes = list(load_scene_dir(world.test_scenes))
    # then each has its image and labelled cards, known flags matching the catalogue
    assert len(scenes) == N_SCENES
    known = {r.card_id for r in world.records}
    cards = [c for s in scenes for c in s.cards]
    assert cards and all(c.known == (c.card_id in known) for c in cards)
    assert all(c.corners.shape == (4, 2) for c in cards)
    img = scenes[0].image()
    assert img.shape == (scenes[0].height, scenes[0].width, 3)


def test_obb_labels_match_the_scene_card_count(world: TinyWorld) -> None:
    for label in (world.obb / "labels" / "train").glob("*.txt"):
        rows = [ln.split() for ln in label.read_text().splitlines()]
        assert all(len(r) == 9 and r[0] in ("0", "1") for r in rows)  # card face or back
        assert all(0.0 <= float(v) <= 1.0 for r in rows for v in r[1:])


def test_obb_dataset_loads_in_ultralytics(world: TinyWorld) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    # when ultralytics checks the data.yaml and reads one training item as an OBB sample
    data = check_det_dataset(str(world.obb / "data.yaml"))
    ds = YOLODataset(img_path=data["train"], data=data, task="obb", imgsz=320, augment=False)
    label_file = world.obb / "labels" / "train" / f"{Path(ds.im_files[0]).stem}.txt"
    n_boxes = len(label_file.read_text().splitlines())
    item = ds[0]
    # then the item has one rotated box (x, y, w, h, angle) per labelled card (face or back)
    assert data["nc"] == 2 and data["names"] == {0: "card", 1: "back"}
    assert len(ds) == N_SCENES
    assert tuple(item["bboxes"].shape) == (n_boxes, 5)


def test_cls_dataset_loads_in_torchvision_imagefolder(world: TinyWorld) -> None:
    pytest.importorskip("torch")
    datasets = pytest.importorskip("torchvision.datasets")

    # when torchvision reads the crops
    train = datasets.ImageFolder(str(world.cls / "train"))
    val = datasets.ImageFolder(str(world.cls / "val"))
    # then there is one class per card, same classes in both splits, crops 160 x 224
    assert len(train.classes) == N_CARDS and train.classes == val.classes
    img, _ = train[0]
    assert img.size == (160, 224)


def test_cls_crops_show_the_card_upright(world: TinyWorld) -> None:
    # given a card's flat scan and its crops (scene crops are the even-numbered ones)
    rec = world.records[0]
    scan = cv2.resize(
        cv2.imread(str(world.catalogue / "images" / f"{rec.card_id}.jpg")), (160, 224)
    )
    crops = [cv2.imread(str(p)) for p in sorted((world.cls / "train" / rec.card_id).glob("*.jpg"))]
    # then each crop resembles the upright scan more than its 180-degree turn
    for crop in crops:
        upright = np.abs(crop.astype(int) - scan.astype(int)).mean()
        turned = np.abs(crop.astype(int) - scan[::-1, ::-1].astype(int)).mean()
        assert upright < turned
