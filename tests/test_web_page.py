"""The web page in real headless Chromium (Debian's chromium) against a real `cardedge serve`
process with the demo bundle: it loads without console errors, the polygons it draws are the
scene's polygons of the very frame it shows (read back from the page and seen in the pixels of a
screenshot), a scan list started from the page fills and its CSV downloads and parses, and the
page fits a phone. Screenshots for people to look at go to $CARDEDGE_SCREENSHOTS when it is set.

Chromium is driven over the DevTools protocol on --remote-debugging-pipe (fds 3/4, NUL-terminated
JSON): no websocket library and no Playwright browser download, which cannot work offline.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import io
import json
import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.serve_process import REPO, ServeProcess

CHROMIUM = "/usr/bin/chromium"
DEMO = REPO / "models" / "demo"
STATIC = REPO / "edge" / "api" / "static"
TOKEN = "web-page-token"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no /usr/bin/chromium"),
]
TIER_RGB = {  # draw.js TIERS
    "verified": (0x2F, 0xD1, 0x6A),
    "probable": (0xF5, 0xB8, 0x3D),
    "unknown": (0xFF, 0x5C, 0x8A),
    "back": (0x7F, 0xB2, 0xFF),
    "pending": (0xA8, 0xB0, 0xBD),
}


class Chromium:
    """Headless Chromium over the DevTools protocol; keeps every event it sends (console
    messages, exceptions, log entries, downloads) for the test to look at."""

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
                "--font-render-hinting=none",
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
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._res_r], [], [], 1.0)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buf += chunk
            elif time.monotonic() > deadline:
                raise TimeoutError("no message from chromium")
        raw, self._buf = self._buf.split(b"\0", 1)
        return dict(json.loads(raw))

    def send(self, method: str, session: str | None = None, **params: object) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, object] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reply = self._read_message(deadline)
            if "method" in reply:
                self.events.append(reply)
            elif reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
        raise TimeoutError(method)

    def open(
        self, url: str, width: int, height: int, scale: float = 1, mobile: bool = False
    ) -> str:
        """A new tab at width x height CSS px, with console and log events on, then `url`."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = str(
            self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        )
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=scale,
            mobile=mobile,
        )
        self.send("Page.navigate", session, url=url)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, session: str, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.evaluate(session, expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {expression}: last {value!r}")

    def screenshot(self, session: str, full_page: bool = False) -> np.ndarray:
        """The tab as an RGB array in device pixels (the whole page when full_page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics", session)["cssContentSize"]
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
        data = base64.b64decode(self.send("Page.captureScreenshot", session, **params)["data"])
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (failed loads) so far."""
        found = []
        for ev in self.events:
            method, params = ev["method"], ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")
        return found

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._cmd_w)
        os.close(self._res_r)


class SceneRecorder:
    """Polls /v1/scene from outside the page and keeps every frame's scene by frame id, so what
    the page drew can be checked against what the server said for that frame."""

    def __init__(self, server: ServeProcess) -> None:
        self.server = server
        self.scenes: dict[int, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                status, scene = self.server.json("GET", "/v1/scene", timeout=10)
                if status == 200 and scene["frame_id"] is not None:
                    self.scenes.setdefault(scene["frame_id"], scene)
            self._stop.wait(0.03)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`cardedge serve` with the demo bundle on the synthetic camera, slowed to 4 fps."""
    if not (DEMO / "manifest.json").is_file():
        pytest.skip("models/demo is not built")
    source = "synthetic:reference_db/demo?seconds=6"
    server = ServeProcess(
        tmp_path_factory.mktemp("web-demo"),
        bundle=DEMO,
        token=TOKEN,
        source=source,
        env={"CARDEDGE_SOURCE__FPS": "4"},
    )
    with server:
        deadline = time.monotonic() + 60
        while server.request("GET", "/v1/frame.jpg")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield server


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    b = Chromium(tmp_path)
    yield b
    b.close()


def keep_screenshot(image: np.ndarray, name: str) -> None:
    folder = os.environ.get("CARDEDGE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(Path(folder) / name), np.ascontiguousarray(image[:, :, ::-1]))


def wait_for_a_view_worth_showing(browser: Chromium, session: str, entries: int = 0) -> None:
    """Only when screenshots are kept: give the film up to 45 s to show two or more named cards
    (and the list `entries`), so the pictures in docs/ show what the page is for. No assertion."""
    if not os.environ.get("CARDEDGE_SCREENSHOTS"):
        return
    with contextlib.suppress(AssertionError):
        browser.wait_for(
            session,
            "(window.cardedge.drawn?.cards ?? []).filter(c => c.tier === 'verified').length >= 2"
            f" && document.querySelectorAll('#list-entries li').length >= {entries}",
            timeout=45,
        )


def open_page(browser: Chromium, server: ServeProcess, **view: Any) -> str:
    session = browser.open(server.url + "/", **view)
    browser.wait_for(session, "document.querySelector('h1')?.textContent === 'cardedge'")
    browser.wait_for(session, "!!window.cardedge")  # the page's script is running
    # the token field, as a user fills it in
    browser.evaluate(
        session,
        f"document.getElementById('token-button').click();"
        f"document.getElementById('token-input').value = {json.dumps(TOKEN)};"
        f"document.getElementById('token-form').requestSubmit(); true",
    )
    return session


def wait_for_cards(browser: Chromium, session: str, timeout: float = 90.0) -> None:
    """Until the preview shows a frame with at least one identified card."""
    browser.wait_for(
        session,
        "(window.cardedge?.drawn?.cards ?? []).some(c => c.tier !== 'pending')",
        timeout=timeout,
    )


def test_every_api_path_in_the_page_is_served(demo: ServeProcess) -> None:
    # given every /v1 path the page's scripts and HTML name
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(STATIC.iterdir()))
    called = set(re.findall(r"[\"'`](/v1/[A-Za-z0-9_./-]+)", text))
    # then the real server serves each (paths with ids are built from their served prefix)
    status, spec = demo.json("GET", "/openapi.json")
    served = {re.sub(r"/\{[^}]+\}.*", "", p) for p in spec["paths"]} | set(spec["paths"])
    assert status == 200 and called, called
    assert called <= served, called - served
    # and the page names nothing outside the device (no CDN, no web fonts)
    assert not re.search(r"https?://", text), "the page must be self-contained"


def test_the_page_loads_without_console_errors_and_draws_the_scene_of_its_frame(
    demo: ServeProcess, browser: Chromium
) -> None:
    recorder = SceneRecorder(demo)
    try:
        # given the page open at desktop width, showing identified cards
        session = open_page(browser, demo, width=1280, height=900)
        wait_for_cards(browser, session)
        wait_for_a_view_worth_showing(browser, session)
        browser.wait_for(session, "document.getElementById('notice').hidden", 10)
        # when the preview is paused (what a user does to look closely or fix a card)
        browser.evaluate(session, "document.getElementById('pause').click(); true")
        time.sleep(0.5)
        drawn = browser.evaluate(session, "window.cardedge.drawn")
        box = browser.evaluate(
            session,
            "(r => ({x: r.left, y: r.top, w: r.width, h: r.height}))"
            "(document.getElementById('overlay').getBoundingClientRect())",
        )
        shot = browser.screenshot(session)
    finally:
        recorder.close()
    keep_screenshot(shot, "web-overlay.png")
    # then the page drew exactly the polygons the server's scene gave for that frame
    scene = recorder.scenes.get(drawn["frame_id"])
    assert scene is not None, (
        f"frame {drawn['frame_id']} not seen in {sorted(recorder.scenes)[-5:]}"
    )
    assert len(drawn["cards"]) == len(scene["cards"])
    for card, want in zip(drawn["cards"], scene["cards"], strict=True):
        assert card["track_id"] == want["track_id"]
        assert np.allclose(card["polygon"], want["polygon"], atol=0.05)
        # and where it drew them on screen is the frame polygon scaled to the canvas (+-1 px)
        scale = box["w"] / scene["width"]
        assert np.allclose(card["points"], np.asarray(want["polygon"]) * scale, atol=1.0)
    # and the screenshot shows each polygon's tier colour on its edges
    for card in drawn["cards"]:
        hits = edge_colour_hits(shot, card, box)
        assert hits >= 0.5, (card["tier"], hits)
    assert browser.errors() == []


def edge_colour_hits(shot: np.ndarray, card: dict[str, Any], box: dict[str, float]) -> float:
    """Share of points along a drawn polygon's solid stretches where a pixel within 2 px has
    the tier's colour (dashes leave gaps, so the unknown and probable tiers need less)."""
    want = np.asarray(TIER_RGB[card["tier"]], dtype=np.int32)
    pts = np.asarray(card["points"], dtype=np.float64) + np.array([box["x"], box["y"]])
    samples = []
    for a, b in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        for t in np.linspace(0.1, 0.9, 9):
            x, y = a + (b - a) * t
            patch = shot[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3].reshape(-1, 3)
            samples.append(bool((np.abs(patch.astype(np.int32) - want).max(axis=1) < 40).any()))
    share = float(np.mean(samples))
    return share if card["tier"] == "verified" else min(1.0, share * 2)


def test_a_scan_list_started_on_the_page_fills_and_its_csv_downloads(
    demo: ServeProcess, browser: Chromium, tmp_path: Path
) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    session = open_page(browser, demo, width=1280, height=860)
    browser.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    # given the page, when a list is started from its form
    browser.wait_for(session, "!!document.getElementById('list-start')")
    browser.evaluate(
        session,
        "document.getElementById('list-name').value = 'Binder 3';"
        "document.getElementById('list-start').requestSubmit(); true",
    )
    # then it records, and cards laid under the camera show up in it with their counts
    browser.wait_for(
        session, "document.getElementById('list-state').textContent.includes('recording')"
    )
    browser.wait_for(session, "document.querySelectorAll('#list-entries li').length >= 2", 120)
    browser.evaluate(session, "document.querySelector('.entries').open = true; true")
    wait_for_a_view_worth_showing(browser, session, entries=4)
    browser.wait_for(session, "document.getElementById('notice').hidden", 10)
    keep_screenshot(browser.screenshot(session), "web-desktop.png")
    # when it is stopped and the collection-tool CSV downloaded
    browser.evaluate(session, "document.getElementById('list-stop').click(); true")
    browser.wait_for(session, "document.getElementById('list-state').textContent === 'stopped'")
    list_id = browser.evaluate(session, "document.getElementById('list-select').value")
    status, scan = demo.json("GET", f"/v1/lists/{list_id}")
    assert status == 200 and not scan["recording"] and scan["entry_count"] >= 2
    browser.evaluate(
        session,
        "document.getElementById('export-format').value = 'tcgplayer';"
        "document.getElementById('list-download').click(); true",
    )
    path = wait_for_download(downloads, ".csv")
    # then it parses as the collection tool's CSV: one row per card, the list's quantities
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert len(rows) == scan["card_count"], rows
    assert sum(int(r["Quantity"]) for r in rows) == scan["entry_count"]
    assert {r["Name"] for r in rows} == {c["name"] for c in scan["cards"]}
    assert browser.errors() == []


def wait_for_download(folder: Path, suffix: str, timeout: float = 30.0) -> Path:
    """The one finished file chromium saved into `folder` (it writes .crdownload first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.suffix == suffix]
        if done and done[0].stat().st_size > 0:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"nothing downloaded into {folder}: {list(folder.iterdir())}")


def test_the_page_fits_a_phone(demo: ServeProcess, browser: Chromium) -> None:
    # given a list recording (started through the API) and the page at 375 CSS px, as on a phone
    status, started = demo.json(
        "POST",
        "/v1/lists",
        body=json.dumps({"name": "Phone"}).encode(),
        headers={**demo.auth(), "Content-Type": "application/json"},
    )
    assert status == 201, started
    try:
        session = open_page(browser, demo, width=375, height=812, scale=2, mobile=True)
        wait_for_cards(browser, session)
        browser.wait_for(session, "document.querySelectorAll('#list-entries li').length >= 1", 120)
        wait_for_a_view_worth_showing(browser, session, entries=2)
        browser.wait_for(session, "document.getElementById('notice').hidden", 10)
        # then nothing is wider than the screen, and the preview fills its width
        widths = browser.evaluate(
            session,
            "({doc: document.documentElement.scrollWidth,"
            " canvas: document.getElementById('overlay').getBoundingClientRect().width,"
            " list: document.getElementById('list-counts').getBoundingClientRect().right})",
        )
        assert widths["doc"] <= 375 and widths["list"] <= 375, widths
        assert 330 <= widths["canvas"] <= 375, widths
        keep_screenshot(browser.screenshot(session, full_page=True), "web-phone.png")
        assert browser.errors() == []
    finally:
        demo.request("POST", f"/v1/lists/{started['list_id']}/stop", headers=demo.auth())


def test_a_correction_from_the_page_is_stored_as_feedback(
    demo: ServeProcess, browser: Chromium
) -> None:
    # given the page with an identified card in view, paused
    session = open_page(browser, demo, width=1280, height=900)
    wait_for_cards(browser, session)
    browser.evaluate(session, "document.getElementById('pause').click(); true")
    # when its Fix button is used: search the catalogue, pick a card, save
    browser.evaluate(session, "document.querySelector('#scene .fix').click(); true")
    browser.evaluate(
        session,
        "(i => { i.value = 's01-001'; i.dispatchEvent(new Event('input')); })"
        "(document.getElementById('fix-search')); true",
    )
    pick = "document.querySelector('#fix-results li[data-id=\"s01-001\"] .pick')"
    browser.wait_for(session, f"!!{pick}")
    browser.evaluate(session, f"{pick}.click(); true")
    browser.evaluate(session, "document.getElementById('fix-form').requestSubmit(); true")
    browser.wait_for(
        session,
        "!document.getElementById('fix-dialog').open"
        " || document.getElementById('fix-error').textContent",
    )
    error = browser.evaluate(session, "document.getElementById('fix-error').textContent")
    assert not error, error
    # then the device kept it, with the frame's polygon or as a crop
    status, kept = demo.json("GET", "/v1/feedback", headers=demo.auth())
    assert status == 200 and kept["count"] >= 1
    newest = kept["feedback"][0]
    assert newest["card_id"] == "s01-001" and newest["note"].startswith("web page: live frame")
    assert browser.errors() == []


def test_an_uploaded_photo_shows_each_card_with_its_crop_and_answer(
    demo: ServeProcess, browser: Chromium, tmp_path: Path
) -> None:
    # given a photo with cards (a frame of the synthetic camera) and what the API says of it
    deadline = time.monotonic() + 60
    while True:
        status, _, jpeg = demo.request("GET", "/v1/frame.jpg?annotate=false")
        assert status == 200 and time.monotonic() < deadline, "no frame with a card in it"
        _, want = demo.json(
            "POST", "/v1/identify", body=jpeg, headers={"Content-Type": "image/jpeg"}
        )
        if want["cards"]:
            break
    photo = tmp_path / "table.jpg"
    photo.write_bytes(jpeg)
    # when it is chosen on the page and sent
    session = open_page(browser, demo, width=1280, height=900)
    document = browser.send("DOM.getDocument", session)["root"]["nodeId"]
    node = browser.send("DOM.querySelector", session, nodeId=document, selector="#file")["nodeId"]
    browser.send("DOM.setFileInputFiles", session, nodeId=node, files=[str(photo)])
    browser.evaluate(session, "document.getElementById('identify-form').requestSubmit(); true")
    # then each card of the answer is listed with its name and tier, and a crop cut from the photo
    browser.wait_for(session, "document.querySelectorAll('#upload-result li.card').length >= 1")
    shown = browser.evaluate(
        session,
        "[...document.querySelectorAll('#upload-result li.card')].map(li => ({"
        " name: li.querySelector('.name').textContent, tier: li.dataset.tier,"
        " crop: li.querySelector('canvas.thumb').width}))",
    )
    named = sorted((c["name"] or "unknown card", c["confidence"]) for c in want["cards"])
    named = [(n if t in ("verified", "probable") else "unknown card", t) for n, t in named]
    assert sorted((s["name"], s["tier"]) for s in shown) == sorted(named), shown
    assert all(s["crop"] > 10 for s in shown), shown
    assert browser.evaluate(session, "!document.getElementById('upload-canvas').hidden")
    assert browser.errors() == []
