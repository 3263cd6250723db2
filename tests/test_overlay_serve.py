"""The README's teach-on-the-spot promise, on `cardedge serve` as a real process with the demo
bundle: a correction posted with teach=true makes the next photo of that card come back named;
the overlay is listed, counted in /v1/status, survives a restart, is cleared, and is dropped
(kept aside) when the service starts with a bundle of another catalogue."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.overlay_photos import CARD, DEMO, POSE_1, POSE_2, jpeg, photo, scan, thick_sleeve
from tests.serve_process import ServeProcess
from tests.test_serve_process import _multipart

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEMO / "manifest.json").is_file(), reason="no demo bundle"),
]

TOKEN = "overlay-test-token"
CARD_PHOTO = thick_sleeve(scan(CARD))  # the bundle's sharp scan cannot verify it at POSE_2
TAUGHT = jpeg(photo(CARD_PHOTO, POSE_1))
NEXT = jpeg(photo(CARD_PHOTO, POSE_2, table_seed=1))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with ServeProcess(tmp_path_factory.mktemp("serve-overlay"), bundle=DEMO, token=TOKEN) as s:
        yield s


def _identify(server: ServeProcess, image: bytes) -> list[dict[str, Any]]:
    status, body = server.json(
        "POST", "/v1/identify", body=image, headers={"Content-Type": "image/jpeg"}
    )
    assert status == 200, body
    cards: list[dict[str, Any]] = body["cards"]
    return cards


def _named(server: ServeProcess, image: bytes) -> bool:
    return any(c["card_id"] == CARD and c["known"] for c in _identify(server, image))


def _teach(server: ServeProcess, card_id: str = CARD) -> tuple[int, Any]:
    [found] = _identify(server, TAUGHT)  # the polygon the page would send back
    fields = {"card_id": card_id, "polygon": json.dumps(found["polygon"]), "teach": "true"}
    body, headers = _multipart(fields, TAUGHT)
    status, _, raw = server.request(
        "POST", "/v1/feedback", body=body, headers={**headers, **server.auth()}
    )
    return status, json.loads(raw)


def _overlay(server: ServeProcess) -> dict[str, Any]:
    status, body = server.json("GET", "/v1/overlay")
    assert status == 200, body
    return dict(body)


def test_teach_list_restart_clear(server: ServeProcess) -> None:
    # given a photo of a sleeved card the bundle does not name
    assert not _named(server, NEXT)
    # when another photo of it is corrected with teach=true
    status, record = _teach(server)
    # then the correction is kept, and the next photo names the card, verified
    assert status == 201 and record["taught_view"], record
    [found] = _identify(server, NEXT)
    assert (found["card_id"], found["confidence"]) == (CARD, "verified"), found
    assert found["reason"] == f"taught view {record['taught_view']}"
    # and the overlay lists it with a thumbnail; /v1/status counts it
    listed = _overlay(server)
    assert listed["count"] == 1 and listed["views"][0]["card_id"] == CARD
    assert listed["views"][0]["feedback_id"] == record["feedback_id"]
    assert listed["views"][0]["thumbnail"].startswith("data:image/jpeg;base64,")
    assert server.json("GET", "/v1/status")[1]["overlay"] == {"views": 1, "cards": 1}
    # when the service restarts
    server.stop()
    server.start()
    # then the view is still served
    assert _overlay(server)["count"] == 1 and _named(server, NEXT)
    # when the overlay is cleared (a write: the token is needed)
    assert server.request("DELETE", "/v1/overlay")[0] == 401
    status, body = server.json("DELETE", "/v1/overlay", headers=server.auth())
    # then nothing is taught any more, and the card is no longer named
    assert status == 200 and body["view_ids"] == [record["taught_view"]], body
    assert _overlay(server)["count"] == 0 and not _named(server, NEXT)


def test_bad_teach_requests_store_nothing(server: ServeProcess) -> None:
    # given the feedback and the overlay as they are
    before = (server.json("GET", "/v1/feedback")[1]["count"], _overlay(server)["count"])
    # when a card not in the catalogue is taught, or teach is not a boolean, or a view that
    # does not exist is removed
    status, body = _teach(server, "no-such-card")
    assert (status, body["code"]) == (422, "card_not_in_catalogue"), body
    form, headers = _multipart({"card_id": CARD, "teach": "maybe"}, TAUGHT)
    status, _, raw = server.request(
        "POST", "/v1/feedback", body=form, headers={**headers, **server.auth()}
    )
    assert status == 422, raw
    status, body = server.json("DELETE", "/v1/overlay/nope", headers=server.auth())
    assert (status, body["code"]) == (404, "overlay_view_not_found"), body
    # then nothing was stored
    after = (server.json("GET", "/v1/feedback")[1]["count"], _overlay(server)["count"])
    assert after == before


def _other_catalogue(tmp: Path) -> Path:
    """The demo bundle under another id, with one card renamed: another catalogue."""
    from edge.bundles.files import refresh_hashes, write_manifest
    from edge.bundles.manifest import load_manifest

    out = tmp / "demo-renamed"
    shutil.copytree(DEMO, out)
    (out / "manifest.sig").unlink(missing_ok=True)
    con = sqlite3.connect(out / "catalogue.sqlite")
    with con:
        con.execute("UPDATE cards SET name = name || ' (renamed)' WHERE card_id = ?", (CARD,))
    con.close()
    manifest = load_manifest(out / "manifest.json").model_copy(update={"bundle_id": "renamed"})
    write_manifest(out, refresh_hashes(out, manifest))
    return out


def test_a_bundle_of_another_catalogue_drops_the_overlay(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # given a service that was taught a view
    work = tmp_path_factory.mktemp("serve-overlay-drop")
    first = ServeProcess(work, bundle=DEMO, token=TOKEN)
    with first:
        assert _teach(first)[0] == 201
    # when it starts again on the same state directory with a bundle of another catalogue
    second = ServeProcess(work, bundle=_other_catalogue(work), token=TOKEN)
    with second:
        # then the overlay is empty, its views kept aside, and the log says so
        assert _overlay(second)["count"] == 0
        assert second.json("GET", "/v1/status")[1]["bundle_id"] == "renamed"
    [aside] = (work / "state" / "overlay-dropped").iterdir()
    assert len(json.loads((aside / "overlay.json").read_text())["views"]) == 1
    assert "overlay dropped" in second.logs()
