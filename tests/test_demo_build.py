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
