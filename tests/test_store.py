"""Bundle store: activate / rollback / gc / retention, atomic links, crash leftovers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.malformed_bundles import make_bundle, rebrand  # isort: skip

from edge.bundles.errors import NoPreviousBundleError
from edge.bundles.install import InstallPolicy, install_bundle
from edge.bundles.store import BundleStore
from edge.errors import BundleError, BundleNotFoundError

FAST = InstallPolicy(check_models=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("base") / "base", "base")


def add(store: BundleStore, base: Path, tmp: Path, bundle_id: str, when: float) -> str:
    """Install a copy of base under `bundle_id`, stamped as installed at `when`."""
    install_bundle(store, rebrand(base, tmp / f"src-{bundle_id}", bundle_id), FAST)
    os.utime(store.path_for(bundle_id), (when, when))
    return bundle_id


@pytest.fixture
def store(tmp_path: Path) -> BundleStore:
    return BundleStore(tmp_path / "state", keep=2)


def test_fresh_store_has_no_current(store: BundleStore) -> None:
    assert store.current_id() is None and store.current_path() is None


def test_activate_points_current_at_the_bundle_with_a_relative_link(
    store: BundleStore, base: Path, tmp_path: Path
) -> None:
    # given an installed bundle; when activated
    add(store, base, tmp_path, "a", 1000)
    store.activate("a")
    # then current is a relative symlink to bundles/a
    assert os.readlink(store.state_dir / "current") == "bundles/a"
    assert store.current_path() == store.path_for("a")


def test_activating_a_second_bundle_records_the_first_as_previous(
    store: BundleStore, base: Path, tmp_path: Path
) -> None:
    add(store, base, tmp_path, "a", 1000)
    add(store, base, tmp_path, "b", 2000)
    store.activate("a")
    # when b is activated; then a is previous
    assert store.activate("b") == "a"
    assert (store.current_id(), store.previous_id()) == ("b", "a")


def test_rollback_swaps_current_and_previous(
    store: BundleStore, base: Path, tmp_path: Path
) -> None:
    add(store, base, tmp_path, "a", 1000)
    add(store, base, tmp_path, "b", 2000)
    store.activate("a")
    store.activate("b")
    # when rolled back, then a is current and b previous (so a second rollback returns to b)
    assert store.rollback() == "a"
    assert (store.current_id(), store.previous_id()) == ("a", "b")


def test_rollback_without_previous_is_refused(
    store: BundleStore, base: Path, tmp_path: Path
) -> None:
    store.activate(add(store, base, tmp_path, "a", 1000))
    with pytest.raises(NoPreviousBundleError):
        store.rollback()
    assert store.current_id() == "a"


def test_activating_an_unknown_bundle_is_refused(store: BundleStore) -> None:
    with pytest.raises(BundleNotFoundError):
        store.activate("nope")


def test_path_tricks_in_bundle_ids_are_refused(store: BundleStore) -> None:
    with pytest.raises(BundleNotFoundError):
        store.activate("../etc")


def test_gc_keeps_current_previous_and_the_newest(
    store: BundleStore, base: Path, tmp_path: Path
) -> None:
    # given five bundles installed at t=1..5; current=a (oldest), previous=b
    for i, bid in enumerate("abcde"):
        add(store, base, tmp_path, bid, 1000 + i)
    store.activate("b")
    store.activate("a")
    # when gc keeps 2
    removed = store.gc()
    # then c is deleted; a, b protected; d, e the newest two
    assert removed == ["c"]
    assert sorted(b.bundle_id for b in store.installed()) == ["a", "b", "d", "e"]


def test_current_bundle_cannot_be_removed(store: BundleStore, base: Path, tmp_path: Path) -> None:
    store.activate(add(store, base, tmp_path, "a", 1000))
    with pytest.raises(BundleError):
        store.remove("a")
    assert store.has("a")


def test_installed_lists_newest_first_with_flags(
    store: BundleStore, base: Path, tmp_path: Path
) -> None:
    add(store, base, tmp_path, "a", 1000)
    add(store, base, tmp_path, "b", 2000)
    store.activate("a")
    listed = store.installed()
    assert [(b.bundle_id, b.current) for b in listed] == [("b", False), ("a", True)]
    assert listed[1].card_count == 3 and listed[1].size_bytes > 0


def test_recover_removes_crash_leftovers_but_not_live_staging(store: BundleStore) -> None:
    # given an unlocked old staging dir, a temp link and trash (a crash), and a live staging dir
    dead = store.staging_dir / "dead"
    dead.mkdir()
    (store.staging_dir / "dead.lock").touch()
    os.symlink("bundles/x", store.state_dir / ".current.abc.tmp")
    (store.trash_dir / "x.123").mkdir()
    with store.staging() as live:
        # when recovering
        store.recover()
        # then leftovers are gone, the live staging dir stays
        assert live.exists()
    assert not dead.exists() and not (store.staging_dir / "dead.lock").exists()
    assert not (store.state_dir / ".current.abc.tmp").is_symlink()
    assert list(store.trash_dir.iterdir()) == []


def test_fresh_staging_without_a_lock_file_is_left_alone(store: BundleStore) -> None:
    young = store.staging_dir / "young"
    young.mkdir()
    store.recover()
    assert young.exists()
    old = time.time() - 3600
    os.utime(young, (old, old))
    store.recover()
    assert not young.exists()
