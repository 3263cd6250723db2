"""synthetic:[DIR]?deck — a person scanning a pile: cards laid on a table one at a time (or a
handful spread out), left a moment, taken away, the next one laid down.

The pile is `cards=` draws, with replacement, from the catalogue folder's images (so a pile
holds some cards more than once, as real piles do), in a seeded order. Each card (or handful)
slides in from the side, rests, slides out, and the table is bare for a moment before the next.
`pace=` is cards per minute of film time (handful mode: the handful's share of it); time is
counted in frames at `fps=`, so `?fast` renders the same film as fast as it is read. After the
last card the table stays bare. One session, one lamp: the table (a rendered scene without
cards) and every card (rendered by training.synth.scene: pose, tilt, sleeves, shadows) are lit
by one light field drawn for the session; a card may catch the lamp's glare; a sliding card is
motion-blurred; every frame gets fresh sensor noise (training.synth.effects).

`placements` is the truth: which card was laid down, from which frame to which; `counts()` how
many times each card was laid down; `truth` the cards in view in the last frame with corners.

Options: deck, pace= (20), handful= (1: one at a time; 2+ spreads that many), cards= (100),
seed=, fps=, fast, size= (card size as sqrt of its share of the frame area; default 0.33, or
0.2 spread), tilt= (most tilt of the card plane, degrees; 12).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import SourceSettings
from edge.errors import SourceError
from edge.sources.base import Pacer, option_float, parse_options, reject_unknown
from edge.sources.synthetic import SCENE_MODULE, card_image_folder, load_card_images
from edge.types import Frame, ImageRGB

logger = logging.getLogger(__name__)

EFFECTS_MODULE = "training.synth.effects"
OPTIONS = {"deck", "pace", "handful", "cards", "seed", "fps", "fast", "size", "tilt"}
SLIDE_S = 0.3  # a hand lays a card in about this long (shorter at a fast pace)


@dataclass(frozen=True, slots=True)
class Placement:
    """One card laid on the table: in view (sliding included) from first_frame to last_frame."""

    card_id: str
    first_frame: int
    last_frame: int
    group: int  # which handful (equals the index of the card with handful=1)


@dataclass(frozen=True, slots=True)
class _Group:
    """One handful rendered: the card layer, its mask and corners, and where it slides from."""

    layer: ImageRGB
    mask: npt.NDArray[np.uint8]
    corners: list[tuple[str, npt.NDArray[np.float32]]]
    direction: npt.NDArray[np.float32]  # unit vector the cards arrive along
    reach: float  # px the slide covers


def _positive(options: dict[str, str], key: str, default: float) -> float:
    value = option_float(options, key, default)
    if value is None or not value > 0:
        raise SourceError(f"source option {key}= must be a positive number")
    return value


class DeckSource:
    """A seeded film of cards laid down and taken away; `placements` is its truth."""

    def __init__(
        self, uri: str, rest: str, settings: SourceSettings, *, bundle_dir: Path | None = None
    ) -> None:
        self.uri = uri
        target, options = parse_options(rest)
        reject_unknown(options, OPTIONS, "synthetic:?deck")
        self.folder = card_image_folder(target, bundle_dir)
        self.size = (settings.width, settings.height)
        self.fps = _positive(options, "fps", settings.fps)
        self.pace = _positive(options, "pace", 20.0)
        self.handful = int(_positive(options, "handful", 1.0))
        self.n_cards = int(_positive(options, "cards", 100.0))
        self.seed = int(option_float(options, "seed", 0.0) or 0)
        spread = self.handful > 1
        self.card_size = _positive(options, "size", 0.2 if spread else 0.33)
        self.tilt = float(option_float(options, "tilt", 12.0) or 0.0)
        self.live = "fast" not in options
        self._pacer = Pacer(None if "fast" in options else self.fps)
        period = self.handful * 60.0 / self.pace  # seconds per handful
        frames = max(4, round(period * self.fps))
        slide = max(1, min(round(SLIDE_S * self.fps), frames // 6))
        gap = max(1, round(0.2 * frames))
        self._phases = (gap, slide, frames - gap - 2 * slide, slide)  # bare, in, rest, out
        self._scene_mod: Any = None
        self._cards: dict[str, ImageRGB] = {}
        self._pile: list[str] = []
        self._table: ImageRGB | None = None
        self._group: _Group | None = None
        self._group_index = -1
        self._frame_id = 0
        self.placements: list[Placement] = []
        self.truth: list[tuple[str, npt.NDArray[np.float32]]] = []

    @property
    def slide_frames(self) -> int:
        """Frames a card takes to slide in (and out): it lies still from first_frame + this."""
        return self._phases[1]

    @property
    def frames_per_card(self) -> float:
        return sum(self._phases) / self.handful

    @property
    def total_frames(self) -> int:
        """Frames until the last card has been taken away."""
        groups = math.ceil(self.n_cards / self.handful)
        return groups * sum(self._phases)

    @property
    def done(self) -> bool:
        return self._frame_id >= self.total_frames

    def counts(self) -> Counter[str]:
        """How many times each card was laid down so far."""
        return Counter(p.card_id for p in self.placements)

    def open(self) -> None:
        try:
            self._scene_mod = importlib.import_module(SCENE_MODULE)
        except ImportError as e:
            raise SourceError(f"the deck source needs {SCENE_MODULE}: {e}") from e
        self._cards = load_card_images(self.folder)
        keys = sorted(self._cards)
        rng = np.random.default_rng(self.seed)
        self._pile = [keys[int(i)] for i in rng.integers(0, len(keys), self.n_cards)]
        self._rng = np.random.default_rng(self.seed + 1)
        self._fx = self._effects()
        cfg = self._config(False)
        light = getattr(cfg, "light", None)
        self._light = self._fx.light_field(self._rng, light) if self._fx and light else None
        noise = getattr(cfg, "noise_sigma", (0.0, 0.0))
        self._noise = float(self._rng.uniform(*noise))
        self._table = self._lit(self._render([])[0])
        self._frame_id, self._group_index, self._group = 0, -1, None
        self.placements = []
        logger.info(
            "deck source: %d cards from %s at %.0f cards/min, %.1f frames per card",
            self.n_cards, self.folder, self.pace, self.frames_per_card,
        )  # fmt: skip

    @staticmethod
    def _effects() -> Any:
        """training.synth.effects when it offers what the session needs (else: no effects)."""
        try:
            fx = importlib.import_module(EFFECTS_MODULE)
        except ImportError:
            return None
        need = ("light_field", "apply_light", "glare_field", "apply_glare", "motion_blur")
        return fx if all(hasattr(fx, n) for n in (*need, "sensor_noise")) else None

    def _lit(self, image: ImageRGB) -> ImageRGB:
        if self._fx is None or self._light is None:
            return image
        return np.asarray(self._fx.apply_light(image, self._light), np.uint8)

    def _config(self, spread: bool) -> Any:
        mod = self._scene_mod
        cfg = mod.SceneConfig()
        if not dataclasses.is_dataclass(cfg):
            return cfg
        names = {f.name for f in dataclasses.fields(cfg)}
        lo = self.card_size * 0.85
        wanted: dict[str, Any] = {
            "width": self.size[0],
            "height": self.size[1],
            "size_frac": (lo, self.card_size * 1.15),
            "max_tilt_deg": self.tilt,
            "min_visible": 0.98 if spread else 0.35,  # a spread handful does not overlap
            "effects": False,  # the session's light and noise are applied here instead
        }
        return dataclasses.replace(cfg, **{k: v for k, v in wanted.items() if k in names})  # type: ignore[type-var]

    def _render(self, card_ids: list[str]) -> tuple[ImageRGB, list[tuple[str, Any]]]:
        scene = self._scene_mod.render_scene(
            self._cards, self._rng, self._config(len(card_ids) > 1), card_ids=card_ids
        )
        image = np.asarray(scene.image, dtype=np.uint8)
        sx, sy = self.size[0] / image.shape[1], self.size[1] / image.shape[0]
        if (image.shape[1], image.shape[0]) != self.size:
            image = np.asarray(cv2.resize(image, self.size, interpolation=cv2.INTER_AREA), np.uint8)
        scale = np.array([sx, sy], dtype=np.float32)
        corners = [(c.card_id, np.asarray(c.corners, np.float32) * scale) for c in scene.cards]
        return np.ascontiguousarray(image), corners

    def _start_group(self, index: int) -> None:
        ids = self._pile[index * self.handful : (index + 1) * self.handful]
        image, corners = self._render(ids)
        filled = np.zeros(image.shape[:2], np.uint8)
        for _, quad in corners:
            cv2.fillPoly(filled, [np.round(quad).astype(np.int32)], 255)
        mask = np.asarray(cv2.erode(filled, np.ones((3, 3), np.uint8)), np.uint8)
        image = self._lit(image)
        cfg = self._config(len(ids) > 1)
        if self._fx is not None and self._rng.random() < getattr(cfg, "glare_prob", 0.0):
            glare = self._fx.glare_field(self._rng, 1, cfg.glare_strength)
            small = cv2.resize(
                filled.astype(np.float32) / 255, glare.shape[::-1], interpolation=cv2.INTER_AREA
            )
            image = self._fx.apply_glare(image, glare, 0.25 + 0.75 * small)
        angle = float(self._rng.uniform(0, 2 * math.pi))
        span = max((float(np.ptp(q[:, 1])) for _, q in corners), default=100.0)
        self._group = _Group(
            image, mask, corners, np.array([math.cos(angle), math.sin(angle)], np.float32),
            0.6 * span,
        )  # fmt: skip
        period = sum(self._phases)
        first = index * period + self._phases[0]
        for cid, _ in corners:
            self.placements.append(
                Placement(cid, first, first + period - self._phases[0] - 1, index)
            )

    def _offset(self, step: int) -> float | None:
        """Share of the slide still to go at `step` of a handful's period; None: bare table."""
        gap, slide, rest, _ = self._phases
        if step < gap:
            return None
        step -= gap
        if step < slide:
            return 1.0 - (step + 1) / slide
        step -= slide + rest
        return 0.0 if step < 0 else (step + 1) / slide

    def read(self) -> Frame:
        table = self._table
        if self._scene_mod is None or table is None:
            raise SourceError(f"{self.uri} is not open")
        period = sum(self._phases)
        index, step = divmod(self._frame_id, period)
        image, self.truth = table, []
        if self._fx is not None and self._noise > 0:
            image = np.asarray(self._fx.sensor_noise(table, self._noise, self._rng), np.uint8)
        if index * self.handful < self.n_cards:
            if index != self._group_index:
                self._group_index, self._group = index, None
            share = self._offset(step)
            if share is not None:
                if self._group is None:
                    self._start_group(index)
                image = self._compose(table, share)
        self._pacer.wait()
        self._frame_id += 1
        return Frame(np.ascontiguousarray(image), self._frame_id, time.monotonic(), self.uri)

    def _compose(self, table: ImageRGB, share: float) -> ImageRGB:
        group = self._group
        assert group is not None
        shift = group.direction * group.reach * share
        self.truth = [(cid, (q + shift).astype(np.float32)) for cid, q in group.corners]
        if share > 0:
            m = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], dtype=np.float64)
            layer = cv2.warpAffine(group.layer, m, self.size, flags=cv2.INTER_LINEAR)
            mask = cv2.warpAffine(group.mask, m, self.size, flags=cv2.INTER_NEAREST)
            streak = int(min(15, group.reach / max(1, self._phases[1])))  # px moved per frame
            if self._fx is not None and streak >= 3:
                angle = math.degrees(math.atan2(group.direction[1], group.direction[0]))
                layer = self._fx.motion_blur(layer, streak, angle)
        else:
            layer, mask = group.layer, group.mask
        out = table.copy()
        keep = mask > 0
        out[keep] = layer[keep]
        if self._fx is not None and self._noise > 0:
            out = self._fx.sensor_noise(out, self._noise, self._rng)
        return np.asarray(out, np.uint8)

    def close(self) -> None:
        self._scene_mod = None
        self._table = None
        self._group = None
