"""Hot swap in the running service: install (or pick) a bundle, load and warm it beside the current
one, self-test it, then swap it in under the runtime's lock and record it as current in the store.

Any failure leaves the old bundle serving and current, and comes back as a SwapResult saying why.
Swaps are serialised: one at a time per process, and the store's flock guards other processes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.bundles.errors import BundleSelfTestError, NoPreviousBundleError
from edge.bundles.install import InstallPolicy, install_bundle
from edge.bundles.store import BundleStore
from edge.errors import BundleNotFoundError, EdgeError
from edge.imageio import read_image_file
from edge.live.runtime import RecognizerLike
from edge.types import OrientedBox

logger = logging.getLogger(__name__)

Loader = Callable[[Path], RecognizerLike]  # bundle dir -> loaded, warmed recognizer


class SwappableRuntime(Protocol):
    """What hot swap needs of edge.live.runtime.Runtime."""

    @property
    def current_bundle_id(self) -> str | None: ...
    def swap(self, new: RecognizerLike) -> None: ...


@dataclass(frozen=True, slots=True)
class SelfTestCase:
    """One reference scan and what the new bundle made of it."""

    image: str
    expected: str
    got: str
    score: float
    known: bool

    @property
    def ok(self) -> bool:
        return self.got == self.expected and self.known


@dataclass(frozen=True, slots=True)
class SwapResult:
    """Outcome of a swap. ok False: `error` says why and the old bundle is still serving."""

    ok: bool
    bundle_id: str | None
    previous_bundle_id: str | None
    error: EdgeError | None = None
    installed: bool = False  # a new bundle was added to the store
    swapped: bool = False  # the bundle is now being served
    selftest: tuple[SelfTestCase, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "bundle_id": self.bundle_id,
            "previous_bundle_id": self.previous_bundle_id,
            "installed": self.installed,
            "swapped": self.swapped,
            "error": self.error.to_dict() if self.error else None,
            "selftest": [
                {
                    "image": c.image,
                    "expected": c.expected,
                    "got": c.got,
                    "score": c.score,
                    "known": c.known,
                    "ok": c.ok,
                }
                for c in self.selftest
            ],
            "timings_ms": self.timings_ms,
        }


def full_frame_box(height: int, width: int) -> OrientedBox:
    """A reference scan is one card filling the frame: its corners, clockwise from top-left."""
    corners = np.array(
        [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32
    )
    return OrientedBox(corners=corners, conf=1.0)


def self_test(recognizer: RecognizerLike, *, max_pixels: int = 40_000_000) -> list[SelfTestCase]:
    """Recognise each of the bundle's reference scans as one full-frame card (no detector
    involved) through the whole decision (shortlist, verification where the bundle has reference
    features): every scan must come back as its own card, known."""
    cases = []
    for name, expected in recognizer.manifest.selftest.items():
        image = read_image_file(recognizer.bundle_dir / name, max_pixels=max_pixels)
        [card], _ = recognizer.verdicts(image, [full_frame_box(*image.shape[:2])])
        if card is None:
            cases.append(SelfTestCase(name, expected, "", 0.0, False))
            continue
        m = card.match
        cases.append(SelfTestCase(name, expected, m.card_id, float(m.score), bool(m.known)))
    return cases


class HotSwapper:
    """Install / activate / roll back bundles in a running service without failing a request."""

    def __init__(
        self,
        runtime: SwappableRuntime,
        store: BundleStore,
        loader: Loader,
        policy: InstallPolicy,
        *,
        run_selftest: bool = True,
        max_pixels: int = 40_000_000,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.loader = loader
        self.policy = policy
        self.run_selftest = run_selftest
        self.max_pixels = max_pixels
        self._lock = threading.Lock()

    def install_and_activate(self, source: Path) -> SwapResult:
        """Install `source` into the store, then swap to it (see `activate`)."""
        with self._lock:
            previous = self.runtime.current_bundle_id
            t0 = time.perf_counter()
            try:
                installed = install_bundle(self.store, source, self.policy)
            except EdgeError as e:
                logger.warning("bundle install refused: %s", e)
                return SwapResult(False, None, previous, error=e)
            timings = {"install": (time.perf_counter() - t0) * 1e3}
            result = self._swap_to(installed.bundle_id, timings)
            return _with_installed(result, installed.added)

    def install_only(self, source: Path) -> SwapResult:
        """Install `source` into the store without serving it (activate it later by id)."""
        with self._lock:
            previous = self.runtime.current_bundle_id
            try:
                installed = install_bundle(self.store, source, self.policy)
            except EdgeError as e:
                logger.warning("bundle install refused: %s", e)
                return SwapResult(False, None, previous, error=e)
            return SwapResult(True, installed.bundle_id, previous, installed=installed.added)

    def activate(self, bundle_id: str) -> SwapResult:
        """Load an installed bundle beside the current one, self-test it, swap, record as current."""
        with self._lock:
            return self._swap_to(bundle_id, {})

    def rollback(self) -> SwapResult:
        """Swap back to the store's previous bundle."""
        with self._lock:
            target = self.store.previous_id()
            if target is None:
                err = NoPreviousBundleError("no previous bundle to roll back to")
                return SwapResult(False, None, self.runtime.current_bundle_id, error=err)
            return self._swap_to(target, {})

    def _swap_to(self, bundle_id: str, timings: dict[str, float]) -> SwapResult:
        previous = self.runtime.current_bundle_id
        if bundle_id == previous and self.store.has(bundle_id):
            # Already served (bundle ids are immutable): nothing to load, test or swap; a push of
            # the running bundle succeeds instead of re-running its self-test under load.
            self.store.activate(bundle_id)
            logger.info("bundle %s is already being served", bundle_id)
            return SwapResult(True, bundle_id, previous, swapped=False, timings_ms=timings)
        try:
            path = self.store.path_for(bundle_id)
            if not self.store.has(bundle_id):
                raise BundleNotFoundError(f"bundle {bundle_id!r} is not installed")
            t0 = time.perf_counter()
            new = self.loader(path)
            timings["load"] = (time.perf_counter() - t0) * 1e3
        except EdgeError as e:
            logger.warning("bundle %s not activated: %s", bundle_id, e)
            return SwapResult(False, bundle_id, previous, error=e, timings_ms=timings)
        cases: list[SelfTestCase] = []
        try:
            if self.run_selftest:
                t0 = time.perf_counter()
                cases = self_test(new, max_pixels=self.max_pixels)
                timings["selftest"] = (time.perf_counter() - t0) * 1e3
                _raise_on_failures(bundle_id, cases)
            self.runtime.swap(new)
        except EdgeError as e:
            new.close()
            logger.warning("bundle %s not activated: %s", bundle_id, e)
            return SwapResult(
                False, bundle_id, previous, e, selftest=tuple(cases), timings_ms=timings
            )
        except BaseException:
            new.close()
            raise
        self.store.activate(bundle_id)
        self.store.gc()
        logger.info("hot swap %s -> %s done (%s)", previous, bundle_id, timings)
        return SwapResult(
            True, bundle_id, previous, swapped=True, selftest=tuple(cases), timings_ms=timings
        )


def _raise_on_failures(bundle_id: str, cases: list[SelfTestCase]) -> None:
    failed = [c for c in cases if not c.ok]
    if failed:
        detail = ", ".join(
            f"{c.image}: expected {c.expected}, got {c.got} (score {c.score:.3f}, "
            f"{'known' if c.known else 'unknown'})"
            for c in failed[:5]
        )
        raise BundleSelfTestError(
            f"bundle {bundle_id} failed its self-test on {len(failed)}/{len(cases)} scans: {detail}",
            "the bundle's embedder and index disagree; rebuild it, the current bundle stays active",
        )


def _with_installed(result: SwapResult, added: bool) -> SwapResult:
    return dataclasses.replace(result, installed=added)
