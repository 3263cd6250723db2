"""Frame sources: URI parsing per scheme, RGB at the source, end of stream, errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import SourceSettings
from edge.errors import SourceError
from edge.sources import SCHEMES, open_source, split_uri
from edge.sources.base import Pacer, SourceExhaustedError, parse_options
from edge.sources.picamera2 import to_rgb

SETTINGS = SourceSettings(width=320, height=240, fps=30.0)
FAKES = Path(__file__).parent / "fakes"


def rgb_test_image(h: int = 64, w: int = 96) -> np.ndarray:
    """Left half pure red, right half pure blue (RGB): any channel swap is visible."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)
    img[:, w // 2 :] = (0, 0, 255)
    return img


def assert_red_left_blue_right(img: np.ndarray) -> None:
    h, w = img.shape[:2]
    left, right = img[h // 2, w // 4].astype(int), img[h // 2, 3 * w // 4].astype(int)
    assert left[0] > 200 and left[2] < 60, f"left pixel {left} is not red"
    assert right[2] > 200 and right[0] < 60, f"right pixel {right} is not blue"


@pytest.mark.parametrize("uri", ["usb:0", "camera", "", "http://x/y", "File:x.mp4"])
def test_unknown_scheme_is_a_source_error(uri: str) -> None:
    with pytest.raises(SourceError, match="unknown source scheme"):
        open_source(uri, SETTINGS)


def test_every_documented_scheme_is_parsed() -> None:
    assert split_uri("v4l2:0") == ("v4l2", "0")
    assert split_uri("rtsp://cam.local/stream") == ("rtsp", "rtsp://cam.local/stream")
    assert split_uri("dir:photos/") == ("dir", "photos/")
    assert set(SCHEMES) == {"picamera2", "v4l2", "rtsp", "file", "dir", "synthetic"}


def test_options_are_parsed_and_unknown_options_refused(tmp_path: Path) -> None:
    assert parse_options("a.mp4?fast&fps=5") == ("a.mp4", {"fast": "", "fps": "5"})
    with pytest.raises(SourceError, match="unknown option"):
        open_source(f"dir:{tmp_path}?speed=2", SETTINGS)


def test_v4l2_needs_an_index() -> None:
    with pytest.raises(SourceError, match="camera index"):
        open_source("v4l2:front", SETTINGS)


def test_rtsp_source_is_built_without_connecting() -> None:
    src = open_source("rtsp://127.0.0.1:9/none", SETTINGS)
    assert src.uri == "rtsp://127.0.0.1:9/none"


def write_photos(folder: Path, n: int) -> None:
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.cvtColor(rgb_test_image(), cv2.COLOR_RGB2BGR))


def test_dir_source_delivers_rgb_frames_in_name_order_and_cycles(tmp_path: Path) -> None:
    write_photos(tmp_path / "photos", 2)
    src = open_source(f"dir:{tmp_path / 'photos'}?fast", SETTINGS)
    src.open()
    frames = [src.read() for _ in range(3)]
    src.close()
    assert [f.frame_id for f in frames] == [1, 2, 3]
    assert_red_left_blue_right(frames[2].image)


def test_dir_source_once_ends_with_source_exhausted(tmp_path: Path) -> None:
    write_photos(tmp_path / "photos", 1)
    src = open_source(f"dir:{tmp_path / 'photos'}?fast&once", SETTINGS)
    src.open()
    src.read()
    with pytest.raises(SourceExhaustedError):
        src.read()


def test_dir_source_skips_an_undecodable_file(tmp_path: Path) -> None:
    write_photos(tmp_path / "photos", 1)
    (tmp_path / "photos" / "00_broken.jpg").write_bytes(b"not a jpeg")
    src = open_source(f"dir:{tmp_path / 'photos'}?fast", SETTINGS)
    src.open()
    assert_red_left_blue_right(src.read().image)


def test_dir_source_missing_folder_fails_on_open(tmp_path: Path) -> None:
    src = open_source(f"dir:{tmp_path / 'nope'}", SETTINGS)
    with pytest.raises(SourceError, match="not found"):
        src.open()


def write_video(path: Path, n: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (96, 64))
    assert writer.isOpened()
    for _ in range(n):
        writer.write(cv2.cvtColor(rgb_test_image(), cv2.COLOR_RGB2BGR))
    writer.release()


def test_file_source_fast_reads_rgb_frames_then_ends(tmp_path: Path) -> None:
    write_video(tmp_path / "v.avi", 3)
    src = open_source(f"file:{tmp_path / 'v.avi'}?fast", SETTINGS)
    src.open()
    frames = [src.read() for _ in range(3)]
    with pytest.raises(SourceExhaustedError):
        src.read()
    src.close()
    assert_red_left_blue_right(frames[0].image)


def test_file_source_loop_restarts_at_the_end(tmp_path: Path) -> None:
    write_video(tmp_path / "v.avi", 2)
    src = open_source(f"file:{tmp_path / 'v.avi'}?fast&loop", SETTINGS)
    src.open()
    assert len([src.read() for _ in range(5)]) == 5


def test_file_source_is_paced_at_the_video_rate(tmp_path: Path) -> None:
    import time

    write_video(tmp_path / "v.avi", 6)
    src = open_source(f"file:{tmp_path / 'v.avi'}", SETTINGS)
    src.open()
    t0 = time.monotonic()
    for _ in range(6):
        src.read()
    # 25 fps: six frames need at least five periods (200 ms), minus scheduling slack
    assert time.monotonic() - t0 >= 0.18


def test_file_source_missing_file_fails_on_open(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        open_source(f"file:{tmp_path / 'none.mp4'}", SETTINGS).open()


def test_pacer_without_rate_never_sleeps() -> None:
    import time

    p = Pacer(None)
    t0 = time.monotonic()
    for _ in range(1000):
        p.wait()
    assert time.monotonic() - t0 < 0.05


@pytest.mark.parametrize(
    ("fmt", "memory"),
    [("BGR888", "rgb"), ("RGB888", "bgr"), ("XBGR8888", "rgbx"), ("XRGB8888", "bgrx")],
)
def test_to_rgb_follows_libcamera_memory_order(fmt: str, memory: str) -> None:
    rgb = rgb_test_image()
    arr = {"rgb": rgb, "bgr": rgb[..., ::-1]}.get(memory[:3])
    if memory.endswith("x"):
        arr = np.concatenate([arr, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    assert np.array_equal(to_rgb(np.ascontiguousarray(arr), fmt), rgb)


def test_to_rgb_refuses_unknown_formats() -> None:
    with pytest.raises(SourceError, match="unsupported"):
        to_rgb(np.zeros((2, 2, 3), np.uint8), "SGRBG10")


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(FAKES))
    import picamera2  # the test double from tests/fakes

    picamera2.Picamera2.scene = rgb_test_image(240, 320)
    picamera2.Picamera2.busy = False
    picamera2.Picamera2.instances.clear()
    yield picamera2
    monkeypatch.delitem(__import__("sys").modules, "picamera2", raising=False)


def test_picamera2_source_delivers_rgb_from_the_main_stream(fake_picamera2) -> None:
    src = open_source("picamera2:", SETTINGS)
    src.open()
    frame = src.read()
    src.close()
    cam = fake_picamera2.Picamera2.instances[-1]
    assert frame.image.shape == (240, 320, 3)
    assert_red_left_blue_right(frame.image)
    assert cam.config["queue"] is False and cam.closed


def test_picamera2_source_can_read_the_lores_stream(fake_picamera2) -> None:
    src = open_source("picamera2:?stream=lores&lores=160x120", SETTINGS)
    src.open()
    frame = src.read()
    assert frame.image.shape == (120, 160, 3)
    assert_red_left_blue_right(frame.image)


def test_busy_pi_camera_is_a_source_error(fake_picamera2) -> None:
    fake_picamera2.Picamera2.busy = True
    with pytest.raises(SourceError, match="cannot open the Pi camera"):
        open_source("picamera2:", SETTINGS).open()


def test_bare_synthetic_without_a_bundle_is_an_error() -> None:
    with pytest.raises(SourceError, match="needs a bundle"):
        open_source("synthetic:", SETTINGS)


def test_synthetic_needs_card_images(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no card images"):
        open_source(f"synthetic:{tmp_path}", SETTINGS)


needs_scene = pytest.mark.skipif(
    importlib.util.find_spec("training.synth.scene") is None,
    reason="training.synth.scene (SYNTH) not available",
)


@needs_scene
def test_synthetic_source_films_drifting_cards(tmp_path: Path) -> None:
    # given a catalogue folder of card scans
    from tests.fakes.recognizer import make_cards

    (tmp_path / "images").mkdir()
    for cid, img in make_cards(4).items():
        cv2.imwrite(str(tmp_path / "images" / f"{cid}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    src = open_source(f"synthetic:{tmp_path}?fast&seconds=100", SETTINGS)
    src.open()
    first = src.read()
    truth0 = [(cid, c.copy()) for cid, c in src.truth]
    for _ in range(9):
        last = src.read()
    src.close()
    # then frames have the configured size, show cards, and the cards move a little
    assert first.image.shape == (240, 320, 3)
    assert truth0, "the scene holds at least one card"
    moved = [
        float(np.abs(c1 - c0).max()) for (_, c0), (_, c1) in zip(truth0, src.truth, strict=True)
    ]
    assert all(0.0 < m < 40.0 for m in moved)
    assert not np.array_equal(first.image, last.image)


@pytest.fixture
def scene_module_double(monkeypatch: pytest.MonkeyPatch):
    """Stands in for training.synth.scene (SYNTH's render_scene contract from the brief) when the
    real module is absent: places every card flat on a dark background, reporting its corners."""
    import dataclasses
    import sys
    import types

    from tests.fakes.recognizer import Placement, compose, placement_corners

    @dataclasses.dataclass(frozen=True)
    class SceneConfig:
        width: int = 640
        height: int = 480

    @dataclasses.dataclass
    class SceneCard:
        card_id: str
        corners: np.ndarray

    def render_scene(card_images, rng, cfg):
        ids = sorted(card_images)[:2]
        places = [
            Placement(cid, cfg.width * (0.3 + 0.4 * i), cfg.height / 2, 5.0, cfg.height / 3)
            for i, cid in enumerate(ids)
        ]
        image = compose(card_images, places, (cfg.width, cfg.height))
        return types.SimpleNamespace(
            image=image, cards=[SceneCard(p.card_id, placement_corners(p)) for p in places]
        )

    module = types.ModuleType("training.synth.scene")
    module.SceneConfig, module.render_scene = SceneConfig, render_scene  # type: ignore[attr-defined]
    if importlib.util.find_spec("training.synth.scene") is None:
        monkeypatch.setitem(sys.modules, "training.synth.scene", module)
    return module


def test_synthetic_source_drift_and_truth_with_a_scene_double(
    tmp_path: Path, scene_module_double
) -> None:
    from tests.fakes.recognizer import make_cards

    (tmp_path / "selftest").mkdir()
    for cid, img in make_cards(3).items():
        cv2.imwrite(str(tmp_path / "selftest" / f"{cid}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    # bare synthetic: takes the bundle's selftest scans
    src = open_source("synthetic:?fast&seconds=100", SETTINGS, bundle_dir=tmp_path)
    src.open()
    frames = [src.read() for _ in range(15)]
    truth_first = [c.copy() for _, c in src.truth]
    for _ in range(30):
        src.read()
    moved = [float(np.abs(a - b).max()) for a, (_, b) in zip(truth_first, src.truth, strict=True)]
    src.close()
    assert frames[0].image.shape == (240, 320, 3) and len(src.truth) >= 1
    assert all(0.5 < m < 40.0 for m in moved), moved  # slow drift, not teleporting


def test_synthetic_source_renders_a_new_scene_after_its_duration(
    tmp_path: Path, scene_module_double
) -> None:
    from tests.fakes.recognizer import make_cards

    (tmp_path / "images").mkdir()
    for cid, img in make_cards(2).items():
        cv2.imwrite(str(tmp_path / "images" / f"{cid}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    src = open_source(f"synthetic:{tmp_path}?fast&seconds=1&fps=10", SETTINGS)
    src.open()
    calls = []
    original = src._new_scene
    src._new_scene = lambda *a: (calls.append(1), original(*a))[1]  # type: ignore[method-assign]
    for _ in range(25):
        src.read()
    assert len(calls) == 3  # frames 0, 10, 20 start scenes
