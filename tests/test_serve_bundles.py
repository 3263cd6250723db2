"""Redeploying devices through what ships: `cardedge bundle push` (the installed console script)
to two `cardedge serve` processes at once, restart, rollback over the API, and every refused
upload (tampered, path traversal, oversized, cut off, without a token) leaving the current bundle
byte-identical.

The servers are seeded with the tests' factory bundle (real ONNX models that pass their
self-test) under the id push-a; the demo bundle's self-test flags 4 of its 16 scans unknown, so it
is not pushed here (see test_serve_process.py for the demo server).
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.malformed_bundles import add_member, rebrand, tar_of  # isort: skip
from tests.serve_process import ServeProcess, clean_env, console_script

pytestmark = [pytest.mark.slow, pytest.mark.train]

TOKEN = "push-test-token"


class Fleet:
    def __init__(self, root: Path, factory: Path) -> None:
        self.root = root
        self.a = rebrand(factory, root / "push-a", "push-a")
        self.b = rebrand(factory, root / "push-b", "push-b")
        self.tar_b = tar_of(self.b, root / "push-b.tar")
        self.cap = 3 * self.tar_b.stat().st_size
        self.servers = [
            ServeProcess(
                root / f"device-{i}",
                bundle=self.a,
                token=TOKEN,
                config={"limits": {"max_bundle_bytes": self.cap}},
            )
            for i in (1, 2)
        ]
        self.token_file = root / "token"
        self.token_file.write_text(TOKEN + "\n")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, factory_bundle: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), factory_bundle)
    try:
        for server in fleet.servers:
            server.start()
        yield fleet
    finally:
        for server in fleet.servers:
            server.stop()


def served(server: ServeProcess) -> str:
    status, body = server.json("GET", "/v1/status")
    assert status == 200, body
    return str(body["bundle_id"])


def current_digest(server: ServeProcess) -> dict[str, str]:
    """sha256 of every file of the store's current bundle, and which one it is."""
    current = (server.state_dir / "current").resolve()
    out = {"id": current.name}
    for path in sorted(current.rglob("*")):
        if path.is_file():
            out[path.relative_to(current).as_posix()] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return out


def push(fleet: Fleet, bundle: Path, *servers: ServeProcess) -> subprocess.CompletedProcess[str]:
    args = [str(console_script("cardedge")), "bundle", "push", str(bundle)]
    for server in servers:
        args += ["--device", server.url]
    args += ["--token-file", str(fleet.token_file), "--retries", "1", "--backoff", "0.1"]
    return subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=300)


def test_push_to_two_devices_then_restart_then_rollback(fleet: Fleet) -> None:
    one, two = fleet.servers
    assert served(one) == served(two) == "push-a"
    # when the bundle is pushed to both devices at once with the shipped command
    result = push(fleet, fleet.b, one, two)
    # then it succeeds and both report the new bundle
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("push-b") >= 2, result.stdout
    assert served(one) == served(two) == "push-b"
    # when a device restarts with the same `serve --bundle push-a` command line
    one.stop()
    one.start()
    # then the pushed bundle is still current
    assert served(one) == "push-b"
    # when it is rolled back over the API
    status, body = one.json("POST", "/v1/bundles/rollback", headers=one.auth())
    # then the bundle before it is served again, and the store agrees
    assert status == 200 and body["bundle_id"] == "push-a", body
    assert served(one) == "push-a"
    listed = one.json("GET", "/v1/bundles")[1]
    assert (listed["current"], listed["previous"]) == ("push-a", "push-b")
    # and activating by id over the API swaps forward again
    status, body = one.json("POST", "/v1/bundles/push-b/activate", headers=one.auth())
    assert status == 200 and served(one) == "push-b"


def _tampered(fleet: Fleet, name: str) -> Path:
    bundle = rebrand(fleet.b, fleet.root / name, name)
    path = bundle / "catalogue.sqlite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return tar_of(bundle, fleet.root / f"{name}.tar")


def _traversal(fleet: Fleet, name: str) -> Path:
    bundle = rebrand(fleet.b, fleet.root / name, name)
    return tar_of(bundle, fleet.root / f"{name}.tar", lambda t: add_member(t, "../../escaped"))


@pytest.mark.parametrize(
    ("make", "auth", "status", "code"),
    [
        (_tampered, True, 422, "bundle_hash_mismatch"),
        (_traversal, True, 422, "bundle_unsafe_path"),
        (None, True, 413, "bundle_too_large"),
        (_tampered, False, 401, "unauthorized"),
    ],
    ids=["tampered", "path-traversal", "oversized", "no-token"],
)
def test_refused_upload_leaves_the_current_bundle_byte_identical(
    fleet: Fleet, make: object, auth: bool, status: int, code: str
) -> None:
    server = fleet.servers[1]
    before = current_digest(server)
    if make is None:
        body = b"\0" * (fleet.cap + 1)
    else:
        assert callable(make)
        body = make(fleet, f"bad-{code}").read_bytes()
    # when it is uploaded over HTTP
    got, _, raw = server.request(
        "POST", "/v1/bundles", body=body, headers=server.auth() if auth else {}
    )
    # then its 4xx code, the same bundle served, byte for byte
    assert (got, json.loads(raw)["code"]) == (status, code), raw
    assert current_digest(server) == before and served(server) == before["id"]
    assert not (fleet.root / "escaped").exists() and not (server.work / "escaped").exists()


def test_upload_cut_off_mid_stream_changes_nothing(fleet: Fleet) -> None:
    server = fleet.servers[1]
    before = current_digest(server)
    data = fleet.tar_b.read_bytes()
    # when a client announces the whole archive, sends half and hangs up
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            f"POST /v1/bundles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(data)}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        sock.sendall(head.encode() + data[: len(data) // 2])
    # then the device still serves the same bundle and keeps no partial upload
    assert served(server) == before["id"] and current_digest(server) == before
    assert server.request("GET", "/healthz")[0] == 200
    leftovers = list((server.state_dir / "uploads").glob("*.part"))
    assert leftovers == [] or _eventually_gone(server)


def _eventually_gone(server: ServeProcess, timeout_s: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not list((server.state_dir / "uploads").glob("*.part")):
            return True
        time.sleep(0.1)
    return False


def test_two_uploads_at_once_each_get_an_answer(fleet: Fleet) -> None:
    server = fleet.servers[1]
    archives = {
        name: tar_of(rebrand(fleet.b, fleet.root / name, name), fleet.root / f"{name}.tar")
        for name in ("push-c", "push-d")
    }
    answers: dict[str, tuple[int, dict[str, object]]] = {}

    def upload(name: str) -> None:
        status, _, raw = server.request(
            "POST", "/v1/bundles", body=archives[name].read_bytes(), headers=server.auth()
        )
        answers[name] = (status, json.loads(raw))

    threads = [threading.Thread(target=upload, args=(n,)) for n in archives]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    # then each is installed and swapped in turn (or refused with a code), and the device serves
    # one of them with the store agreeing
    for name, (status, body) in answers.items():
        assert status == 200 or (400 <= status < 500 and body.get("code")), (name, body)
    ok = [n for n, (s, _) in answers.items() if s == 200]
    assert ok and served(server) in ok
    assert server.json("GET", "/v1/bundles")[1]["current"] == served(server)


def test_push_exits_1_when_a_device_fails_and_says_which(fleet: Fleet) -> None:
    # given one live device and one address where nothing listens
    from tests.serve_process import free_port

    live = fleet.servers[0]
    dead = f"http://127.0.0.1:{free_port()}"
    args = [str(console_script("cardedge")), "bundle", "push", str(fleet.b), "--device", live.url]
    args += ["--device", dead, "--token-file", str(fleet.token_file), "--retries", "1"]
    args += ["--backoff", "0.05", "--timeout", "5"]
    # when pushed with the shipped command
    result = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=120)
    # then exit 1, the table marks the dead device FAILED, and the live one serves the bundle
    assert result.returncode == 1, result.stdout + result.stderr
    dead_row = next(line for line in result.stdout.splitlines() if dead in line)
    assert "FAILED" in dead_row
    assert served(live) == "push-b"
