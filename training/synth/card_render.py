"""Render a catalogue card as a flat portrait scan (63:88), laid out like a real trading card.

Layout is designed on a 630 x 880 unit grid and scaled to the requested height: border, frame
coloured by type, name bar with name and HP, art window (shared by reprints), flavour strip,
attack boxes with cost, name, damage and text, weakness row, illustrator, set symbol, collector
number and rarity mark. Holo cards get a rainbow sheen in the art window, reverse-holo cards on
the frame. Real scans are read from disk instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edge.types import ImageRGB
from training.synth.art import Color, render_art, stable_seed
from training.synth.catalogue import CardRecord

logger = logging.getLogger(__name__)

CARD_W_UNITS, CARD_H_UNITS = 630, 880
ART_BOX = (60, 98, 570, 470)  # x0, y0, x1, y1 in layout units
TYPE_COLORS: dict[str, Color] = {
    "fire": (226, 82, 52),
    "water": (64, 140, 220),
    "grass": (96, 176, 72),
    "lightning": (240, 206, 60),
    "psychic": (160, 92, 190),
    "fighting": (190, 112, 60),
    "darkness": (60, 70, 80),
    "metal": (160, 166, 176),
    "colorless": (222, 214, 196),
    "dragon": (196, 164, 64),
}
BORDER_COLORS: dict[str, Color] = {
    "yellow": (242, 204, 58),
    "silver": (196, 200, 206),
    "blue": (70, 96, 170),
    "black": (30, 30, 34),
}
_WORDS = [
    "flip",
    "a",
    "coin",
    "if",
    "heads",
    "the",
    "defending",
    "creature",
    "is",
    "now",
    "paralyzed",
    "discard",
    "an",
    "energy",
    "from",
    "this",
    "attack",
    "does",
    "damage",
    "to",
    "each",
    "benched",
    "card",
    "draw",
    "search",
    "your",
    "deck",
    "for",
    "heal",
    "during",
    "your",
    "next",
    "turn",
    "prevent",
    "all",
    "effects",
    "of",
    "attacks",
    "put",
    "counters",
    "on",
    "shuffle",
]
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_BOLD = cv2.FONT_HERSHEY_DUPLEX


def card_size(height: int) -> tuple[int, int]:
    """(height, width) of a card image of the given height (63:88 aspect)."""
    return height, max(1, round(height * CARD_W_UNITS / CARD_H_UNITS))


class _Canvas:
    """A card image plus the unit -> pixel scale, so layout code reads in card units."""

    def __init__(self, height: int) -> None:
        h, w = card_size(height)
        self.img = np.zeros((h, w, 3), np.uint8)
        self.s = h / CARD_H_UNITS

    def p(self, x: float, y: float) -> tuple[int, int]:
        return round(x * self.s), round(y * self.s)

    def rect(self, x0: float, y0: float, x1: float, y1: float, col: Color, thick: int = -1) -> None:
        t = thick if thick < 0 else max(1, round(thick * self.s))
        cv2.rectangle(self.img, self.p(x0, y0), self.p(x1, y1), col, t, cv2.LINE_AA)

    def circle(self, x: float, y: float, r: float, col: Color, thick: int = -1) -> None:
        t = thick if thick < 0 else max(1, round(thick * self.s))
        cv2.circle(self.img, self.p(x, y), max(1, round(r * self.s)), col, t, cv2.LINE_AA)

    def text(
        self,
        s: str,
        x: float,
        y: float,
        size: float,
        col: Color,
        bold: bool = False,
        right: bool = False,
    ) -> None:
        font = FONT_BOLD if bold else FONT
        scale = size * self.s / 22.0
        thick = max(1, round(scale * (2.2 if bold else 1.4)))
        if right:
            (tw, _), _ = cv2.getTextSize(s, font, scale, thick)
            x -= tw / self.s
        cv2.putText(self.img, s, self.p(x, y), font, scale, col, thick, cv2.LINE_AA)


def _shade(col: Color, f: float) -> Color:
    return tuple(int(np.clip(c * f, 0, 255)) for c in col)  # type: ignore[return-value]


def _frame(cv: _Canvas, rec: CardRecord) -> None:
    """Border, type-coloured frame with a vertical gradient, name bar."""
    cv.img[:] = BORDER_COLORS.get(rec.border, BORDER_COLORS["yellow"])
    col = np.float32(TYPE_COLORS.get(rec.card_type, TYPE_COLORS["colorless"]))
    y0, y1 = cv.p(0, 24)[1], cv.p(0, CARD_H_UNITS - 24)[1]
    x0, x1 = cv.p(24, 0)[0], cv.p(CARD_W_UNITS - 24, 0)[0]
    t = np.linspace(1.15, 0.8, max(1, y1 - y0), dtype=np.float32)[:, None, None]
    cv.img[y0:y1, x0:x1] = np.clip(col * t, 0, 255).astype(np.uint8)
    name_col = (20, 20, 20) if col.mean() > 90 else (245, 245, 245)
    cv.text(rec.name, 52, 80, 38, name_col, bold=True)
    cv.text(f"HP{rec.hp}", 520, 80, 34, (200, 30, 30), bold=True, right=True)
    cv.circle(545, 66, 20, _shade(TYPE_COLORS.get(rec.card_type, (200, 200, 200)), 0.8))
    cv.circle(545, 66, 20, (250, 250, 250), 3)


def _art(cv: _Canvas, rec: CardRecord, art_dir: Path | None) -> None:
    x0, y0 = cv.p(ART_BOX[0], ART_BOX[1])
    x1, y1 = cv.p(ART_BOX[2], ART_BOX[3])
    b = max(1, round(8 * cv.s))
    cv.img[y0 - b : y1 + b, x0 - b : x1 + b] = (
        (214, 196, 120) if rec.border != "silver" else (205, 205, 215)
    )
    cv.img[y0:y1, x0:x1] = render_art(rec.art_id, y1 - y0, x1 - x0, art_dir)


def _text_boxes(cv: _Canvas, rec: CardRecord, rng: np.random.Generator) -> None:
    """Flavour strip, one or two attacks with cost/damage/description, weakness row."""
    cv.rect(70, 482, 560, 510, (236, 220, 150))
    cv.text(
        f"NO. {rng.integers(1, 999):03d}  {rec.name} creature  HT {rng.integers(1, 9)}'",
        90,
        503,
        17,
        (60, 50, 30),
    )
    n_att = 1 if rng.random() < 0.35 else 2
    top, slot = 530, 230 / n_att
    for a in range(n_att):
        y = top + a * slot
        cost = int(rng.integers(1, 4))
        for c in range(cost):
            cv.circle(70 + c * 30, y + 18, 13, _shade(TYPE_COLORS[rec.card_type], 0.85))
            cv.circle(70 + c * 30, y + 18, 13, (40, 40, 40), 2)
        name = " ".join(str(w).capitalize() for w in rng.choice(_WORDS, 2))
        cv.text(name, 175, y + 28, 30, (20, 20, 20), bold=True)
        cv.text(
            str(int(rng.integers(1, 16)) * 10), 560, y + 28, 32, (20, 20, 20), bold=True, right=True
        )
        for line in range(int(min(3, (slot - 50) // 26))):
            words = " ".join(str(w) for w in rng.choice(_WORDS, int(rng.integers(5, 8))))
            cv.text(words, 62, y + 60 + line * 24, 17, (35, 35, 35))
    cv.rect(50, 766, 580, 768, (60, 60, 60))
    for i, label in enumerate(("weakness", "resistance", "retreat")):
        cv.text(label, 62 + i * 180, 790, 15, (40, 40, 40))
        cv.circle(
            150 + i * 180, 785, 10, _shade(TYPE_COLORS[str(rng.choice(list(TYPE_COLORS)))], 0.9)
        )


_SYMBOLS = ("star", "circle", "diamond", "triangle", "square", "cross")


def _footer(cv: _Canvas, rec: CardRecord) -> None:
    """Illustrator, set symbol (shape by set), collector number, rarity mark."""
    cv.text(f"Illus. {rec.set_name.split()[0]} Studio", 40, 836, 15, (30, 30, 30))
    sym = _SYMBOLS[stable_seed(rec.set_id) % len(_SYMBOLS)]
    x, y, r = 440, 828, 11
    dark = (25, 25, 25)
    if sym == "circle":
        cv.circle(x, y, r, dark)
    elif sym in ("square", "diamond", "triangle", "star", "cross"):
        n = {"square": 4, "diamond": 4, "triangle": 3, "star": 10, "cross": 12}[sym]
        ang = np.linspace(0, 2 * np.pi, n, endpoint=False) + (
            np.pi / 4 if sym == "square" else -np.pi / 2
        )
        rad = np.full(n, float(r))
        if sym in ("star", "cross"):
            rad[1::2] = r * 0.45
        pts = np.stack([x + rad * np.cos(ang), y + rad * np.sin(ang)], 1) * cv.s
        cv2.fillPoly(cv.img, [np.round(pts).astype(np.int32)], dark, cv2.LINE_AA)
    cv.text(rec.number, 585, 836, 17, (20, 20, 20), right=True)
    mark_x = 470
    if rec.rarity == "common":
        cv.circle(mark_x, 828, 5, dark)
    elif rec.rarity == "uncommon":
        pts = np.array([[mark_x, 822], [mark_x + 6, 828], [mark_x, 834], [mark_x - 6, 828]]) * cv.s
        cv2.fillPoly(cv.img, [np.round(pts).astype(np.int32)], dark, cv2.LINE_AA)
    else:
        cv.text("*", mark_x - 6, 840, 26, dark, bold=True)


def _rainbow(h: int, w: int, phase: float, freq: float) -> np.ndarray:
    """A diagonal hue sweep: the look of a holographic foil under light."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    hue = ((xx + yy * 0.7) / max(h, w) * freq + phase) % 1.0
    hsv = np.stack([hue * 179, np.full_like(hue, 150), np.full_like(hue, 255)], -1).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)


def _finish(cv: _Canvas, rec: CardRecord) -> None:
    h, w = cv.img.shape[:2]
    if rec.finish not in ("holo", "reverse"):
        return
    rng = np.random.default_rng(stable_seed("finish", rec.card_id))
    sheen = _rainbow(h, w, rng.random(), rng.uniform(1.5, 3.0))
    x0, y0 = cv.p(ART_BOX[0], ART_BOX[1])
    x1, y1 = cv.p(ART_BOX[2], ART_BOX[3])
    mask = np.zeros((h, w), np.float32)
    if rec.finish == "holo":
        mask[y0:y1, x0:x1] = 0.28
    else:
        mask[cv.p(0, 24)[1] : cv.p(0, 856)[1], cv.p(24, 0)[0] : cv.p(606, 0)[0]] = 0.22
        mask[y0:y1, x0:x1] = 0.0
        sparkle = rng.random((max(1, h // 4), max(1, w // 4))).astype(np.float32) > 0.85
        mask *= 0.5 + cv2.resize(
            sparkle.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST
        )
    m = mask[..., None]
    cv.img[:] = np.clip(cv.img * (1 - m) + sheen * m, 0, 255).astype(np.uint8)


def _read_scan(path: Path, height: int) -> ImageRGB:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read card scan {path}")
    h, w = card_size(height)
    return cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def render_card(record: CardRecord, height: int = 440, art_dir: Path | None = None) -> ImageRGB:
    """The flat, upright card image (height x round(height*63/88) x 3 RGB uint8)."""
    if record.image_path is not None:
        return _read_scan(record.image_path, height)
    cv = _Canvas(height)
    _frame(cv, record)
    _art(cv, record, art_dir)
    rng = np.random.default_rng(stable_seed("text", record.name, record.variant))
    _text_boxes(cv, record, rng)
    _footer(cv, record)
    _finish(cv, record)
    return cv.img


def art_window(height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel box of the art inside a card rendered at `height`."""
    s = height / CARD_H_UNITS
    return tuple(round(v * s) for v in ART_BOX)  # type: ignore[return-value]
