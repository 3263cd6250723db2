"""select_backend: HEF on Hailo when library, device and arch allow; ONNX otherwise, with a reason."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.backends.select import HailoProbe, normalize_arch, probe_hailo, select_backend
from edge.config import HailoSettings, RuntimeSettings
from edge.errors import BackendUnavailableError
from tests import hailo_helpers as hh


@pytest.fixture
def hp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    mod = hh.load_fake_hailo(monkeypatch)
    yield mod
    from edge.backends import hailo

    while hailo._shared["refs"] > 0:
        hailo.release_vdevice()
    hh.unload_fake_hailo()


def _settings(backend: str = "auto") -> RuntimeSettings:
    return RuntimeSettings(backend=backend, onnx_threads=1)  # type: ignore[arg-type]


def test_hef_runs_on_hailo_when_device_and_arch_fit(tmp_path: Path, hp: Any) -> None:
    emb, _ = hh.build_hailo_bundle(tmp_path)
    backend, reason = select_backend("embedder", emb, tmp_path, _settings(), hailo=HailoSettings())
    assert backend.key == "hailo"
    assert reason.startswith("hailo:")
    backend.close()


def test_missing_library_falls_back_to_onnx_with_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given no hailo_platform importable
    monkeypatch.setitem(sys.modules, "hailo_platform", None)
    emb = hh.embedder_spec()
    hh.embedder_onnx(tmp_path / "embedder.onnx")
    emb = emb.model_copy(
        update={"hef": hh.HefSpec(file="embedder.onnx", sha256="0" * 64, arch="hailo8l")}
    )
    # when selecting
    backend, reason = select_backend("embedder", emb, tmp_path, _settings())
    # then ONNX runs and the reason names the missing library
    assert backend.key == "onnx"
    assert reason == "onnx: hailo_platform not installed (hailo_platform)"


def test_bundle_without_hef_runs_onnx(tmp_path: Path, hp: Any) -> None:
    hh.embedder_onnx(tmp_path / "embedder.onnx")
    backend, reason = select_backend("embedder", hh.embedder_spec(), tmp_path, _settings())
    assert backend.key == "onnx"
    assert "no HEF" in reason


def test_hailo8_hef_on_hailo8l_device_falls_back_with_reason(tmp_path: Path, hp: Any) -> None:
    emb, _ = hh.build_hailo_bundle(tmp_path, arch="hailo8")
    backend, reason = select_backend("embedder", emb, tmp_path, _settings())
    assert backend.key == "onnx"
    assert reason == "onnx: HEF embedder.hef compiled for hailo8 but the device is hailo8l"


def test_forced_onnx_never_touches_hailo(tmp_path: Path, hp: Any) -> None:
    emb, _ = hh.build_hailo_bundle(tmp_path)
    backend, reason = select_backend("embedder", emb, tmp_path, _settings("onnx"))
    assert backend.key == "onnx"
    assert reason == "onnx: forced by runtime.backend=onnx"
    assert hp.fake_state.vdevices_created == 0


def test_forced_hailo_without_device_is_an_error_with_hint(tmp_path: Path, hp: Any) -> None:
    emb, _ = hh.build_hailo_bundle(tmp_path)
    hp.fake_state.devices = []
    with pytest.raises(BackendUnavailableError) as e:
        select_backend("embedder", emb, tmp_path, _settings("hailo"))
    assert e.value.hint


def test_busy_device_falls_back_to_onnx_in_auto(tmp_path: Path, hp: Any) -> None:
    emb, _ = hh.build_hailo_bundle(tmp_path)
    hp.fake_state.busy_other_process = True
    backend, reason = select_backend("embedder", emb, tmp_path, _settings())
    assert backend.key == "onnx"
    assert "busy" in reason


def test_probe_reports_the_device_arch(hp: Any) -> None:
    assert probe_hailo() == HailoProbe(True, "hailo8l", "", "4.23.0")


@pytest.mark.parametrize(
    ("raw", "arch"),
    [("HAILO8L", "hailo8l"), ("DeviceArchitectureTypes.HAILO8", "hailo8"), ("HAILO8_B0", "hailo8")],
)
def test_normalize_arch(raw: str, arch: str) -> None:
    assert normalize_arch(raw) == arch
