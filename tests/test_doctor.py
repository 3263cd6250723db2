"""cardedge doctor: findings with hints, against the fake hailo_platform where a device is needed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from edge.bundles.manifest import CatalogueSpec, IndexSpec, Manifest
from edge.cli.doctor import (
    check_clock,
    check_driver,
    check_hef_arch,
    check_parity,
    parse_identify,
    register,
    run_doctor,
)
from edge.config import HailoSettings
from tests import hailo_helpers as hh

IDENTIFY = """Executing on device: 0001:01:00.0
Identifying board
Control Protocol Version: 2
Firmware Version: 4.23.0 (release,app,extended context switch buffer)
Logger Version: 0
Board Name: Hailo-8
Device Architecture: HAILO8L
Serial Number: HLDDLBB241601635
"""


@pytest.fixture
def hp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    mod = hh.load_fake_hailo(monkeypatch)
    yield mod
    from edge.backends import hailo

    while hailo._shared["refs"] > 0:
        hailo.release_vdevice()
    hh.unload_fake_hailo()


def _manifest(root: Path, emb: Any, det: Any, n_selftest: int = 3) -> Manifest:
    (root / "selftest").mkdir(exist_ok=True)
    selftest = {}
    for i, img in enumerate(hh.calib_pixels(n_selftest, 88, 63, seed=7)):
        cv2.imwrite(str(root / f"selftest/c{i}.jpg"), img)
        selftest[f"selftest/c{i}.jpg"] = f"c{i}"
    return Manifest(
        schema_version=1,
        bundle_id="doctor-test",
        created="2025-01-01T00:00:00Z",
        catalogue=CatalogueSpec(sha256="0" * 64, name="t", card_count=3),
        detector=det,
        embedder=emb,
        index=IndexSpec(sha256="0" * 64, dim=hh.EMB_D, count=6),
        selftest=selftest,
    )


def test_identify_output_gives_the_device_architecture_not_the_board_name() -> None:
    assert parse_identify(IDENTIFY) == "hailo8l"


def test_identify_without_device_gives_none() -> None:
    assert parse_identify("Hailo devices not found") is None


def test_hailo8_hef_on_hailo8l_device_fails_with_recompile_hint(tmp_path: Path, hp: Any) -> None:
    emb, det = hh.build_hailo_bundle(tmp_path, arch="hailo8")
    findings = check_hef_arch(_manifest(tmp_path, emb, det), "hailo8l")
    assert [f.status for f in findings] == ["fail", "fail"]
    assert "--arch hailo8l" in findings[0].hint


def test_driver_version_mismatch_fails(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("4.20.0\n")
    finding = check_driver("4.23.0", version)
    assert finding.status == "fail"
    assert "hailo-all" in finding.hint


def test_parity_on_selftest_images_passes_for_a_faithful_hef(tmp_path: Path, hp: Any) -> None:
    emb, det = hh.build_hailo_bundle(tmp_path)
    finding = check_parity(tmp_path, _manifest(tmp_path, emb, det), HailoSettings())
    assert finding.status == "ok", finding.detail


def test_clock_before_2024_warns() -> None:
    assert check_clock(now=0.0).status == "warn"


def test_full_run_on_the_fake_device_reports_every_check(tmp_path: Path, hp: Any) -> None:
    emb, det = hh.build_hailo_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text(_manifest(tmp_path, emb, det).model_dump_json())
    version = tmp_path / "driver_version"
    version.write_text("4.23.0")
    findings = run_doctor(
        tmp_path, state_dir=tmp_path, run=lambda cmd: IDENTIFY, driver_version_file=version
    )
    checks = {f.check: f.status for f in findings}
    assert checks["hailort"] == checks["driver"] == checks["device"] == "ok"
    assert checks["detector_hef"] == checks["embedder_hef"] == checks["parity"] == "ok"
    assert {"camera", "disk", "clock"} <= set(checks)


def test_json_output_lists_findings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["doctor", "--json", "--state-dir", str(tmp_path)])
    args.func(args)
    rows = json.loads(capsys.readouterr().out)
    assert all(set(r) == {"check", "status", "detail", "hint"} for r in rows)
    assert rows[-1]["check"] == "clock"
