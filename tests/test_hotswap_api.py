"""/v1/bundles over HTTP: list, token-guarded streamed upload with a size cap, activate, rollback;
refusals come back as {code, message, hint} and leave the served bundle alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.malformed_bundles import make_bundle, rebrand, tar_of  # isort: skip
from tests.test_hotswap import FakeRecognizer  # isort: skip

from edge.api.app import create_app
from edge.bundles.hotswap import HotSwapper
from edge.bundles.install import InstallPolicy, install_bundle
from edge.bundles.store import BundleStore
from edge.config import ServerSettings, Settings
from edge.live.runtime import Runtime

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("base") / "base", "base")


@pytest.fixture
def client(tmp_path: Path, base: Path) -> Iterator[tuple[TestClient, Runtime]]:
    settings = Settings(
        runtime={"state_dir": tmp_path / "state"}, limits={"max_bundle_bytes": 200_000}
    )
    server = ServerSettings(token=TOKEN)
    store = BundleStore(settings.runtime.state_dir)
    old = install_bundle(store, rebrand(base, tmp_path / "old", "old"), InstallPolicy())
    store.activate("old")
    runtime = Runtime(settings, FakeRecognizer(old.path))  # type: ignore[arg-type]

    def loader(path: Path) -> Any:
        return FakeRecognizer(path, wrong=path.name.startswith("bad"))

    # the shipped app, with a swapper whose loader makes fake recognizers (the real loader runs
    # in tests/test_serve_process.py against `cardedge serve`)
    app = create_app(settings.model_copy(update={"server": server}), runtime)
    app.state.bundle_swapper = HotSwapper(runtime, store, loader, InstallPolicy())
    with TestClient(app) as c:
        yield c, runtime


def _archive(base: Path, tmp_path: Path, bundle_id: str) -> bytes:
    return tar_of(
        rebrand(base, tmp_path / bundle_id, bundle_id), tmp_path / f"{bundle_id}.tar"
    ).read_bytes()


def test_list_shows_the_current_bundle(client: tuple[TestClient, Runtime]) -> None:
    c, _ = client
    body = c.get("/v1/bundles").json()
    assert body["current"] == "old" and [b["bundle_id"] for b in body["bundles"]] == ["old"]


def test_upload_needs_the_token(
    client: tuple[TestClient, Runtime], base: Path, tmp_path: Path
) -> None:
    c, runtime = client
    r = c.post("/v1/bundles", content=_archive(base, tmp_path, "new"))
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert runtime.current_bundle_id == "old"


def test_upload_installs_and_swaps(
    client: tuple[TestClient, Runtime], base: Path, tmp_path: Path
) -> None:
    c, runtime = client
    r = c.post("/v1/bundles", content=_archive(base, tmp_path, "new"), headers=AUTH)
    assert r.status_code == 200, r.text
    assert (
        r.json()["bundle_id"] == "new"
        and r.json()["swapped"]
        and r.json()["previous_bundle_id"] == "old"
    )
    assert runtime.current_bundle_id == "new"
    assert c.get("/v1/bundles").json()["previous"] == "old"


def test_oversized_upload_is_413(client: tuple[TestClient, Runtime]) -> None:
    c, runtime = client
    r = c.post("/v1/bundles", content=b"\0" * 300_000, headers=AUTH)
    assert r.status_code == 413 and r.json()["code"] == "bundle_too_large"
    assert runtime.current_bundle_id == "old"


def test_malformed_upload_says_why(client: tuple[TestClient, Runtime]) -> None:
    c, runtime = client
    r = c.post("/v1/bundles", content=b"this is no tar" * 100, headers=AUTH)
    assert r.status_code == 422 and r.json()["code"] == "bundle_archive"
    assert runtime.current_bundle_id == "old"


def test_self_test_failure_is_reported_and_old_kept(
    client: tuple[TestClient, Runtime], base: Path, tmp_path: Path
) -> None:
    c, runtime = client
    r = c.post("/v1/bundles", content=_archive(base, tmp_path, "bad-2"), headers=AUTH)
    assert r.status_code == 422 and r.json()["code"] == "bundle_selftest_failed"
    assert "expected c001" in r.json()["message"]
    assert runtime.current_bundle_id == "old"


def test_activate_and_rollback(
    client: tuple[TestClient, Runtime], base: Path, tmp_path: Path
) -> None:
    c, runtime = client
    c.post("/v1/bundles?activate=false", content=_archive(base, tmp_path, "new"), headers=AUTH)
    assert runtime.current_bundle_id == "old"
    assert c.post("/v1/bundles/new/activate", headers=AUTH).status_code == 200
    assert runtime.current_bundle_id == "new"
    assert c.post("/v1/bundles/rollback", headers=AUTH).json()["bundle_id"] == "old"
    assert runtime.current_bundle_id == "old"


def test_activating_an_unknown_bundle_is_404(client: tuple[TestClient, Runtime]) -> None:
    c, _ = client
    r = c.post("/v1/bundles/ghost/activate", headers=AUTH)
    assert r.status_code == 404 and r.json()["code"] == "bundle_not_found"
