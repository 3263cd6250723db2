"""synthetic:[DIR] — a camera that films synthetic card scenes, for demos, tests and benchmarks.

Card images come from a catalogue folder (`DIR/images/*.jpg`), a bundle's `DIR/selftest/*.jpg`,
or, with a bare `synthetic:`, the active bundle's selftest images. A scene is rendered by
training.synth.scene.render_scene (numpy + OpenCV only, so this runs on a Pi) and then drifts
slowly (small rotation and pan) so tracking across frames is meaningful; every `seconds` a new
scene replaces it, so cards appear and leave. Options: `?fast` (no pacing), `seconds=`, `seed=`,
`fps=`. Time is counted in frames, so a fast run is the same film as a paced one.
With `?deck`, cards are laid down and taken away one at a time instead (edge.sources.deck; the
registry, edge.sources, picks which).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import SourceSettings
from edge.errors import SourceError
from edge.sources.base import Pacer, option_float, parse_options, reject_unknown
from edge.types import Frame, ImageRGB

logger = logging.getLogger(__name__)

SCENE_MODULE = "training.synth.scene"


def card_image_folder(target: str, bundle_dir: Path | None) -> Path:
    """Where the card images are: a catalogue's images/, a bundle's selftest/, or the folder."""
    if not target:
        if bundle_dir is None:
            raise SourceError("bare synthetic: needs a bundle", "give synthetic:DIR instead")
        root = bundle_dir
    else:
        root = Path(target)
    for candidate in (root / "images", root / "selftest", root):
        if candidate.is_dir() and any(candidate.glob("*.jpg")):
            return candidate
    raise SourceError(
        f"no card images (*.jpg) under {root}", "point synthetic: at a catalogue folder"
    )


def load_card_images(folder: Path) -> dict[str, ImageRGB]:
    """card_id (file stem) -> RGB scan."""
    images: dict[str, ImageRGB] = {}
    for path in sorted(folder.glob("*.jpg")):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            logger.warning("synthetic source: skipping undecodable %s", path.name)
            continue
        images[path.stem] = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not images:
        raise SourceError(f"no decodable card images in {folder}")
    return images


def drift_matrix(t: float, size: tuple[int, int], phase: float) -> npt.NDArray[np.float64]:
    """2x3 affine of a slow sway about the frame centre: up to 4 degrees and 3% of the width."""
    w, h = size
    angle = 4.0 * math.sin(2 * math.pi * t / 9.0 + phase)
    m = np.asarray(cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0), dtype=np.float64)
    m[0, 2] += 0.03 * w * math.sin(2 * math.pi * t / 7.0 + 2 * phase)
    m[1, 2] += 0.02 * h * math.cos(2 * math.pi * t / 11.0 + phase)
    return m


class SyntheticSource:
    """Renders a new scene every `seconds` of film time and sways it between renders."""

    def __init__(
        self, uri: str, rest: str, settings: SourceSettings, *, bundle_dir: Path | None = None
    ) -> None:
        self.uri = uri
        target, options = parse_options(rest)
        reject_unknown(options, {"fast", "seconds", "seed", "fps"}, "synthetic")
        self.folder = card_image_folder(target, bundle_dir)
        self.size = (settings.width, settings.height)
        self.fps = option_float(options, "fps", settings.fps) or settings.fps
        self.scene_seconds = option_float(options, "seconds", 10.0) or 10.0
        self.seed = int(option_float(options, "seed", 0.0) or 0)
        self._pacer = Pacer(None if "fast" in options else self.fps)
        self.live = "fast" not in options
        self._cards: dict[str, ImageRGB] = {}
        self._scene_mod: Any = None
        self._rng = np.random.default_rng(self.seed)
        self._base: ImageRGB | None = None
        self._base_corners: list[tuple[str, npt.NDArray[np.float32]]] = []
        self._scene_start = 0
        self._phase = 0.0
        self._frame_id = 0
        self.truth: list[tuple[str, npt.NDArray[np.float32]]] = []  # card ids + corners, last frame

    def open(self) -> None:
        try:
            self._scene_mod = importlib.import_module(SCENE_MODULE)
        except ImportError as e:
            raise SourceError(f"synthetic scenes need {SCENE_MODULE}: {e}") from e
        self._cards = load_card_images(self.folder)
        self._base = None
        logger.info("synthetic source: %d card images from %s", len(self._cards), self.folder)

    def _new_scene(self, mod: Any) -> None:
        cfg = mod.SceneConfig()
        fields = (
            {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
        )
        if {"width", "height"} <= fields:
            cfg = dataclasses.replace(cfg, width=self.size[0], height=self.size[1])
        scene = mod.render_scene(self._cards, self._rng, cfg)
        image = np.asarray(scene.image, dtype=np.uint8)
        sx, sy = self.size[0] / image.shape[1], self.size[1] / image.shape[0]
        if (image.shape[1], image.shape[0]) != self.size:
            image = np.asarray(cv2.resize(image, self.size, interpolation=cv2.INTER_AREA), np.uint8)
        scale = np.array([sx, sy], dtype=np.float32)
        self._base = np.ascontiguousarray(image)
        self._base_corners = [
            (c.card_id, np.asarray(c.corners, dtype=np.float32) * scale) for c in scene.cards
        ]
        self._scene_start = self._frame_id
        self._phase = float(self._rng.uniform(0, 2 * math.pi))

    def read(self) -> Frame:
        # close() may run on another thread meanwhile: work on local references only.
        mod = self._scene_mod
        if mod is None:
            raise SourceError(f"{self.uri} is not open")
        frames_per_scene = max(1, round(self.scene_seconds * self.fps))
        if self._base is None or self._frame_id - self._scene_start >= frames_per_scene:
            self._new_scene(mod)
        base = self._base
        if base is None:
            raise SourceError(f"{self.uri} was closed")
        t = (self._frame_id - self._scene_start) / self.fps
        m = drift_matrix(t, self.size, self._phase)
        image = cv2.warpAffine(base, m, self.size, borderMode=cv2.BORDER_REFLECT)
        self.truth = [
            (cid, (corners @ m[:, :2].T + m[:, 2]).astype(np.float32))
            for cid, corners in self._base_corners
        ]
        self._pacer.wait()
        self._frame_id += 1
        return Frame(np.ascontiguousarray(image), self._frame_id, time.monotonic(), self.uri)

    def close(self) -> None:
        self._scene_mod = None
        self._base = None
