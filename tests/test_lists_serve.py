"""Scan lists as they ship: `cardedge serve` as a real process filming a pile being scanned
(`synthetic:reference_db/demo?deck`), the /v1/lists routes and their refusals, the exports,
the service killed (SIGKILL) while a list records, and `cardedge lists` reading the same file."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve_process import REPO, ServeProcess, clean_env, console_script

pytestmark = pytest.mark.slow

TOKEN = "lists-test-token"
DEMO = REPO / "models" / "demo"
DECK = "synthetic:reference_db/demo?deck&pace=30&fps=5&cards=400&seed=3"


def serve(work: Path) -> ServeProcess:
    if not (DEMO / "manifest.json").is_file():
        pytest.skip("models/demo is not built")
    return ServeProcess(work, bundle=DEMO, token=TOKEN, source=DECK)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serve(tmp_path_factory.mktemp("lists-serve")) as s:
        yield s


def send(server: ServeProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {**server.auth(), "Content-Type": "application/json"}
    status, _, raw = server.request(method, path, body=data, headers=headers)
    return status, (json.loads(raw) if raw else None)


def wait_for_entries(server: ServeProcess, list_id: int, n: int, timeout: float = 150) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, doc = server.json("GET", f"/v1/lists/{list_id}")
        assert status == 200, doc
        if len(doc["entries"]) >= n or time.monotonic() > deadline:
            assert len(doc["entries"]) >= n, f"{len(doc['entries'])} entries in {timeout} s"
            return doc
        time.sleep(0.5)


def started(server: ServeProcess, name: str) -> int:
    status, doc = send(server, "POST", "/v1/lists", {"name": name, "note": "tests"})
    assert status == 201 and doc["recording"], doc
    return int(doc["list_id"])


def test_a_list_records_the_cards_laid_down_and_exports_them(server: ServeProcess) -> None:
    # given a list started on the running service
    list_id = started(server, 'Binder é, "one"')
    # when a second list is started meanwhile, it is refused with a clear code
    status, err = send(server, "POST", "/v1/lists", {"name": "second"})
    assert (
        status == 409 and err["code"] == "list_already_recording" and str(list_id) in err["message"]
    )
    # then the cards laid down appear in it, each with a thumbnail
    doc = wait_for_entries(server, list_id, 2)
    entry = doc["entries"][0]
    assert entry["confidence"] in ("verified", "probable") and entry["frame_id"] > 0
    status, headers, jpeg = server.request("GET", entry["thumb"])
    assert status == 200 and jpeg[:2] == b"\xff\xd8" and headers["content-type"] == "image/jpeg"
    # and every export names each card once with its quantity
    send(server, "POST", f"/v1/lists/{list_id}/stop")
    doc = server.json("GET", f"/v1/lists/{list_id}")[1]
    quantities = {c["card_id"]: c["quantity"] for c in doc["cards"]}
    status, headers, body = server.request("GET", f"/v1/lists/{list_id}/export?format=tcgplayer")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert f'filename="list-{list_id}-binder-one.tcgplayer.csv"' in headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert sum(int(r["Quantity"]) for r in rows) == len(doc["entries"]) == sum(quantities.values())
    plain = server.request("GET", f"/v1/lists/{list_id}/export")[2].decode("utf-8-sig")
    assert {
        r["card_id"]: int(r["quantity"]) for r in csv.DictReader(io.StringIO(plain))
    } == quantities
    collectr = server.request("GET", f"/v1/lists/{list_id}/export?format=collectr")[2].decode()
    assert next(csv.DictReader(io.StringIO(collectr)))["Portfolio Name"] == 'Binder é, "one"'
    exported = json.loads(server.request("GET", f"/v1/lists/{list_id}/export?format=json")[2])
    assert {c["card_id"]: c["quantity"] for c in exported["cards"]} == quantities


def test_bad_requests_get_clear_codes(server: ServeProcess) -> None:
    status, err = server.json("GET", "/v1/lists/99999/export?format=csv")
    assert status == 404 and err["code"] == "list_not_found"
    lists = server.json("GET", "/v1/lists")[1]["lists"]
    if lists:
        some = lists[-1]["list_id"]
    else:
        some = started(server, "for errors")
        send(server, "POST", f"/v1/lists/{some}/stop")
    status, err = server.json("GET", f"/v1/lists/{some}/export?format=xlsx")
    assert status == 400 and err["code"] == "unknown_export_format"
    assert all(f in err["hint"] for f in ("tcgplayer", "collectr", "csv", "json"))
    status, err = send(server, "POST", "/v1/lists", {"name": ""})
    assert status == 422 and err["code"] == "invalid_request"
    # writes without the token are refused before the body is read
    status, _, raw = server.request("POST", "/v1/lists", body=b"not json")
    assert status == 401 and json.loads(raw)["code"] == "unauthorized"


def test_an_entry_can_be_corrected_and_deleted(server: ServeProcess) -> None:
    list_id = started(server, "corrections")
    entry = wait_for_entries(server, list_id, 1)["entries"][0]
    path = f"/v1/lists/{list_id}/entries/{entry['entry_id']}"
    # a card that is not in the catalogue is refused, naming it, and nothing changes
    status, err = send(server, "PATCH", path, {"card_id": "no-such-card"})
    assert (
        status == 422
        and err["code"] == "card_not_in_catalogue"
        and "no-such-card" in err["message"]
    )
    # the right card: the entry changes and the correction is kept as feedback with the crop
    right = "s01-001" if entry["card_id"] != "s01-001" else "s01-002"
    status, out = send(server, "PATCH", path, {"card_id": right})
    assert status == 200, out
    assert out["entry"]["card_id"] == right and out["entry"]["corrected"]
    assert out["previous_card_id"] == entry["card_id"] and out["feedback_id"]
    meta = server.state_dir / "feedback" / out["feedback_id"] / "meta.json"
    assert json.loads(meta.read_text())["card_id"] == right
    # deleting it removes it from the list
    assert send(server, "DELETE", path)[0] == 204
    doc = server.json("GET", f"/v1/lists/{list_id}")[1]
    assert entry["entry_id"] not in [e["entry_id"] for e in doc["entries"]]
    assert send(server, "DELETE", path)[1]["code"] == "entry_not_found"
    send(server, "POST", f"/v1/lists/{list_id}/stop")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(console_script("cardedge")), *args],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_killed_service_loses_no_entry_and_the_list_records_again(tmp_path: Path) -> None:
    # given a list recording on a real service that has written some entries
    first = serve(tmp_path).start()
    try:
        list_id = started(first, "killed")
        before = wait_for_entries(first, list_id, 2)["entries"]
    finally:
        # when the process is killed outright
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)
    # then `cardedge lists` reads every entry from the file it left
    shown = cli("lists", "show", str(list_id), "--state-dir", str(first.state_dir))
    assert shown.returncode == 0, shown.stderr
    ids = {e["entry_id"] for e in json.loads(shown.stdout)["entries"]}
    assert {e["entry_id"] for e in before} <= ids
    # and a restarted service still has them, with the list still recording
    with serve(tmp_path) as again:
        status, doc = again.json("GET", f"/v1/lists/{list_id}")
        assert status == 200 and doc["recording"]
        assert {e["entry_id"] for e in before} <= {e["entry_id"] for e in doc["entries"]}
        assert send(again, "POST", f"/v1/lists/{list_id}/stop")[1]["recording"] is False


def test_cardedge_lists_exports_what_the_api_exports(server: ServeProcess, tmp_path: Path) -> None:
    lists = server.json("GET", "/v1/lists")[1]["lists"]
    stopped = [s for s in lists if not s["recording"] and s["entry_count"]]
    if not stopped:
        list_id = started(server, "cli")
        wait_for_entries(server, list_id, 1)
        send(server, "POST", f"/v1/lists/{list_id}/stop")
    else:
        list_id = stopped[0]["list_id"]
    state = str(server.state_dir)
    table = cli("lists", "--state-dir", state)
    assert table.returncode == 0 and f"{list_id:>5}" in table.stdout
    out = tmp_path / "binder.csv"
    done = cli("lists", "export", str(list_id), "--format", "tcgplayer", "--out", str(out), "--state-dir", state)  # fmt: skip
    assert done.returncode == 0, done.stderr
    api = server.request("GET", f"/v1/lists/{list_id}/export?format=tcgplayer")[2]
    assert out.read_bytes() == api
    bad = cli("lists", "export", "99999", "--state-dir", state)
    assert bad.returncode == 2 and "list_not_found" in bad.stderr and "Traceback" not in bad.stderr
    wrong = cli("lists", "export", str(list_id), "--format", "xlsx", "--state-dir", state)
    assert wrong.returncode == 2 and "tcgplayer" in wrong.stderr
