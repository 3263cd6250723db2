"""The pipelined live loop: detect overlaps identify, swaps mid-pipeline are safe, stop drains."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.config import Settings
from edge.live.loop import LiveConfig, LiveLoop
from edge.live.runtime import Runtime
from edge.live.stages import Handoff, pipeline_onnx_threads
from edge.live.track import TrackerConfig
from edge.types import Frame
from tests.fakes.camera import FakeCamera
from tests.fakes.recognizer import FakeRecognizer, Placement, compose, make_cards

CARDS = make_cards(5, seed=3)
FAST = LiveConfig(stall_s=0.6, hang_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2)
EVERY_FRAME = LiveConfig(
    stall_s=2.0, hang_s=5.0, tracker=TrackerConfig(refresh_every=1)
)  # every track re-embedded on every frame, so each frame pays the embed delay


def static_frame(_: int) -> np.ndarray:
    return compose(CARDS, [Placement("card-001", 320, 240, 5)])


SMALL = compose(CARDS, [Placement("card-001", 160, 120, 5, height=120)], size=(320, 240))


def small_frame(_: int) -> np.ndarray:
    """A cheap frame, so the fake's own CPU work stays small next to the injected delays."""
    return SMALL.copy()


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


class RecordingRecognizer(FakeRecognizer):
    """Records which images it detected, and whether it was asked to crop an image that a
    DIFFERENT recognizer detected (a frame crossing bundles mid-pipeline)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.detected_images: set[int] = set()
        self.foreign_crops = 0

    def detect(self, image: np.ndarray):  # type: ignore[no-untyped-def]
        self.detected_images.add(id(image))
        return super().detect(image)

    def crops(self, image: np.ndarray, boxes):  # type: ignore[no-untyped-def]
        if id(image) not in self.detected_images:
            self.foreign_crops += 1
        return super().crops(image, boxes)


def start_loop(
    rec: FakeRecognizer,
    config: LiveConfig,
    fps: float | None = None,
    frames: Callable[[int], np.ndarray] = static_frame,
):
    runtime = Runtime(Settings(), rec)
    loop = LiveLoop(runtime, lambda: FakeCamera(frames, fps=fps), config, uri="fake:camera")
    runtime.attach_live(loop)
    runtime.start()
    return runtime, loop


def test_detect_overlaps_identify_so_fps_beats_the_sequential_rate() -> None:
    # given detect and embed that each take X, and every frame embedding its card
    x = 0.05
    rec = FakeRecognizer(CARDS, detect_delay_s=x, embed_delay_s=x)
    runtime, loop = start_loop(rec, EVERY_FRAME, fps=200, frames=small_frame)
    try:
        assert wait_until(lambda: loop.frames >= 3)
        # when the loop runs for a while
        f0, e0, t0 = loop.frames, loop.embeddings, time.monotonic()
        time.sleep(2.0)
        frames, embeddings = loop.frames - f0, loop.embeddings - e0
        fps = frames / (time.monotonic() - t0)
    finally:
        runtime.close()
    # then every frame paid both delays, yet throughput is well above 1 / (2X) (sequential)
    # and approaches 1 / X (two overlapping stages); 1.4 leaves room for a loaded machine
    assert embeddings >= frames - 1
    assert fps > 1.4 / (2 * x), fps


def test_a_frame_detected_before_a_swap_is_never_embedded_by_the_new_bundle() -> None:
    # given a loop whose identify stage is held while bundle A has detected the next frame
    gate = threading.Event()
    old = RecordingRecognizer(CARDS, embed_gate=gate)
    runtime, loop = start_loop(old, EVERY_FRAME, fps=100)
    new = RecordingRecognizer(CARDS, bundle_id="fake-bundle-2")
    try:
        assert wait_until(lambda: loop.detected >= 2)  # one in identify, one in the hand-off
        # when the bundle is swapped mid-pipeline and the identify stage resumes
        runtime.swap(new)
        assert not old.closed, "frames in flight still lease the old bundle"
        gate.set()
        assert wait_until(lambda: json.loads(runtime.scene_json())["bundle_id"] == "fake-bundle-2")
        assert wait_until(lambda: new.embedded > 0)
        assert wait_until(lambda: old.closed), "the old bundle closes once its frames drain"
        assert not new.closed
    finally:
        runtime.close()
    # then the old bundle's frames were embedded by it or dropped as stale, never crossed over
    assert loop.stale >= 1
    assert old.foreign_crops == 0 and new.foreign_crops == 0


def test_stale_frame_is_counted_and_its_lease_released() -> None:
    # given a frame detected by bundle A
    old, new = FakeRecognizer(CARDS), FakeRecognizer(CARDS, bundle_id="b2")
    runtime = Runtime(Settings(), old)
    loop = LiveLoop(runtime, lambda: FakeCamera(static_frame), FAST)
    item = loop.detect(Frame(static_frame(0), 1, time.monotonic(), "t"))
    # when B becomes current before the frame is identified
    runtime.swap(new)
    assert not old.closed
    events = loop.identify(item)
    # then the frame is dropped, counted, nothing is published, and A closes
    assert events == [] and loop.stale == 1 and loop.frames == 0
    assert runtime.latest_frame() is None
    assert old.closed
    assert b"cardedge_frames_stale_total 1.0" in runtime.metrics.render()


def test_stop_publishes_what_was_detected_and_releases_every_lease() -> None:
    # given a slow identify stage, so detected frames queue in the hand-off
    rec = FakeRecognizer(CARDS, embed_delay_s=0.15)
    runtime, loop = start_loop(rec, EVERY_FRAME, fps=100)
    assert wait_until(lambda: loop.frames >= 1 and loop.detected >= loop.frames + 1)
    published_at_stop = loop.frames
    # when the loop stops
    loop.stop()
    # then its threads have ended, the frame waiting in the hand-off was still published,
    # every detected frame was published or released at stop, and no lease is left
    assert not any(t.is_alive() for t in loop._threads)
    assert loop.frames > published_at_stop
    assert loop.frames + loop.discarded + loop.stale == loop.detected
    assert loop.discarded <= 1
    runtime.swap(FakeRecognizer(CARDS, bundle_id="b2"))
    assert rec.closed, "a lease leaked past stop"
    runtime.close()


def test_hung_identify_stage_is_reported_by_name() -> None:
    # given an embedder that never returns
    gate = threading.Event()
    rec = FakeRecognizer(CARDS, embed_gate=gate)
    runtime, loop = start_loop(rec, LiveConfig(stall_s=0.3, hang_s=0.6), fps=100)
    try:
        # then the loop is not alive and /readyz names the stage
        assert wait_until(lambda: not runtime.alive(), timeout=3)
        assert "stalled in identify" in loop.health()[1]
        assert loop.alive() is False
        gate.set()
        assert wait_until(runtime.alive)
    finally:
        gate.set()
        runtime.close()


def test_handoff_blocks_the_producer_until_the_consumer_takes_the_item() -> None:
    handoff: Handoff[int] = Handoff()
    stop = threading.Event()
    assert handoff.put(1, stop, lambda: None)
    # when a second put comes while the slot is full, it waits
    done = threading.Event()
    threading.Thread(target=lambda: (handoff.put(2, stop, lambda: None), done.set())).start()
    assert not done.wait(0.2)
    # then taking the first item lets the second in, in order
    assert handoff.get(0.1) == 1
    assert done.wait(1.0)
    assert handoff.get(0.1) == 2


def test_handoff_put_gives_up_when_stopping() -> None:
    handoff: Handoff[int] = Handoff()
    stop = threading.Event()
    handoff.put(1, stop, lambda: None)
    stop.set()
    assert handoff.put(2, stop, lambda: None) is False
    assert handoff.get(0.1) == 1 and len(handoff) == 0


def test_onnx_threads_split_the_cores_between_the_two_stages() -> None:
    assert pipeline_onnx_threads(0, cores=2) == 1
    assert pipeline_onnx_threads(0, cores=8) == 4
    assert pipeline_onnx_threads(0, cores=1) == 1
    assert pipeline_onnx_threads(3, cores=2) == 3  # an explicit setting is kept


def test_serve_splits_onnx_threads_only_when_a_live_loop_runs() -> None:
    from edge.cli.serve import pipelined_settings

    live = Settings(source={"uri": "synthetic:"})
    assert pipelined_settings(live).runtime.onnx_threads == pipeline_onnx_threads(0)
    assert pipelined_settings(Settings()).runtime.onnx_threads == 0  # no loop: all cores
    explicit = Settings(source={"uri": "synthetic:"}, runtime={"onnx_threads": 2})
    assert pipelined_settings(explicit).runtime.onnx_threads == 2


def test_offline_source_is_read_only_when_the_loop_wants_a_frame() -> None:
    # given an unpaced offline source (a `?fast` video or synthetic film) and a slow detector
    rec = FakeRecognizer(CARDS, detect_delay_s=0.03)
    camera = FakeCamera(small_frame, fps=None)
    camera.live = False
    runtime = Runtime(Settings(), rec)
    loop = LiveLoop(runtime, lambda: camera, FAST, uri="fake:film")
    runtime.attach_live(loop)
    runtime.start()
    try:
        # when the loop has worked through a number of frames
        assert wait_until(lambda: loop.frames >= 10)
    finally:
        runtime.close()
    # then nothing was read just to be dropped: reads track the frames taken, plus the few in
    # flight between the stages
    assert loop.dropped == 0
    assert camera.reads <= loop.frames + 4, (camera.reads, loop.frames)


def test_live_camera_frames_beyond_the_loop_rate_are_dropped_and_counted() -> None:
    # given a camera faster than a slow detector
    rec = FakeRecognizer(CARDS, detect_delay_s=0.03)
    runtime, loop = start_loop(rec, FAST, fps=300, frames=small_frame)
    try:
        # when the loop runs for a while
        assert wait_until(lambda: loop.frames >= 10)
    finally:
        runtime.close()
    # then the loop kept only the newest frames and counted the rest
    assert loop.dropped > 0
