"""compile-hef orchestration against a recording double of the Dataflow Compiler's ClientRunner.

What needs no compiler is tested for real: the model script, the calibration set, the cut
graph. The double's emulator runs the translated ONNX with the script's normalisation, so the
parity gate sees real numbers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.bundles.manifest import InputSpec, load_manifest
from tests.bundle_factory import *  # noqa: F403  (fixtures factory_bundle, bundle_copy)
from tests.hailo_helpers import FAKES
from training.hailo_compile import CompileError, compile_bundle, model_script


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delitem(sys.modules, "hailo_sdk_client", raising=False)
    mod = importlib.import_module("hailo_sdk_client")
    mod.instances.clear()
    mod.ClientRunner.emulation_noise = 0.0
    yield mod
    sys.modules.pop("hailo_sdk_client", None)


def _calib(bundle: Path, out: Path, n: int = 4) -> Path:
    manifest = load_manifest(bundle / "manifest.json")
    rng = np.random.default_rng(0)
    out.mkdir(exist_ok=True)
    for role in ("detector", "embedder"):
        spec = getattr(manifest, role).input
        np.save(
            out / f"{role}.npy",
            rng.integers(0, 256, (n, spec.height, spec.width, 3)).astype(np.float32),
        )
    return out


def test_model_script_puts_manifest_normalisation_in_the_network() -> None:
    spec = InputSpec(
        height=224, width=160, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)
    )
    text = model_script(spec, calibset_size=1024)
    assert (
        "normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])" in text
    )
    assert "calibset_size=1024" in text


def test_missing_compiler_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from training.hailo_compile import import_sdk

    monkeypatch.setitem(sys.modules, "hailo_sdk_client", None)
    with pytest.raises(CompileError) as e:
        import_sdk()
    assert "developer-zone" in (e.value.hint or "")


@pytest.mark.slow
@pytest.mark.train
def test_compile_bundle_cuts_detector_and_records_hefs(
    bundle_copy: Path, sdk: Any, tmp_path: Path
) -> None:
    from edge.bundles.files import verify_bundle

    calib = _calib(bundle_copy, tmp_path / "calib")
    # when both models are compiled for hailo8l
    manifest = compile_bundle(bundle_copy, calib, arch="hailo8l")
    det_runner, emb_runner = sdk.instances
    translate = dict(det_runner.calls)["translate_onnx_model"]
    # then the detector was cut at nine head convs in (box, cls, angle) per stride order
    ends = translate["end_node_names"]
    assert len(ends) == 9
    assert [e.split("/")[2][:3] for e in ends] == ["cv2", "cv3", "cv4"] * 3
    # and the HEF output order maps back to those nodes, whatever order the compiler used
    assert manifest.detector.hef is not None
    assert manifest.detector.hef.output_names == tuple(
        f"cardedge_detector/output_layer{i + 1}" for i in range(9)
    )
    # and the optimiser got the NHWC float32 calibration set
    assert dict(emb_runner.calls)["optimize"]["shape"][1:] == (
        manifest.embedder.input.height,
        manifest.embedder.input.width,
        3,
    )
    # and HEFs, arch and hashes are in the manifest; the bundle still verifies
    assert manifest.embedder.hef is not None and manifest.embedder.hef.arch == "hailo8l"
    assert (bundle_copy / "embedder.hef").read_bytes().startswith(b"RECORDED-HEF:hailo8l")
    verify_bundle(bundle_copy)


@pytest.mark.slow
@pytest.mark.train
def test_emulator_divergence_fails_the_compile(bundle_copy: Path, sdk: Any, tmp_path: Path) -> None:
    calib = _calib(bundle_copy, tmp_path / "calib")
    sdk.ClientRunner.emulation_noise = 5.0
    with pytest.raises(CompileError, match="diverges"):
        compile_bundle(bundle_copy, calib, arch="hailo8l", roles=("embedder",))
    assert not (bundle_copy / "embedder.hef").exists()
