"""HTTP API through FastAPI's TestClient: every endpoint, error codes, limits and access control."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.config import load_settings
from edge.errors import BackendError
from edge.live.loop import LiveConfig, LiveLoop
from edge.live.runtime import Runtime
from tests.fakes.camera import FakeCamera
from tests.fakes.recognizer import FakeRecognizer, Placement, compose, make_cards

CARDS = make_cards(5, seed=7)
SCENE = [Placement("card-001", 160, 240, 8), Placement("card-004", 460, 240, -12)]
TOKEN = "s3cret-token"


def cycling_frame(i: int) -> np.ndarray:
    """Cards in view for 15 frames, then none for 15: events keep coming."""
    return compose(CARDS, SCENE if (i // 15) % 2 == 0 else [])


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def make_client(
    *,
    live: bool = True,
    rec: FakeRecognizer | None = None,
    cam: FakeCamera | None = None,
    stall_s: float = 0.5,
    **sections: dict[str, Any],
) -> tuple[TestClient, Runtime]:
    settings = load_settings(None, **sections)
    runtime = Runtime(settings, rec or FakeRecognizer(CARDS))
    if live:
        camera = cam or FakeCamera(cycling_frame, fps=60)
        runtime.attach_live(
            LiveLoop(runtime, lambda: camera, LiveConfig(stall_s=stall_s), uri="fake:camera")
        )
    return TestClient(create_app(settings, runtime), raise_server_exceptions=False), runtime


@pytest.fixture
def client() -> Iterator[TestClient]:
    c, runtime = make_client()
    with c:
        deadline = time.monotonic() + 5
        while runtime.live and runtime.live.frames < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        yield c


@pytest.fixture
def still_client() -> Iterator[TestClient]:
    c, _ = make_client(live=False)
    with c:
        yield c


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["message"], body
    assert "hint" in body


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_ready_with_a_delivering_camera(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True


def test_readyz_says_why_when_the_camera_is_unplugged_and_the_api_stays_up() -> None:
    cam = FakeCamera(cycling_frame)
    c, runtime = make_client(cam=cam)
    with c:
        cam.unplugged = True
        deadline = time.monotonic() + 5
        while "fake camera" not in runtime.health()[1]["camera"] and time.monotonic() < deadline:
            time.sleep(0.05)
        r = c.get("/readyz")
        assert_error(r, 503, "not_ready")
        assert "camera" in r.json()["message"] and "fake camera" in r.json()["checks"]["camera"]
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/cards/card-001").status_code == 200


def test_status_reports_bundle_backends_camera_and_stage_latency(client: TestClient) -> None:
    s = client.get("/v1/status").json()
    assert s["bundle_id"] == "fake-bundle-1" and s["card_count"] == 5
    assert {b["role"] for b in s["backends"]} == {"detector", "embedder"}
    assert s["camera"]["uri"] == "fake:camera" and s["camera"]["frames"] >= 3
    assert set(s["camera"]["stage_ms"]) >= {"detect", "embed", "search", "total"}


def test_identify_multipart_returns_every_card_with_names(still_client: TestClient) -> None:
    r = still_client.post(
        "/v1/identify", files={"file": ("s.png", png(compose(CARDS, SCENE)), "image/png")}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bundle_id"] == "fake-bundle-1" and (body["width"], body["height"]) == (640, 480)
    assert [c["card_id"] for c in body["cards"]] == ["card-001", "card-004"]
    first = body["cards"][0]
    assert first["name"] == "Card 001" and first["known"] and len(first["polygon"]) == 4
    assert first["top_k"][0]["card_id"] == "card-001"


def test_identify_raw_body_works_too(still_client: TestClient) -> None:
    r = still_client.post(
        "/v1/identify",
        content=png(compose(CARDS, SCENE[:1])),
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 200 and [c["card_id"] for c in r.json()["cards"]] == ["card-001"]


def test_identify_rejects_garbage_with_bad_image(still_client: TestClient) -> None:
    assert_error(
        still_client.post("/v1/identify", content=b"hello, not an image"), 400, "bad_image"
    )


def test_identify_rejects_an_empty_body(still_client: TestClient) -> None:
    assert_error(still_client.post("/v1/identify", content=b""), 400, "bad_image")


def test_identify_multipart_without_file_part(still_client: TestClient) -> None:
    r = still_client.post("/v1/identify", data={"note": "x"}, files={"other": ("a", b"b")})
    assert_error(r, 400, "bad_image")


def test_identify_enforces_the_byte_limit_while_streaming() -> None:
    c, _ = make_client(live=False, limits={"max_upload_bytes": 1000})

    def chunks() -> Iterator[bytes]:  # no content-length: the limit must hold mid-stream
        for _ in range(100):
            yield b"\xff" * 100

    with c:
        assert_error(c.post("/v1/identify", content=chunks()), 413, "image_too_large")
        assert_error(c.post("/v1/identify", content=b"x" * 5000), 413, "image_too_large")


def test_identify_enforces_the_pixel_limit() -> None:
    c, _ = make_client(live=False, limits={"max_pixels": 10_000})
    with c:
        assert_error(
            c.post("/v1/identify", content=png(compose(CARDS, SCENE))), 413, "image_too_large"
        )


def test_identify_maps_backend_failure_to_503() -> None:
    c, _ = make_client(live=False, rec=FakeRecognizer(CARDS, fail=BackendError("NPU timed out")))
    with c:
        assert_error(
            c.post("/v1/identify", content=png(compose(CARDS, SCENE))), 503, "backend_error"
        )


def test_unexpected_exception_is_a_json_500() -> None:
    c, _ = make_client(live=False, rec=FakeRecognizer(CARDS, fail=RuntimeError("boom")))
    with c:
        r = c.post("/v1/identify", content=png(compose(CARDS, SCENE)))
        assert_error(r, 500, "internal")
        assert "boom" not in r.text


def test_identify_without_bundle_is_not_ready() -> None:
    settings = load_settings(None)
    with TestClient(create_app(settings, Runtime(settings)), raise_server_exceptions=False) as c:
        assert_error(c.post("/v1/identify", content=png(compose(CARDS, SCENE))), 503, "not_ready")
        assert c.get("/readyz").status_code == 503


def test_scene_lists_the_tracked_cards(client: TestClient) -> None:
    deadline = time.monotonic() + 5
    cards: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(cards) < 2:
        cards = client.get("/v1/scene").json()["cards"]
        time.sleep(0.05)
    assert {c["card_id"] for c in cards} <= {"card-001", "card-004"} and len(cards) == 2
    assert all(len(c["polygon"]) == 4 for c in cards)


def test_events_stream_card_events_as_sse() -> None:
    # given a live loop whose camera brings cards in and out of view (a watchdog patient
    # enough not to restart the camera on a busy CI machine)
    client, _ = make_client(stall_s=5.0)
    # when a client subscribes to the event stream
    with client, client.stream("GET", "/v1/events?max_events=3&timeout_s=30") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    # then it receives card events as server-sent events
    kinds = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert len(kinds) == 3 and set(kinds) <= {"card_appeared", "card_identified", "card_left"}


def test_frame_jpg_is_an_annotated_jpeg(client: TestClient) -> None:
    r = client.get("/v1/frame.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)


def test_frame_jpg_without_a_camera_is_404_no_frame(still_client: TestClient) -> None:
    assert_error(still_client.get("/v1/frame.jpg"), 404, "no_frame")


def test_mjpeg_stream_sends_jpeg_parts(client: TestClient) -> None:
    with client.stream("GET", "/v1/stream.mjpg?max_frames=2&fps=30") as r:
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        data = b"".join(r.iter_bytes())
    assert data.count(b"--frame\r\nContent-Type: image/jpeg") == 2
    assert data.count(b"\xff\xd8") >= 2


def test_card_lookup_and_search(still_client: TestClient) -> None:
    assert still_client.get("/v1/cards/card-002").json()["name"] == "Card 002"
    assert_error(still_client.get("/v1/cards/nope"), 404, "card_not_found")
    found = still_client.get("/v1/cards", params={"q": "card 00", "limit": 2}).json()
    assert len(found["cards"]) == 2 and found["query"] == "card 00"


def test_invalid_query_is_422_invalid_request(still_client: TestClient) -> None:
    assert_error(still_client.get("/v1/cards", params={"limit": 0}), 422, "invalid_request")


def test_unknown_path_and_wrong_method_are_json(still_client: TestClient) -> None:
    assert_error(still_client.get("/v1/nothing"), 404, "not_found")
    assert_error(still_client.delete("/v1/scene"), 405, "method_not_allowed")


def test_metrics_expose_fps_stages_and_verdicts(client: TestClient) -> None:
    client.post("/v1/identify", content=png(compose(CARDS, SCENE)))
    text = client.get("/metrics").text
    for name in (
        "cardedge_fps",
        "cardedge_frames_dropped_total",
        "cardedge_stage_latency_seconds_bucket",
        'cardedge_identifications_total{path="identify"} 2.0',
        "cardedge_errors_total",
    ):
        assert name in text, name


def test_web_page_and_assets_are_served(still_client: TestClient) -> None:
    page = still_client.get("/")
    assert page.status_code == 200 and '<canvas id="overlay"' in page.text
    assert "http" not in page.text.split("<body>")[1].replace("http-equiv", ""), "no external URLs"
    for asset in ("app.js", "api.js", "draw.js", "fix.js", "lists.js", "ui.js", "style.css"):
        assert still_client.get(f"/static/{asset}").status_code == 200, asset


def protected_client(tmp_path: Path | None = None) -> TestClient:
    server: dict[str, Any] = {"token": TOKEN, "protect_reads": True}
    if tmp_path is not None:
        (tmp_path / "token").write_text("from-file\n")
        server["token_file"] = str(tmp_path / "token")
    c, _ = make_client(live=False, server=server)
    return c


def test_protected_reads_need_the_bearer_token() -> None:
    with protected_client() as c:
        r = c.get("/v1/status")
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(
            c.get("/v1/status", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized"
        )
        assert c.get("/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/healthz").status_code == 200, "liveness stays open for probes"


def test_token_file_wins_over_the_token(tmp_path: Path) -> None:
    with protected_client(tmp_path) as c:
        assert c.get("/v1/scene", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
        assert c.get("/v1/scene", headers={"Authorization": "Bearer from-file"}).status_code == 200


def test_reads_are_open_by_default(still_client: TestClient) -> None:
    assert still_client.get("/v1/status").status_code == 200


def test_writes_need_the_token(tmp_path: Path) -> None:
    # given the shipped app with a token and a fresh store, and one of its real write routes
    c, _ = make_client(live=False, server={"token": TOKEN}, runtime={"state_dir": tmp_path})
    with c:
        # then without the token: 401; with it the request reaches the route (nothing to roll
        # back to on a fresh store)
        assert_error(c.post("/v1/bundles/rollback"), 401, "unauthorized")
        assert_error(
            c.post("/v1/bundles/rollback", headers={"Authorization": f"Bearer {TOKEN}"}),
            409,
            "bundle_no_previous",
        )


def test_writes_are_refused_when_no_token_is_configured() -> None:
    c, _ = make_client(live=False)
    with c:
        for path in ("/v1/bundles/rollback", "/v1/bundles", "/v1/feedback"):
            assert_error(c.post(path, headers={"Authorization": "Bearer x"}), 403, "forbidden")


def test_protect_reads_without_a_token_is_a_config_error() -> None:
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="protect_reads"):
        make_client(live=False, server={"protect_reads": True})


def test_scene_fast_path_serves_the_runtime_bytes(client: TestClient) -> None:
    r = client.get("/v1/scene")
    runtime: Runtime = client.app.state.ctx.runtime  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/json"
    assert r.json()["bundle_id"] == "fake-bundle-1" and set(r.json()) == set(
        __import__("json").loads(runtime.scene_json())
    )


def test_scene_in_openapi_even_with_the_fast_path(still_client: TestClient) -> None:
    paths = still_client.get("/openapi.json").json()["paths"]
    assert "/v1/scene" in paths and "/v1/identify" in paths and "/v1/events" in paths
