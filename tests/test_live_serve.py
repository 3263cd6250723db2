"""`cardedge serve` plumbing: sd_notify over NOTIFY_SOCKET, watchdog pings gated on health,
argument handling, and the systemd unit passing `systemd-analyze verify`."""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from edge.cli.serve import (
    Notifier,
    build_runtime,
    notify_loop,
    register,
    watchdog_interval,
)
from edge.config import Settings, load_settings
from edge.errors import ConfigError, SourceError
from edge.live.runtime import Runtime
from edge.state import resolve_bundle
from tests.fakes.recognizer import FakeRecognizer, make_cards

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "cardedge.service"


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(3.0)
    yield str(path), sock
    sock.close()


def test_notifier_sends_datagrams_to_the_socket(notify_socket) -> None:
    address, sock = notify_socket
    assert Notifier(address).send("READY=1")
    assert sock.recv(1024) == b"READY=1"


def test_notifier_without_systemd_is_a_no_op() -> None:
    n = Notifier("")
    assert not n.enabled and n.send("READY=1") is False


def test_watchdog_interval_is_half_of_watchdog_sec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


class _Health(Runtime):
    """A runtime whose liveness the test controls."""

    is_alive = True

    def alive(self) -> bool:
        return self.is_alive


def test_ready_then_watchdog_pings_only_while_alive(notify_socket, monkeypatch) -> None:
    address, sock = notify_socket
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    runtime = _Health(Settings(), FakeRecognizer(make_cards(2)))
    stop = threading.Event()
    t = threading.Thread(target=notify_loop, args=(runtime, Notifier(address), lambda: True, stop))
    t.start()
    try:
        assert sock.recv(1024).startswith(b"READY=1")
        assert sock.recv(1024) == b"WATCHDOG=1"
        # when the loop hangs, pings stop (a STATUS line says why)
        runtime.is_alive = False
        msgs = {sock.recv(1024) for _ in range(4)}
        assert msgs & {b"STATUS=live loop hung; waiting for the watchdog restart"}
        runtime.is_alive = True
        sock.settimeout(0.01)
        while True:  # drain what was queued before recovering
            try:
                sock.recv(1024)
            except TimeoutError:
                break
        sock.settimeout(3.0)
        assert sock.recv(1024) == b"WATCHDOG=1"
    finally:
        stop.set()
        t.join(5)


def test_serve_arguments_are_registered() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--bundle", "b", "--source", "synthetic:", "--port", "9000"])
    assert (args.bundle, args.source, args.port, args.host) == (Path("b"), "synthetic:", 9000, None)
    assert parser.parse_args(["bench-live", "--seconds", "3"]).seconds == 3.0


def test_no_bundle_and_no_current_link_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(None, runtime={"state_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="no bundle"):
        resolve_bundle(settings)


def test_current_link_is_followed(tmp_path: Path) -> None:
    (tmp_path / "bundles" / "b1").mkdir(parents=True)
    (tmp_path / "current").symlink_to(tmp_path / "bundles" / "b1")
    settings = load_settings(None, runtime={"state_dir": str(tmp_path)})
    assert resolve_bundle(settings) == (tmp_path / "bundles" / "b1").resolve()


def test_a_source_typo_fails_at_start_up() -> None:
    settings = load_settings(None, source={"uri": "webcam:0"})
    with pytest.raises(SourceError, match="unknown source scheme"):
        build_runtime(settings, FakeRecognizer(make_cards(2)))


def test_a_configured_source_gets_a_live_loop(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    runtime = build_runtime(
        load_settings(None, source={"uri": f"dir:{tmp_path / 'p'}"}), FakeRecognizer(make_cards(2))
    )
    assert runtime.live is not None and runtime.live.uri == f"dir:{tmp_path / 'p'}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # the unit names the installed binary; point it at one that exists here for the check
    text = UNIT.read_text().replace("/opt/cardedge/.venv/bin/cardedge serve", "/bin/true")
    unit = tmp_path / "cardedge.service"
    unit.write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in (out.stdout + out.stderr).splitlines() if "cardedge.service" in line
    ]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


def test_systemd_unit_has_the_agreed_hardening() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=cardedge",
        "PrivateTmp=yes",
        "SupplementaryGroups=video",
        "DeviceAllow=/dev/hailo0 rw",
        "LoadCredential=token:",
    ):
        assert line in text, line
