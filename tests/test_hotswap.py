"""Hot swap: a new bundle serves only after it loads and passes its self-test; any failure leaves
the old bundle serving and current, and says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.malformed_bundles import make_bundle, rebrand, tar_of  # isort: skip
from tests.bundle_factory import *  # noqa: F403  (the session fixture factory_bundle)  # isort: skip

from edge.bundles.errors import BundleHashMismatchError, BundleSelfTestError, NoPreviousBundleError
from edge.bundles.hotswap import HotSwapper, full_frame_box, self_test
from edge.bundles.install import InstallPolicy, install_bundle
from edge.bundles.manifest import Manifest, load_manifest
from edge.bundles.store import BundleStore
from edge.errors import BackendError, BundleNotFoundError
from edge.types import Candidate, CardCrop, CardMatch, ImageRGB, Match, OrientedBox

FAST = InstallPolicy(check_models=False)


class FakeRecognizer:
    """Stands in for edge.recognize.recognizer.Recognizer: identifies each crop as the card its bundle's
    self-test expects (or as 'wrong' when told to), and records being closed."""

    def __init__(self, bundle_dir: Path, *, wrong: bool = False) -> None:
        self.bundle_dir = bundle_dir
        self.manifest: Manifest = load_manifest(bundle_dir / "manifest.json")
        self.bundle_id = self.manifest.bundle_id
        self.wrong = wrong
        self.closed = False
        self.crop_shapes: list[tuple[int, ...]] = []
        self._served = 0

    def crops(self, image: ImageRGB, boxes: list[OrientedBox]) -> list[CardCrop]:
        self.crop_shapes.append(image.shape)
        return [CardCrop(image=image, box=b) for b in boxes]

    def embed(self, crops: list[CardCrop]) -> npt.NDArray[np.float32]:
        return np.zeros((len(crops), 4), dtype=np.float32)

    def match(self, vectors: npt.NDArray[np.float32]) -> list[tuple[Match, tuple[Candidate, ...]]]:
        ids = list(self.manifest.selftest.values())
        return [
            (Match("wrong" if self.wrong else ids[i], 0.99, 0.5, True), ())
            for i in range(len(vectors))
        ]

    def verdicts(
        self, image: ImageRGB, boxes: list[OrientedBox]
    ) -> tuple[list[CardMatch | None], tuple[float, ...]]:
        """The self-test's way in: one scan per call, answered in the manifest's order."""
        self.crop_shapes.append(image.shape)
        ids = list(self.manifest.selftest.values())
        card_id = "wrong" if self.wrong else ids[self._served % len(ids)]
        self._served += 1
        match = Match(card_id, 0.99, 0.5, True, "verified", 60)
        return [CardMatch(box=b, match=match) for b in boxes], (0.0,) * 5

    def close(self) -> None:
        self.closed = True


class FakeRuntime:
    def __init__(self, current: FakeRecognizer | None) -> None:
        self.current = current
        self.swaps = 0

    @property
    def current_bundle_id(self) -> str | None:
        return self.current.bundle_id if self.current else None

    def swap(self, new: Any) -> None:
        self.current = new
        self.swaps += 1


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("base") / "base", "base")


@pytest.fixture
def setup(tmp_path: Path, base: Path) -> tuple[HotSwapper, FakeRuntime, list[FakeRecognizer]]:
    """A store and runtime serving bundle 'old'; the loader makes fake recognizers."""
    store = BundleStore(tmp_path / "state")
    old = install_bundle(store, rebrand(base, tmp_path / "old", "old"), FAST)
    store.activate("old")
    runtime = FakeRuntime(FakeRecognizer(old.path))
    loaded: list[FakeRecognizer] = []

    def loader(path: Path) -> Any:
        rec = FakeRecognizer(path, wrong=path.name.startswith("bad"))
        loaded.append(rec)
        return rec

    return HotSwapper(runtime, store, loader, FAST), runtime, loaded


def test_full_frame_box_is_the_image_outline_clockwise() -> None:
    box = full_frame_box(88, 63)
    assert box.corners.tolist() == [[0, 0], [62, 0], [62, 87], [0, 87]]


def test_good_bundle_is_swapped_in_and_made_current(
    setup: tuple[HotSwapper, FakeRuntime, list[FakeRecognizer]], base: Path, tmp_path: Path
) -> None:
    swapper, runtime, _ = setup
    # when a bundle passing its self-test is installed
    result = swapper.install_and_activate(
        tar_of(rebrand(base, tmp_path / "n", "new"), tmp_path / "n.tar")
    )
    # then it serves, is current in the store, and old is previous
    assert result.ok and result.swapped and result.installed, result.error
    assert runtime.current_bundle_id == "new"
    assert (swapper.store.current_id(), swapper.store.previous_id()) == ("new", "old")
    assert len(result.selftest) == 3 and all(c.ok for c in result.selftest)


def test_self_test_runs_each_scan_as_one_full_frame_card(
    setup: tuple[HotSwapper, FakeRuntime, list[FakeRecognizer]], base: Path, tmp_path: Path
) -> None:
    swapper, _, loaded = setup
    swapper.install_and_activate(rebrand(base, tmp_path / "n", "new"))
    assert loaded[-1].crop_shapes == [(88, 63, 3)] * 3


def test_failing_self_test_keeps_the_old_bundle(
    setup: tuple[HotSwapper, FakeRuntime, list[FakeRecognizer]], base: Path, tmp_path: Path
) -> None:
    swapper, runtime, loaded = setup
    # when a bundle whose scans do not identify as themselves is installed
    result = swapper.install_and_activate(rebrand(base, tmp_path / "b", "bad1"))
    # then it is refused with the reason; old still serves and is current; the new one is closed
    assert not result.ok and isinstance(result.error, BundleSelfTestError)
    assert "expected c001, got wrong" in result.error.message
    assert runtime.current_bundle_id == "old" and runtime.swaps == 0
    assert swapper.store.current_id() == "old"
    assert loaded[-1].closed


def test_refused_install_keeps_the_old_bundle(
    setup: tuple[HotSwapper, FakeRuntime, list[FakeRecognizer]], base: Path, tmp_path: Path
) -> None:
    swapper, runtime, loaded = setup
    b = rebrand(base, tmp_path / "n", "new")
    (b / "catalogue.sqlite").write_bytes(b"tampered")
    result = swapper.install_and_activate(b)
    assert isinstance(result.error, BundleHashMismatchError)
    assert runtime.current_bundle_id == "old" and loaded == []


def test_load_failure_keeps_the_old_bundle(tmp_path: Path, base: Path) -> None:
    store = BundleStore(tmp_path / "state")
    runtime = FakeRuntime(None)

    def loader(path: Path) -> Any:
        raise BackendError("onnxruntime could not load the embedder")

    result = HotSwapper(runtime, store, loader, FAST).install_and_activate(base)
    assert isinstance(result.error, BackendError)
    assert runtime.current_bundle_id is None and store.current_id() is None


def test_rollback_swaps_back_to_the_previous_bundle(
    setup: tuple[HotSwapper, FakeRuntime, list[FakeRecognizer]], base: Path, tmp_path: Path
) -> None:
    swapper, runtime, _ = setup
    swapper.install_and_activate(rebrand(base, tmp_path / "n", "new"))
    result = swapper.rollback()
    assert result.ok and runtime.current_bundle_id == "old"
    assert swapper.store.current_id() == "old"


def test_rollback_without_previous_says_so(
    setup: tuple[HotSwapper, FakeRuntime, list[FakeRecognizer]],
) -> None:
    swapper, runtime, _ = setup
    assert isinstance(swapper.rollback().error, NoPreviousBundleError)
    assert runtime.current_bundle_id == "old"


def test_activating_an_unknown_bundle_says_so(
    setup: tuple[HotSwapper, FakeRuntime, list[FakeRecognizer]],
) -> None:
    swapper, runtime, _ = setup
    assert isinstance(swapper.activate("ghost").error, BundleNotFoundError)
    assert runtime.current_bundle_id == "old"


def test_install_only_does_not_swap(
    setup: tuple[HotSwapper, FakeRuntime, list[FakeRecognizer]], base: Path, tmp_path: Path
) -> None:
    swapper, runtime, _ = setup
    result = swapper.install_only(rebrand(base, tmp_path / "n", "new"))
    assert result.ok and not result.swapped and swapper.store.has("new")
    assert runtime.current_bundle_id == "old"


@pytest.mark.slow
def test_real_bundle_passes_its_self_test(factory_bundle: Path) -> None:
    # given the real (random-weight) test bundle loaded by the real Recognizer
    from edge.config import RuntimeSettings
    from edge.recognize.recognizer import Recognizer

    rec = Recognizer.from_bundle(factory_bundle, RuntimeSettings(onnx_threads=1, backend="onnx"))
    try:
        # when self-tested, then every reference scan identifies as itself
        cases = self_test(rec)
    finally:
        rec.close()
    assert cases and all(c.ok for c in cases), cases
