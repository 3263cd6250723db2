"""LiveLoop and Runtime: frames flow, drops are counted, failures show on health and recover."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from edge.config import Settings
from edge.errors import BackendError
from edge.live.bench import bench_live
from edge.live.loop import LatestFrame, LiveConfig, LiveLoop
from edge.live.runtime import NotReadyError, Runtime
from edge.live.track import TrackerConfig
from edge.types import Frame
from tests.fakes.camera import FakeCamera
from tests.fakes.recognizer import FakeRecognizer, Placement, compose, make_cards

CARDS = make_cards(5, seed=3)
FAST = LiveConfig(stall_s=0.6, hang_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2)


def static_frame(_: int):
    return compose(
        CARDS, [Placement("card-000", 150, 240, 10), Placement("card-002", 450, 240, -5)]
    )


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def make_loop(cam: FakeCamera, rec: FakeRecognizer | None = None, config: LiveConfig = FAST):
    runtime = Runtime(Settings(), rec or FakeRecognizer(CARDS))
    loop = LiveLoop(runtime, lambda: cam, config, uri=cam.uri)
    runtime.attach_live(loop)
    return runtime, loop


@pytest.fixture
def running():
    started: list[Runtime] = []

    def start(cam: FakeCamera, rec: FakeRecognizer | None = None, config: LiveConfig = FAST):
        runtime, loop = make_loop(cam, rec, config)
        runtime.start()
        started.append(runtime)
        return runtime, loop

    yield start
    for rt in started:
        rt.close()


def test_latest_frame_keeps_only_the_newest_and_reports_the_drop() -> None:
    slot = LatestFrame()
    f1, f2 = (Frame(static_frame(0), i, 0.0, "t") for i in (1, 2))
    assert slot.put(f1) is False
    assert slot.put(f2) is True
    assert slot.get(0.01) is f2
    assert slot.get(0.01) is None


def test_loop_publishes_the_scene_with_card_names(running) -> None:
    runtime, loop = running(FakeCamera(static_frame))
    assert wait_until(lambda: len(json.loads(runtime.scene_json())["cards"]) == 2)
    assert wait_until(
        lambda: all(c["identified"] for c in json.loads(runtime.scene_json())["cards"])
    )
    scene = json.loads(runtime.scene_json())
    assert sorted(c["name"] for c in scene["cards"]) == ["Card 000", "Card 002"]
    assert scene["bundle_id"] == "fake-bundle-1" and scene["width"] == 640
    assert loop.health()[0]


def test_static_scene_embeddings_per_frame_fall_to_about_zero(running) -> None:
    # given a static scene of two cards, refresh every 30 frames
    _, loop = running(FakeCamera(static_frame, fps=200))
    assert wait_until(lambda: loop.frames >= 60, timeout=10)
    f0, e0 = loop.frames, loop.embeddings
    assert wait_until(lambda: loop.frames >= f0 + 150, timeout=15)
    per_frame = (loop.embeddings - e0) / (loop.frames - f0)
    # then only the periodic refresh remains: 2 tracks / 30 frames ~ 0.067
    assert per_frame <= 2 / 30 + 0.03, per_frame


def test_slow_inference_drops_frames_and_counts_them(running) -> None:
    rec = FakeRecognizer(CARDS, detect_delay_s=0.1)
    runtime, loop = running(FakeCamera(static_frame, fps=200), rec)
    assert wait_until(lambda: loop.frames >= 10)
    assert loop.dropped > loop.frames
    assert b"cardedge_frames_dropped_total" in runtime.metrics.render()


def test_unplugged_camera_shows_on_health_and_the_loop_recovers(running) -> None:
    cam = FakeCamera(static_frame)
    runtime, loop = running(cam)
    assert wait_until(lambda: loop.frames > 5)
    # when the camera is unplugged
    cam.unplugged = True
    assert wait_until(lambda: not runtime.health()[0])
    _, checks = runtime.health()
    assert checks["camera"].startswith("source error: fake camera"), checks
    assert loop.alive(), "a missing camera is not a hung process"
    # when it comes back, frames flow again
    cam.unplugged = False
    frames = loop.frames
    assert wait_until(lambda: runtime.health()[0] and loop.frames > frames + 5)


def test_hung_camera_is_restarted_by_the_watchdog(running) -> None:
    cam = FakeCamera(static_frame)
    _, loop = running(cam)
    assert wait_until(lambda: loop.frames > 3)
    cam.hang.set()
    assert wait_until(lambda: loop.restarts >= 1, timeout=5)
    assert "no frame" in loop.health()[1] or not loop.health()[0]
    cam.hang.clear()
    frames = loop.frames
    assert wait_until(lambda: loop.health()[0] and loop.frames > frames + 3, timeout=5)


def test_failing_backend_shows_on_health_and_recovers(running) -> None:
    rec = FakeRecognizer(CARDS)
    runtime, loop = running(FakeCamera(static_frame), rec)
    assert wait_until(lambda: loop.frames > 3)
    rec.fail = BackendError("accelerator timed out")
    assert wait_until(lambda: "accelerator timed out" in runtime.health()[1]["camera"])
    assert b'cardedge_errors_total{kind="backend_error"}' in runtime.metrics.render()
    rec.fail = None
    assert wait_until(lambda: runtime.health()[0])


def test_hung_backend_makes_the_loop_not_alive(running) -> None:
    rec = FakeRecognizer(CARDS, gate=threading.Event())
    config = LiveConfig(stall_s=0.3, hang_s=0.6)
    runtime, loop = running(FakeCamera(static_frame), rec, config)
    assert wait_until(lambda: not runtime.alive(), timeout=3)
    assert "inference stalled" in loop.health()[1]
    rec.gate.set()
    assert wait_until(runtime.alive)


def test_swap_moves_the_loop_to_the_new_bundle_and_closes_the_old(running) -> None:
    old = FakeRecognizer(CARDS)
    runtime, loop = running(FakeCamera(static_frame), old)
    assert wait_until(lambda: loop.frames > 3)
    new = FakeRecognizer(CARDS, bundle_id="fake-bundle-2")
    runtime.swap(new)
    assert wait_until(lambda: json.loads(runtime.scene_json())["bundle_id"] == "fake-bundle-2")
    assert wait_until(lambda: old.closed)
    assert not new.closed


def test_lease_keeps_the_old_recognizer_open_across_a_swap() -> None:
    old, new = FakeRecognizer(CARDS), FakeRecognizer(CARDS, bundle_id="b2")
    runtime = Runtime(Settings(), old)
    with runtime.lease() as rec:
        runtime.swap(new)
        assert rec is old and not old.closed
        assert runtime.current_bundle_id == "b2"
    assert old.closed


def test_lease_without_a_bundle_is_not_ready() -> None:
    with pytest.raises(NotReadyError), Runtime(Settings()).lease():
        pass


def test_ended_source_is_reported() -> None:
    from edge.sources.base import SourceExhaustedError

    class OneShot(FakeCamera):
        def read(self) -> Frame:
            raise SourceExhaustedError("end of video")

    runtime, loop = make_loop(OneShot(static_frame))
    runtime.start()
    try:
        assert wait_until(lambda: loop.source_state == "ended")
        assert "end of video" in runtime.health()[1]["camera"]
    finally:
        runtime.close()


def test_bench_live_compares_live_fps_with_the_sequential_bound() -> None:
    rec = FakeRecognizer(CARDS, detect_delay_s=0.01)
    report = bench_live(rec, FakeCamera(static_frame, fps=None), seconds=1.5)
    assert report["frames"] > 10
    assert report["detector_forward_ms"] >= 10.0
    assert report["sequential_bound_fps"] > 0
    assert report["ratio"] == pytest.approx(
        report["live_fps"] / report["sequential_bound_fps"], rel=0.01
    )


def test_bench_live_target_is_capped_by_a_paced_camera() -> None:
    # given a camera paced far below what the recognizer could process
    rec = FakeRecognizer(CARDS, detect_delay_s=0.001)
    # when benched with the camera's rate
    report = bench_live(rec, FakeCamera(static_frame, fps=10.0), seconds=1.5, camera_fps=10.0)
    # then the target is the camera's rate, not the forward bound the camera never lets it reach
    assert report["sequential_bound_fps"] > 10.0
    assert report["target_fps"] == 10.0
    assert report["ratio"] == pytest.approx(report["live_fps"] / 10.0, rel=0.01)


def test_tracker_config_reaches_the_loop() -> None:
    _, loop = make_loop(
        FakeCamera(static_frame), config=LiveConfig(tracker=TrackerConfig(window=3))
    )
    assert loop._work._tracker.config.window == 3
