"""The web page in real headless Chromium (Debian's chromium): it loads, the MJPEG preview shows,
and the scene list names the cards in view. Also writes a screenshot for a human to look at."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from edge.api.app import create_app
from edge.config import load_settings
from edge.live import LiveConfig, LiveLoop
from edge.runtime import Runtime
from tests.fakes.camera import FakeCamera
from tests.fakes.recognizer import FakeRecognizer, Placement, compose, make_cards

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no /usr/bin/chromium"),
]

CARDS = make_cards(4, seed=11)


def drifting(i: int):
    return compose(
        CARDS,
        [
            Placement("card-001", 170 + (i % 40), 240, 6),
            Placement("card-003", 470, 250 - (i % 30), -9),
        ],
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    port = free_port()
    settings = load_settings(None, server={"port": port})
    runtime = Runtime(settings, FakeRecognizer(CARDS))
    cam = FakeCamera(drifting, fps=15)
    runtime.attach_live(LiveLoop(runtime, lambda: cam, LiveConfig(), uri="fake:camera"))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, runtime), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)
    runtime.close()


class Chromium:
    """Headless Chromium driven over the DevTools protocol on --remote-debugging-pipe (fds 3/4,
    NUL-terminated JSON): no websocket library needed, and endless streams do not block it."""

    def __init__(self, tmp_path: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        # Park the child's ends above 10 so dup2 onto 3 and 4 cannot clobber them.
        hi_r, hi_w = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
        os.close(cmd_r)
        os.close(res_w)

        def child_fds() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                f"--user-data-dir={tmp_path / 'profile'}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=child_fds,  # runs in the forked child before exec: places fds 3/4
        )
        os.close(hi_r)
        os.close(hi_w)
        self._buf = b""
        self._id = 0

    def send(self, method: str, session: str | None = None, **params: object) -> dict:
        self._id += 1
        msg: dict[str, object] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            while b"\0" not in self._buf:
                ready, _, _ = select.select([self._res_r], [], [], 1.0)
                if ready:
                    chunk = os.read(self._res_r, 1 << 20)
                    if not chunk:
                        raise RuntimeError("chromium closed the pipe")
                    self._buf += chunk
                elif time.monotonic() > deadline:
                    raise TimeoutError(method)
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
        raise TimeoutError(method)

    def open(self, url: str) -> str:
        target = self.send("Target.createTarget", url=url)["targetId"]
        return str(self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])

    def evaluate(self, session: str, expression: str) -> object:
        result = self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._cmd_w)
        os.close(self._res_r)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    b = Chromium(tmp_path)
    yield b
    b.close()


def wait_for(b: Chromium, session: str, expression: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    value: object = None
    while time.monotonic() < deadline:
        value = b.evaluate(session, expression)
        if value:
            return value
        time.sleep(0.25)
    return value


def test_page_loads_shows_the_stream_and_lists_the_cards_in_view(
    server_url: str, browser: Chromium
) -> None:
    # when chromium opens the page
    session = browser.open(server_url)
    # then it loaded, the MJPEG preview decodes frames, and the scene list names both cards
    assert wait_for(browser, session, "document.querySelector('h1')?.textContent") == "cardedge"
    width = wait_for(browser, session, "document.getElementById('stream').naturalWidth")
    assert width == 640, "the MJPEG preview shows frames"
    names = wait_for(
        browser,
        session,
        "(t => t.includes('Card 001') && t.includes('Card 003') && t)"
        "(document.getElementById('scene').innerText)",
    )
    assert names, browser.evaluate(session, "document.getElementById('scene').innerText")
    assert "fake-bundle-1" in str(
        browser.evaluate(session, "document.getElementById('bundle').textContent")
    )


def test_page_screenshot_shows_overlays(server_url: str, browser: Chromium, tmp_path: Path) -> None:
    session = browser.open(server_url)
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=1280,
        height=900,
        deviceScaleFactor=1,
        mobile=False,
    )
    wait_for(browser, session, "document.getElementById('scene').innerText.includes('Card 001')")
    time.sleep(1.0)
    data = browser.send("Page.captureScreenshot", session, format="png")["data"]
    shot = tmp_path / "page.png"
    shot.write_bytes(base64.b64decode(str(data)))
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("CARDEDGE_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
