"""What the web page's preview is made of: /v1/snapshot (one raw frame with the scene of that same
frame), the X-Frame-Id of /v1/frame.jpg and of each MJPEG part, and frame.jpg's annotate switch.
A fake camera whose card moves 12 px a frame makes a frame paired with its neighbour's scene
show: the card would lie 12 px beside its polygon."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.api.routes.scene import _snapshot
from edge.config import load_settings
from edge.live.loop import LiveConfig, LiveLoop
from edge.live.runtime import NoFrameError, Runtime
from tests.fakes.camera import FakeCamera
from tests.fakes.recognizer import FakeRecognizer, Placement, compose, make_cards

CARDS = make_cards(3, seed=5)
TOKEN = "snap-token"


def moving(i: int) -> np.ndarray:
    """One card sliding right 12 px a frame across the 640 px frame, then back to the start."""
    return compose(CARDS, [Placement("card-001", 120 + 12 * (i % 30), 240, 0)])


def decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def drawn_pixels(image: np.ndarray, frame_id: int) -> int:
    """Pixels far from the camera's own picture of that frame (JPEG noise stays well under)."""
    diff = np.abs(image.astype(int) - moving(frame_id).astype(int)).max(axis=2)
    return int((diff > 80).sum())


def card_centre(image: np.ndarray) -> np.ndarray:
    """Centre of the bright card pixels on the dark background."""
    ys, xs = np.nonzero(image.max(axis=2) > 60)
    return np.array([xs.mean(), ys.mean()])


def make_client(**sections: dict[str, Any]) -> tuple[TestClient, Runtime]:
    settings = load_settings(None, **sections)
    runtime = Runtime(settings, FakeRecognizer(CARDS))
    camera = FakeCamera(moving, fps=60)
    runtime.attach_live(LiveLoop(runtime, lambda: camera, LiveConfig(), uri="fake:camera"))
    return TestClient(create_app(settings, runtime), raise_server_exceptions=False), runtime


@pytest.fixture
def client() -> Iterator[TestClient]:
    c, runtime = make_client()
    with c:
        deadline = time.monotonic() + 5
        while runtime.live and runtime.live.frames < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        yield c


def test_each_snapshot_is_one_raw_frame_with_the_scene_of_that_frame(client: TestClient) -> None:
    with_card = set()
    for _ in range(25):
        # when the page asks for the preview while the loop publishes 60 frames a second
        snap = client.get("/v1/snapshot").json()
        scene, image = snap["scene"], decode(base64.b64decode(snap["jpeg"]))
        # then the scene is that frame's
        assert snap["frame_id"] == scene["frame_id"]
        # and the image is that frame's picture with nothing drawn on it (JPEG noise only)
        assert drawn_pixels(image, snap["frame_id"]) < 50
        # and its card lies where the scene's polygon is (a track that jumped back to the start
        # is not in the scene until the tracker takes it up)
        for card in scene["cards"]:
            polygon = np.asarray(card["polygon"])
            assert np.allclose(card_centre(image), polygon.mean(axis=0), atol=3.0)
            with_card.add(snap["frame_id"])
        time.sleep(0.01)
    assert len(with_card) > 5, "the card moved on during the test"


def test_frame_jpg_says_its_frame_id_and_can_leave_the_drawing_out(client: TestClient) -> None:
    # given the latest frame, raw and annotated
    raw = client.get("/v1/frame.jpg?annotate=false")
    annotated = client.get("/v1/frame.jpg")
    assert raw.status_code == annotated.status_code == 200
    # then each names its frame, and the raw one is that frame's picture as the camera gave it
    raw_id, annotated_id = int(raw.headers["X-Frame-Id"]), int(annotated.headers["X-Frame-Id"])
    assert drawn_pixels(decode(raw.content), raw_id) < 50
    assert drawn_pixels(decode(annotated.content), annotated_id) > 500


def test_mjpeg_parts_name_their_frame(client: TestClient) -> None:
    with client.stream("GET", "/v1/stream.mjpg?max_frames=3&fps=30&annotate=false") as r:
        data = b"".join(r.iter_bytes())
    ids = [
        int(line.split(b": ")[1]) for line in data.split(b"\r\n") if line.startswith(b"X-Frame-Id")
    ]
    assert len(ids) == 3 and ids == sorted(ids)


def test_snapshot_without_a_camera_is_404_no_frame() -> None:
    settings = load_settings(None)
    with TestClient(create_app(settings, Runtime(settings, FakeRecognizer(CARDS)))) as c:
        r = c.get("/v1/snapshot")
    assert r.status_code == 404 and r.json()["code"] == "no_frame"


def test_snapshot_is_a_read_protected_reads_need_the_token() -> None:
    c, runtime = make_client(server={"token": TOKEN, "protect_reads": True})
    with c:
        assert c.get("/v1/snapshot").status_code == 401
        deadline = time.monotonic() + 5
        while runtime.live and runtime.live.frames < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = c.get("/v1/snapshot", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["frame_id"] >= 1


class _Racing:
    """A runtime whose next frame lands between a snapshot's reads, `races` times over."""

    def __init__(self, races: int) -> None:
        self.races = races
        self.frame = SimpleNamespace(frame_id=1)
        self.published = 1

    def latest_frame(self) -> SimpleNamespace:
        return self.frame

    def frame_jpeg(self, annotate: bool) -> tuple[int, bytes]:
        jpeg = f"jpeg-{self.frame.frame_id}".encode()
        if self.races:
            self.races -= 1
            self.published += 1
            self.frame = SimpleNamespace(frame_id=self.published)  # published mid-read
        return self.published, jpeg

    def scene_json(self) -> bytes:
        return b'{"frame_id":%d,"cards":[]}' % self.frame.frame_id


def test_a_frame_published_mid_read_is_not_paired_with_another_frames_scene() -> None:
    # given frames landing between the reads of the first three tries
    runtime = _Racing(races=3)
    # when a snapshot is taken
    body = _snapshot(runtime)  # type: ignore[arg-type]
    # then it pairs the frame it encoded with that frame's scene
    assert body.startswith(b'{"frame_id":4,"jpeg":"' + base64.b64encode(b"jpeg-4"))
    assert body.endswith(b'"scene":{"frame_id":4,"cards":[]}}')


def test_a_frame_that_never_holds_still_is_a_clear_error() -> None:
    with pytest.raises(NoFrameError):
        _snapshot(_Racing(races=1000))  # type: ignore[arg-type]
