"""training.demo: what the committed demo report records about its build."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.runs import portable_path as _portable


def test_report_paths_name_no_folder_of_the_building_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a build run from a repository folder
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    monkeypatch.chdir(repo)
    # then paths inside it are recorded relative to it, paths elsewhere by their name only
    assert _portable(Path("models/demo")) == "models/demo"
    assert _portable(repo / "models" / "demo") == "models/demo"
    assert _portable(tmp_path / "elsewhere" / "demo") == "demo"


def test_the_committed_scans_are_the_bundles_reference_images_scaled_down(tmp_path: Path) -> None:
    # given a world's catalogue folder (the images the bundle's reference features come from)
    from dataclasses import replace

    import cv2
    import numpy as np

    from training.demo import write_reference
    from training.synth.card_render import render_card
    from training.synth.catalogue import load_catalogue, procedural_catalogue, write_catalogue_dir

    records = procedural_catalogue(3, 5)
    full = {r.card_id: render_card(r, 512) for r in records}
    write_catalogue_dir(tmp_path / "world", records, full)
    # when the committed catalogue folder is written at 224 px
    write_reference(records, tmp_path / "world", tmp_path / "reference", 224)
    # then each scan is the world's image scaled down (within JPEG's loss), not a fresh 224 px
    # render, whose text and ornaments the renderer lays out anew for that pixel size
    for r in load_catalogue(tmp_path / "reference"):
        assert r.image_path is not None
        scan = cv2.cvtColor(cv2.imread(str(r.image_path)), cv2.COLOR_BGR2RGB).astype(np.float32)
        world = cv2.imread(str(tmp_path / "world" / "images" / f"{r.card_id}.jpg"))
        scaled = cv2.cvtColor(
            cv2.resize(world, scan.shape[1::-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
        )
        again = render_card(replace(r, image_path=None), 224)  # the procedural card afresh
        # 3.7 against 9.8 grey levels on average when written (JPEG's loss on fine texture)
        assert np.abs(scan - scaled).mean() < 0.5 * np.abs(scan - again).mean()
