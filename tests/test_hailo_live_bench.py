"""benchmarks/hailo_live.py: the issue-7 live-loop benchmark on the Hailo test double.

One short real run on the tiny factory bundle (structure of the report, frames processed, both
models on the Hailo backend, the double removed from the process afterwards), plus the bar
arithmetic and the latency choice. No timing assertion: this machine's speed is not under test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edge.bundles.manifest import HefSpec, load_manifest
from tests.scripts import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/hailo_live.py", "hailo_live_bench")


@pytest.fixture(scope="module")
def report(bench: ModuleType, factory_bundle: Path) -> dict[str, Any]:
    # given the factory bundle, when the benchmark runs for 3 s at 30 fps
    args = bench.parse_args(["--bundle", str(factory_bundle), "--seconds", "3"])
    result: dict[str, Any] = bench.run_benchmark(args)
    return result


def test_report_has_every_section(report: dict[str, Any]) -> None:
    # then the report carries the bundle, backends, latency model, live figures and the bar
    assert {
        "bundle",
        "backends",
        "camera",
        "latency_model",
        "cards",
        "live",
        "host_ms",
        "bar",
        "bar_emulated_device",
        "projection_at_published_latencies",
        "notes",
    } <= set(report)
    assert {
        "bound_fps_every_card",
        "bound_fps_as_tracked",
        "target_fps",
        "ratio",
        "met",
        "measurable",
    } <= set(report["bar"])
    assert {"frames", "dropped", "live_fps", "embeddings_per_frame", "stage_ms"} <= set(
        report["live"]
    )


def test_run_processes_frames_on_the_hailo_backend(report: dict[str, Any]) -> None:
    # then the loop processed frames and both models ran on the (fake) Hailo backend
    assert report["live"]["frames"] > 0
    assert report["live"]["live_fps"] > 0
    assert report["host_ms"]["detect_call"]["n"] > 0
    assert all(reason.startswith("hailo:") for reason in report["backends"].values())


def test_latency_model_uses_the_defaults(report: dict[str, Any]) -> None:
    # then the emulated latencies are the published defaults (the factory manifest has no HEF)
    model = report["latency_model"]
    assert (model["detector_ms"], model["detector_from"]) == (6.4, "default")
    assert (model["embed_ms"], model["embed_from"]) == (3.0, "default")


def test_double_is_removed_from_the_process(report: dict[str, Any], bench: ModuleType) -> None:
    # then later tests in this process do not see the hailo_platform double
    assert not any(m.split(".")[0] == "hailo_platform" for m in sys.modules)
    assert str(bench.FAKES) not in sys.path


def test_bar_figures_at_published_latencies(bench: ModuleType) -> None:
    # given 6.4 ms detector, 3 ms per crop, 4 cards and a 30 fps camera
    # when the loop reaches 27 fps with 1 embedding per frame
    bar = bench.bar_figures(27.0, 30.0, 6.4, 3.0, 4, 1.0)
    # then the bound is 1000 / 18.4 fps, the target the camera's 30 fps, and 27 fps meets 0.9 x
    assert bar["bound_fps_every_card"] == pytest.approx(54.35, abs=0.01)
    assert bar["bound_fps_as_tracked"] == pytest.approx(1000 / 9.4, abs=0.01)
    assert bar["target_fps"] == 30.0
    assert bar["ratio"] == pytest.approx(0.9, abs=1e-3)
    assert bar["met"] is True
    assert bench.bar_figures(26.9, 30.0, 6.4, 3.0, 4, 1.0)["met"] is False


def test_manifest_hef_latency_is_used_unless_a_flag_overrides(
    bench: ModuleType, factory_bundle: Path
) -> None:
    # given a manifest whose embedder HEF records 7 ms per crop
    manifest = load_manifest(factory_bundle / "manifest.json")
    hef = HefSpec(file="embedder.hef", sha256="0" * 64, arch="hailo8l", latency_ms=7.0)
    manifest = manifest.model_copy(
        update={"embedder": manifest.embedder.model_copy(update={"hef": hef})}
    )
    # when no flag is given, then the manifest's figure wins; a flag wins over the manifest
    assert bench.published_latencies(manifest, None, None)["embed_ms"] == 7.0
    assert bench.published_latencies(manifest, None, None)["embed_from"] == "manifest"
    assert bench.published_latencies(manifest, None, 2.5)["embed_ms"] == 2.5


def test_memoised_chip_computes_each_input_once_and_answers_repeats_exactly(
    bench: ModuleType,
) -> None:
    # given a chip whose compute is a real function of its input, counting its calls
    import numpy as np

    calls: list[int] = []

    class Hef:
        network_name = "net"

    class Model:
        _hef = Hef()

    class Configured:
        _model = Model()

        def _compute(self, pixels: Any) -> dict[str, Any]:
            calls.append(len(pixels))
            return {"out": (pixels.astype(np.uint16).sum(axis=(1, 2)) % 251).astype(np.uint8)}

    impl = type("Impl", (), {"ConfiguredInferModel": Configured})
    original = Configured._compute
    chip = bench.MemoisedChip(impl)
    try:
        rng = np.random.default_rng(0)
        a, b, c = (rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3))
        # when batches repeat some inputs and add new ones
        first = Configured()._compute(np.stack([a, b]))
        second = Configured()._compute(np.stack([b, c, a]))
    finally:
        chip.close()
    # then only unseen inputs reach the graph, and every answer equals the graph's own
    assert calls == [2, 1]
    want = original(Configured(), np.stack([b, c, a]))["out"]
    assert np.array_equal(second["out"], want)
    assert np.array_equal(first["out"], original(Configured(), np.stack([a, b]))["out"])
    assert chip.counts() == {"hits": 2, "misses": 3, "entries": 3}
    assert Configured._compute is original  # close() puts the double back


def test_clip_loops_without_a_jump(bench: ModuleType) -> None:
    # given a clip of a composited scene
    import numpy as np

    cards = [np.full((88, 63, 3), v, np.uint8) for v in (40, 120, 200)]
    clip = bench.ClipSource(cards, cards=2, fps=10, clip_seconds=2.0)
    frames = clip.frames
    # then the step from the last frame back to the first is no bigger than any other step
    steps = [np.abs(frames[i].astype(int) - frames[i - 1].astype(int)).mean() for i in range(20)]
    assert steps[0] <= 1.5 * max(steps[1:]) + 1e-6
    assert len(frames) == 20


def test_run_answers_the_chip_from_the_memo(report: dict[str, Any]) -> None:
    # then after the clip's first pass every chip job of the timed run was a memo hit
    memo = report["latency_model"]["memo"]
    assert memo["misses"] == 0
    assert memo["hits"] > 0
    assert report["latency_model"]["exact"] is True
