"""edge.state: seeding the bundle store from `serve --bundle DIR`, and a read-only state directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.malformed_bundles import make_bundle, rebrand  # isort: skip

from edge.bundles.errors import BundleConflictError
from edge.bundles.store import BundleStore
from edge.config import Settings
from edge.state import StoreUnavailableError, probe_state_dir, seed_store


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("seed") / "seed", "seed")


def settings(state: Path, bundle: Path | None) -> Settings:
    return Settings(runtime={"state_dir": state, "bundle": bundle})


def test_first_seed_is_installed_and_made_current(tmp_path: Path, seed: Path) -> None:
    served, store = seed_store(settings(tmp_path, seed))
    assert store.writable and served == (tmp_path / "bundles" / "seed").resolve()
    assert BundleStore(tmp_path).current_id() == "seed"


def test_a_pushed_bundle_stays_current_when_the_same_seed_restarts(tmp_path: Path, seed: Path) -> None:  # fmt: skip
    # given a seeded store where another bundle was activated since (a push)
    seed_store(settings(tmp_path, seed))
    other = rebrand(seed, tmp_path / "other-src", "other")
    from edge.bundles.install import InstallPolicy, install_bundle

    store = BundleStore(tmp_path)
    store.activate(install_bundle(store, other, InstallPolicy()).bundle_id)
    # when the service restarts with the same --bundle
    served, _ = seed_store(settings(tmp_path, seed))
    # then the pushed bundle is served and rollback returns to the seed
    assert served.name == "other" and store.previous_id() == "seed"
    assert store.rollback() == "seed"


def test_a_new_seed_becomes_current(tmp_path: Path, seed: Path) -> None:
    seed_store(settings(tmp_path, seed))
    newer = rebrand(seed, tmp_path / "newer-src", "newer")
    served, _ = seed_store(settings(tmp_path, newer))
    assert served.name == "newer" and BundleStore(tmp_path).previous_id() == "seed"


def test_a_different_bundle_under_an_installed_id_is_refused(tmp_path: Path, seed: Path) -> None:
    seed_store(settings(tmp_path, seed))
    changed = rebrand(seed, tmp_path / "changed", "seed")
    manifest = json.loads((changed / "manifest.json").read_text())
    manifest["created"] = "2030-01-01T00:00:00+00:00"
    (changed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleConflictError):
        seed_store(settings(tmp_path, changed))


def test_an_unwritable_state_dir_serves_the_seed_read_only(tmp_path: Path, seed: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    served, store = seed_store(settings(blocker / "state", seed))
    assert served == seed and not store.writable and store.reason and store.hint
    with pytest.raises(StoreUnavailableError, match="not writable"):
        store.require()


def test_probe_of_a_writable_dir(tmp_path: Path) -> None:
    state = probe_state_dir(tmp_path / "s")
    assert state.writable and list((tmp_path / "s").glob(".probe-*")) == []
