"""What ships, through its entry points: `cardedge serve` as a real process (installed console
script, config file, environment, its own state directory, a free port) answering every route the
README lists, and nothing it does not list; writes refused without the token on the real routes;
the feedback round trip and its refusals.

One demo-bundle server per module (fixture `demo`); bundle pushes are in test_serve_bundles.py.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve_process import REPO, ServeProcess

pytestmark = pytest.mark.slow

TOKEN = "serve-test-token"
DEMO = REPO / "models" / "demo"
CARD = "s01-001"  # in the demo catalogue, with a selftest scan
SCAN = DEMO / "selftest" / f"{CARD}.jpg"
MAX_UPLOAD = 300_000  # small, so the oversized feedback test stays cheap


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """The README's `cardedge serve --bundle models/demo --source synthetic:reference_db/demo`,
    with the environment setting a port that the --port flag must beat."""
    if not (DEMO / "manifest.json").is_file():
        pytest.skip("models/demo is not built")
    server = ServeProcess(
        tmp_path_factory.mktemp("serve-demo"),
        bundle=DEMO,
        token=TOKEN,
        source="synthetic:reference_db/demo",
        config={"limits": {"max_upload_bytes": MAX_UPLOAD}},
        env={"CARDEDGE_SERVER__PORT": "1", "CARDEDGE_SOURCE__FPS": "4"},
    )
    with server:
        yield server


def readme_routes() -> set[tuple[str, str]]:
    """(METHOD, /path) of every route in the README's API table; a bare `/path` after a
    `METHOD /path` in the same row takes that method; query strings are dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("The API (FastAPI; OpenAPI at `/docs`):", 1)[1].split("\n\n", 2)[1]
    routes: set[tuple[str, str]] = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        method = None
        for spec in re.findall(r"`([^`]+)`", first_cell):
            parts = spec.split()
            if len(parts) == 2:
                method, path = parts
            else:
                path = parts[0]
            assert method is not None, f"README route {spec!r} has no method"
            routes.add((method, re.sub(r"\{[^}]+\}", "{}", path.split("?")[0])))
    return routes


def served_routes(server: ServeProcess) -> set[tuple[str, str]]:
    """(METHOD, /path) of the server's OpenAPI, plus the web page (not in the schema)."""
    status, spec = server.json("GET", "/openapi.json")
    assert status == 200
    routes = {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
        for path, ops in spec["paths"].items()
        for method in ops
    }
    return routes | {("GET", "/")}


def test_readme_lists_exactly_the_served_routes(demo: ServeProcess) -> None:
    # given the README's API table and the running server's OpenAPI
    documented, served = readme_routes(), served_routes(demo)
    # then each names the same routes
    assert documented - served == set(), "README names routes the server does not serve"
    assert served - documented == set(), "the server serves routes the README does not name"


def _concrete(path: str, list_ids: tuple[object, object] = ("demo", "demo")) -> str:
    if path.startswith("/v1/lists/{}"):  # a list id, then an entry id
        path = path.replace("{}", str(list_ids[0]), 1).replace("{}", str(list_ids[1]), 1)
    return path.replace("/v1/cards/{}", f"/v1/cards/{CARD}").replace("{}", "demo")


def _recorded_list(server: ServeProcess, timeout: float = 120) -> tuple[int, int]:
    """(list id, entry id) of a stopped scan list holding at least one entry (made here)."""
    headers = {**server.auth(), "Content-Type": "application/json"}
    body = json.dumps({"name": "route check"}).encode()
    status, _, raw = server.request("POST", "/v1/lists", body=body, headers=headers)
    assert status == 201, raw
    list_id = json.loads(raw)["list_id"]
    deadline = time.monotonic() + timeout
    while not (entries := server.json("GET", f"/v1/lists/{list_id}")[1]["entries"]):
        assert time.monotonic() < deadline, "no card recorded from the synthetic camera"
        time.sleep(0.5)
    server.request("POST", f"/v1/lists/{list_id}/stop", headers=server.auth())
    return list_id, entries[0]["entry_id"]


def _call(server: ServeProcess, method: str, path: str, headers: dict[str, str]) -> int:
    """One request; streams (SSE, MJPEG) are read only up to their first bytes."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        body = SCAN.read_bytes() if path == "/v1/identify" else None
        hdrs = {**headers, **({"Content-Type": "image/jpeg"} if body else {})}
        conn.request(method, path, body=body, headers=hdrs)
        response = conn.getresponse()
        kind = response.getheader("content-type", "")
        if kind.startswith(("text/event-stream", "multipart/x-mixed-replace")):
            assert response.read1(64), f"{path}: stream sent nothing"
        elif response.status >= 400:
            error = json.loads(response.read())
            assert error["code"] and error["message"], error
        else:
            response.read()
        return response.status
    finally:
        conn.close()


def test_every_readme_route_answers(demo: ServeProcess) -> None:
    # given every documented route, reads plain and writes without a token, once the live loop
    # has published its first frame (on a loaded machine that can take a few seconds)
    deadline = time.monotonic() + 30
    while demo.request("GET", "/v1/frame.jpg")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    list_ids = _recorded_list(demo)
    results = {}
    for method, path in sorted(readme_routes()):
        # when it is called on the real server
        results[(method, path)] = _call(demo, method, _concrete(path, list_ids), {})
    # then reads succeed, and no route is missing or has the wrong method
    for (method, path), status in results.items():
        assert status not in (404, 405), (method, path, status)
        if method == "GET" or path == "/v1/identify":
            assert status == 200, (method, path, status)
        else:
            assert status == 401, (method, path, status)


def _write_routes(server: ServeProcess) -> list[tuple[str, str]]:
    return sorted(
        (m, _concrete(p)) for m, p in served_routes(server) if m == "POST" and p != "/v1/identify"
    )


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic x"], ids=str)
def test_writes_without_the_token_are_refused(demo: ServeProcess, auth: str | None) -> None:
    # given the current bundle and every write route of the running server
    before = demo.json("GET", "/v1/bundles")[1]
    headers = {"Authorization": auth} if auth else {}
    for method, path in _write_routes(demo):
        # when called without the right token
        status, _, body = demo.request(method, path, body=b"x", headers=headers)
        # then 401 with the stable code
        assert status == 401 and json.loads(body)["code"] == "unauthorized", (path, body)
    # and nothing changed
    assert demo.json("GET", "/v1/bundles")[1] == before
    assert demo.json("GET", "/v1/feedback")[1]["count"] == _feedback_count(demo)


def _feedback_count(server: ServeProcess) -> int:
    root = server.state_dir / "feedback"
    return sum(1 for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else 0


def _multipart(fields: dict[str, str], image: bytes | None) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    if image is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
            + image
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _post_feedback(
    server: ServeProcess, fields: dict[str, str], image: bytes | None = None
) -> tuple[int, Any]:
    body, headers = _multipart(fields, SCAN.read_bytes() if image is None else image)
    status, _, raw = server.request(
        "POST", "/v1/feedback", body=body, headers={**headers, **server.auth()}
    )
    return status, json.loads(raw)


def test_feedback_round_trip(demo: ServeProcess) -> None:
    # given a crop of a card and the right card id
    # when it is posted with a polygon and a note
    polygon = json.dumps([[2, 2], [100, 2], [100, 140], [2, 140]])
    status, out = _post_feedback(demo, {"card_id": CARD, "polygon": polygon, "note": "reprint"})
    # then it is stored with its metadata and the bundle it corrects
    assert status == 201, out
    assert out["card_id"] == CARD and out["bundle_id"] == "demo" and out["note"] == "reprint"
    folder = demo.state_dir / "feedback" / out["feedback_id"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["polygon"] == [[2, 2], [100, 2], [100, 140], [2, 140]]
    assert (folder / meta["image"]).read_bytes() == SCAN.read_bytes()
    # and GET /v1/feedback lists it
    listed = demo.json("GET", "/v1/feedback")[1]
    assert out["feedback_id"] in [f["feedback_id"] for f in listed["feedback"]]
    # and a not-a-card correction needs no card id
    status, out = _post_feedback(demo, {"not_a_card": "true"})
    assert status == 201 and out["not_a_card"] and out["card_id"] is None


@pytest.mark.parametrize(
    ("fields", "image", "status", "code"),
    [
        ({"card_id": "no-such-card"}, None, 422, "card_not_in_catalogue"),
        ({"card_id": CARD, "polygon": "[[0,0],[9999,0],[9999,10],[0,10]]"}, None, 422,
         "polygon_outside_image"),
        ({"card_id": CARD, "polygon": "[[0,0],[1,1]]"}, None, 422, "bad_polygon"),
        ({"card_id": CARD, "not_a_card": "true"}, None, 422, "feedback_invalid"),
        ({}, None, 422, "feedback_invalid"),
        ({"card_id": CARD}, b"\xff\xd8" + b"\0" * (MAX_UPLOAD + 10), 413, "image_too_large"),
        ({"card_id": CARD}, b"not an image at all", 400, "bad_image"),
    ],
    ids=["unknown-card", "polygon-outside", "polygon-shape", "both-labels", "no-label",
         "oversized", "not-an-image"],
)  # fmt: skip
def test_bad_feedback_is_refused_and_nothing_stored(
    demo: ServeProcess, fields: dict[str, str], image: bytes | None, status: int, code: str
) -> None:
    # given what is stored now
    before = _feedback_count(demo)
    # when a bad correction is posted
    got, body = _post_feedback(demo, fields, image)
    # then its 4xx code, and nothing more is stored
    assert (got, body["code"]) == (status, code), body
    assert body["message"]
    assert _feedback_count(demo) == before


def test_feedback_that_is_not_multipart_is_415(demo: ServeProcess) -> None:
    before = _feedback_count(demo)
    status, _, body = demo.request(
        "POST",
        "/v1/feedback",
        body=json.dumps({"card_id": CARD}).encode(),
        headers={"Content-Type": "application/json", **demo.auth()},
    )
    assert status == 415 and json.loads(body)["code"] == "unsupported_media_type"
    assert _feedback_count(demo) == before


def test_the_port_flag_beats_the_environment(demo: ServeProcess) -> None:
    # given CARDEDGE_SERVER__PORT=1 in the server's environment and --port in its flags
    assert demo.env["CARDEDGE_SERVER__PORT"] == "1"
    # then it listens on the flag's port (the fixture reached /readyz there)
    assert demo.request("GET", "/healthz")[0] == 200


def test_status_reports_a_writable_store(demo: ServeProcess) -> None:
    store = demo.json("GET", "/v1/status")[1]["store"]
    assert store["writable"] and store["state_dir"] == str(demo.state_dir)


def test_an_unwritable_state_dir_serves_read_only_and_says_why(tmp_path: Path) -> None:
    # given a state directory path under a regular file (no user, root included, can create it)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    server = ServeProcess(
        tmp_path / "ro", bundle=DEMO, token=TOKEN, extra_args=["--state-dir", str(blocker / "s")]
    )
    with server:
        # then it serves, identifies, and /v1/status says why the store is unavailable and how to fix it
        store = server.json("GET", "/v1/status")[1]["store"]
        assert store["writable"] is False and store["reason"] and "state_dir" in store["hint"]
        assert server.request("POST", "/v1/identify", body=SCAN.read_bytes())[0] == 200
        # and writes needing the store answer 503 store_unavailable
        status, body = server.json("GET", "/v1/bundles")
        assert status == 503 and body["code"] == "store_unavailable" and body["hint"]
        status, body = _post_feedback(server, {"card_id": CARD})
        assert status == 503 and body["code"] == "store_unavailable"


def test_the_web_page_calls_only_served_routes(demo: ServeProcess) -> None:
    # given the API paths the shipped page's scripts (every module) and HTML request
    static = REPO / "edge" / "api" / "static"
    text = "".join(p.read_text() for p in sorted(static.iterdir()) if p.suffix in (".js", ".html"))
    called = {p.split("?")[0] for p in re.findall(r"[\"'`](/v1/[A-Za-z0-9_./-]+)", text)}
    assert called, "no API path found in the page"
    # then the real server serves each of them
    paths = {p for _, p in served_routes(demo)}
    assert called <= paths, called - paths
    status, headers, _ = demo.request("GET", "/")
    assert status == 200 and headers.get("content-type", "").startswith("text/html")


def test_the_shipped_systemd_environment_is_valid_settings(tmp_path: Path) -> None:
    # given the unit's Environment= lines and the example environment file, as systemd sets them
    env: dict[str, str] = {}
    unit = (REPO / "systemd" / "cardedge.service").read_text()
    for line in unit.splitlines():
        if line.startswith("Environment=CARDEDGE_"):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value.replace("%d", str(tmp_path))
    example = (REPO / "systemd" / "cardedge.env.example").read_text()
    for line in example.splitlines():
        if line.startswith("CARDEDGE_"):
            key, _, value = line.partition("=")
            env[key] = value
    # when a command reads its settings under that environment (state dir redirected here)
    import subprocess

    from tests.serve_process import clean_env, console_script

    result = subprocess.run(
        [str(console_script("cardedge")), "bundle", "list", "--json"],
        env=clean_env(**{**env, "CARDEDGE_RUNTIME__STATE_DIR": str(tmp_path / "state")}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then every variable is a known, valid setting
    assert result.returncode == 0, result.stderr
    assert len(env) >= 5


def test_the_issue_repro_push_of_the_served_bundle_succeeds(demo: ServeProcess, tmp_path: Path) -> None:  # fmt: skip
    # given `cardedge serve --bundle models/demo ...` with a token (the fixture)
    import subprocess

    from tests.serve_process import clean_env, console_script

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    # when `cardedge bundle push models/demo --device URL` runs (it used to get HTTP 404)
    result = subprocess.run(
        [str(console_script("cardedge")), "bundle", "push", str(DEMO), "--device", demo.url,
         "--token-file", str(token_file)],
        env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # then it succeeds: the device already serves that bundle, which it reports
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1/1 devices ok" in result.stdout
    assert demo.json("GET", "/v1/status")[1]["bundle_id"] == "demo"


def test_status_says_the_served_bundle_verifies_by_geometry(demo: ServeProcess) -> None:
    # given the real service on the demo bundle, which carries reference features
    status = demo.json("GET", "/v1/status")[1]
    # then /v1/status says verification is on, for every card of the catalogue
    v = status["verification"]
    assert v["enabled"] is True and v["method"] == "orb"
    assert v["cards"] == status["card_count"] and v["keypoints"] > 0 and v["min_inliers"] >= 4
    # ... extracting more features from each crop than a reference keeps (the demo's setting)
    assert v["query_features"] >= 2 * v["n_features"]


def test_the_live_scene_gives_each_card_its_confidence_tier(demo: ServeProcess) -> None:
    # given the served demo filming synthetic tables of its cards, once cards are in view
    deadline, cards = time.monotonic() + 60, []
    while not cards and time.monotonic() < deadline:
        cards = demo.json("GET", "/v1/scene")[1]["cards"]
        time.sleep(0.2)
    # then every card says how it is known, consistent with `known`
    assert cards, "no card in view within 60 s"
    for c in cards:
        assert c["confidence"] in ("verified", "probable", "unknown")
        assert (c["confidence"] != "unknown") == c["known"]
