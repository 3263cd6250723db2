"""Bundle installation: valid sources install; each malformed bundle is refused with its own error
and the current bundle stays exactly as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.malformed_bundles import MALFORMED, Case, make_bundle, rebrand, tar_of  # isort: skip

from edge.bundles.archive import Limits, pack
from edge.bundles.errors import BundleConflictError
from edge.bundles.install import InstallPolicy, install_bundle, verify_source
from edge.bundles.store import BundleStore

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("base") / "base", "base")


@pytest.fixture
def store(tmp_path: Path, base: Path) -> BundleStore:
    s = BundleStore(tmp_path / "state")
    install_bundle(s, base, InstallPolicy())
    s.activate("base")
    return s


def snapshot(store: BundleStore) -> dict[str, object]:
    """Everything a refused install must leave alone."""
    current = store.current_path()
    assert current is not None
    files = {
        p.relative_to(current).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(current.rglob("*"))
        if p.is_file()
    }
    return {
        "current": store.current_id(),
        "bundles": sorted(p.name for p in store.bundles_dir.iterdir()),
        "files": files,
    }


@pytest.mark.parametrize("fmt", ["dir", "none", "gz", "zst"])
def test_valid_bundle_installs_from_every_source_format(
    tmp_path: Path, base: Path, fmt: str
) -> None:
    # given a valid bundle as a directory or an archive
    src = base if fmt == "dir" else pack(base, tmp_path / f"b.{fmt}", fmt)  # type: ignore[arg-type]
    store = BundleStore(tmp_path / "state")
    # when it is installed and activated
    result = install_bundle(store, src, InstallPolicy())
    store.activate(result.bundle_id)
    # then the store holds an identical copy as current
    assert result.added and store.current_id() == "base"
    for name in ("manifest.json", "embedder.onnx", "selftest/c001.jpg"):
        assert (store.path_for("base") / name).read_bytes() == (base / name).read_bytes()
    assert list(store.staging_dir.iterdir()) == []


def test_reinstalling_the_identical_bundle_is_a_no_op(store: BundleStore, base: Path) -> None:
    # given the base bundle already installed; when it is installed again
    result = install_bundle(store, base, InstallPolicy())
    # then nothing is added
    assert not result.added and result.path == store.path_for("base")


def test_a_different_bundle_under_an_installed_id_is_refused(
    store: BundleStore, base: Path, tmp_path: Path
) -> None:
    # given a bundle reusing the id "base" with different content
    other = make_bundle(tmp_path / "other", "base", dim=8)
    before = snapshot(store)
    # when it is installed, then it is refused and nothing changes
    with pytest.raises(BundleConflictError):
        install_bundle(store, other, InstallPolicy())
    assert snapshot(store) == before


def test_verify_source_checks_without_touching_a_store(base: Path, tmp_path: Path) -> None:
    # given a valid archive; when verified; then its manifest comes back
    manifest = verify_source(pack(base, tmp_path / "b.tar"), InstallPolicy())
    assert manifest.bundle_id == "base"


def test_corpus_has_at_least_fifteen_kinds() -> None:
    assert len({c.name for c in MALFORMED}) >= 15


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.name)
def test_malformed_bundle_is_refused_and_current_untouched(
    case: Case, store: BundleStore, base: Path, tmp_path: Path
) -> None:
    # given a device with a current bundle and a malformed archive
    work = tmp_path / "work"
    work.mkdir()
    archive = case.make(rebrand(base, work / "incoming", "incoming"), work)
    policy = InstallPolicy(limits=Limits(**(case.limits or {})), device_arch="hailo8l")
    before = snapshot(store)
    # when it is installed
    with pytest.raises(case.error) as caught:
        install_bundle(store, archive, policy)
    # then the specific error is raised and the store is unchanged, staging cleaned
    assert type(caught.value) is case.error, caught.value
    assert snapshot(store) == before
    assert list(store.staging_dir.iterdir()) == []
    shutil.rmtree(work)


def test_hef_for_a_compatible_arch_is_accepted(tmp_path: Path) -> None:
    # given a bundle with a hailo8l HEF and a Hailo-8 device (which runs hailo8l HEFs)
    bundle = make_bundle(tmp_path / "h", "h", hef_arch="hailo8l")
    store = BundleStore(tmp_path / "state")
    # when installed; then accepted
    assert install_bundle(
        store, tar_of(bundle, tmp_path / "h.tar"), InstallPolicy(device_arch="hailo8")
    ).added
