"""`cardedge bundle push`: concurrent uploads to stub devices on loopback, retries, confirmation."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.malformed_bundles import make_bundle  # isort: skip

from edge.bundles.push import (
    Device,
    ProgressPrinter,
    PushOptions,
    archive_manifest,
    device_from,
    format_table,
    push,
    read_devices_file,
    resolve_token,
)
from edge.errors import ConfigError

TOKEN = "s3cret"
FAST = PushOptions(retries=3, backoff_s=0.01, timeout_s=10, confirm_timeout_s=1.0)


class StubDevice(ThreadingHTTPServer):
    """A device's bundle API in miniature: POST /v1/bundles installs (records the bundle id),
    GET /v1/status reports it. `fail_next` answers that many uploads with 503 first."""

    def __init__(self, *, fail_next: int = 0, switch: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_next = fail_next
        self.switch = switch
        self.current = "old"
        self.uploads = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StubDevice

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _json(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._json(200, {"bundle_id": self.server.current})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.uploads += 1
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._json(401, {"code": "unauthorized", "message": "wrong bearer token", "hint": None})
            return
        if self.server.fail_next > 0:
            self.server.fail_next -= 1
            self._json(503, {"code": "busy", "message": "try later", "hint": None})
            return
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "b.tar.zst").write_bytes(body)
            bundle_id = archive_manifest(Path(tmp) / "b.tar.zst").bundle_id
        if self.server.switch:
            self.server.current = bundle_id
        self._json(200, {"bundle_id": bundle_id, "swapped": True})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "b", "fleet-2")


Factory = Callable[..., StubDevice]


@pytest.fixture
def devices() -> Iterator[Factory]:
    started: list[StubDevice] = []

    def start(*, fail_next: int = 0, switch: bool = True) -> StubDevice:
        server = StubDevice(fail_next=fail_next, switch=switch)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.shutdown()
        s.server_close()


def _silent(name: str, sent: int, total: int) -> None:
    pass


def test_push_to_two_devices_confirms_both(bundle: Path, devices: Factory) -> None:
    # given two healthy devices
    a, b = devices(), devices()
    # when the bundle directory is pushed
    bundle_id, results = push(
        bundle, [device_from(a.url, "a"), device_from(b.url, "b")], TOKEN, FAST, _silent
    )
    # then both report the new bundle id, and the table says so
    assert bundle_id == "fleet-2"
    assert [(r.ok, r.reported_bundle_id, r.attempts) for r in results] == [(True, "fleet-2", 1)] * 2
    assert "2/2 devices ok" in format_table(bundle_id, results)


def test_transient_failures_are_retried(bundle: Path, devices: Factory) -> None:
    flaky = devices(fail_next=2)
    _, [result] = push(bundle, [device_from(flaky.url)], TOKEN, FAST, _silent)
    assert result.ok and result.attempts == 3 and flaky.uploads == 3


def test_retries_are_bounded(bundle: Path, devices: Factory) -> None:
    down = devices(fail_next=99)
    _, [result] = push(bundle, [device_from(down.url)], TOKEN, FAST, _silent)
    assert not result.ok and result.attempts == 4 and "503" in (result.error or "")


def test_wrong_token_is_not_retried(bundle: Path, devices: Factory) -> None:
    dev = devices()
    _, [result] = push(bundle, [device_from(dev.url)], "wrong", FAST, _silent)
    assert not result.ok and result.attempts == 1 and "unauthorized" in (result.error or "")


def test_unreachable_device_fails_after_retries(bundle: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    _, [result] = push(bundle, [device_from(f"http://127.0.0.1:{port}")], TOKEN, FAST, _silent)
    assert not result.ok and result.attempts == 4


def test_device_not_reporting_the_new_bundle_is_a_failure(bundle: Path, devices: Factory) -> None:
    stuck = devices(switch=False)
    _, [result] = push(bundle, [device_from(stuck.url)], TOKEN, FAST, _silent)
    assert not result.ok and result.reported_bundle_id == "old"


def test_devices_file_lines_urls_names_and_comments(tmp_path: Path) -> None:
    f = tmp_path / "devices"
    f.write_text("# fleet\nhttp://pi-01.local:8080 counter\n\nhttp://10.0.0.7:8080  # back room\n")
    assert read_devices_file(f) == [
        Device("counter", "http://pi-01.local:8080"),
        Device("10.0.0.7:8080", "http://10.0.0.7:8080"),
    ]


def test_devices_file_with_a_bad_url_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "devices"
    f.write_text("pi-01.local:8080\n")
    with pytest.raises(ConfigError, match="devices:1"):
        read_devices_file(f)


def test_token_file_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARDEDGE_TOKEN", "from-env")
    (tmp_path / "t").write_text("from-file\n")
    assert resolve_token(tmp_path / "t") == "from-file"
    assert resolve_token(None) == "from-env"


def test_progress_prints_each_quarter_once() -> None:
    lines: list[str] = []
    printer = ProgressPrinter(lines.append)
    for sent in range(0, 101, 5):
        printer("pi", sent, 100)
    assert [line.split()[2] for line in lines] == ["0%", "25%", "50%", "75%", "100%"]
