"""Hard negatives: things on a table that are not cards, drawn under the cards, never labelled.

A detector trained only on cards over textures learns "a bright rectangle" and boxes every sticky
note, phone and printed photo on the table. Each kind below is drawn flat (an RGB patch and its
alpha, in the object's own proportions) and then laid in the scene with the same perspective as
the cards: sticky notes, phones, books, printed photographs (card-like proportions, the hardest),
receipts, deck boxes and stacks of cards seen edge-on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.types import ImageRGB
from training.synth.arrays import u8
from training.synth.paste import rounded_mask

Mask = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Thing:
    """A flat drawing of a non-card object: pixels, alpha, and its size on the table."""

    kind: str
    image: ImageRGB
    alpha: Mask
    size_frac: tuple[float, float]  # sqrt(area / frame area), as cards' size_frac


def _scribble(
    img: ImageRGB, rng: np.random.Generator, col: tuple[int, int, int], rows: int
) -> None:
    """Handwriting-like polylines in `rows` lines across the patch."""
    h, w = img.shape[:2]
    for r in range(rows):
        y = int((r + 1) * h / (rows + 1))
        x = int(w * rng.uniform(0.05, 0.15))
        end = int(w * rng.uniform(0.5, 0.92))
        pts = []
        while x < end:
            pts.append((x, y + int(rng.normal(0, h * 0.012))))
            x += int(rng.uniform(3, 9) * w / 200)
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, col, max(1, w // 120), cv2.LINE_AA)


def _text_lines(img: ImageRGB, rng: np.random.Generator, y0: float, y1: float, n: int) -> None:
    """Grey dashes standing for printed text lines between fractions y0 and y1 of the height."""
    h, w = img.shape[:2]
    grey = int(rng.uniform(40, 110))
    for i in range(n):
        y = int(h * (y0 + (y1 - y0) * i / max(n - 1, 1)))
        x = int(w * 0.08)
        while x < w * 0.9:
            word = int(w * rng.uniform(0.04, 0.16))
            cv2.rectangle(
                img, (x, y), (min(x + word, int(w * 0.92)), y + max(1, h // 140)), (grey,) * 3, -1
            )
            x += word + int(w * 0.03)


def _noise_texture(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    base = rng.uniform(20, 235, 3)
    grid = rng.random((4, 6, 3)).astype(np.float32)
    field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return u8(np.clip(base * (0.6 + 0.8 * field), 0, 255))


def sticky_note(rng: np.random.Generator, side: int = 200) -> Thing:
    col = rng.choice(np.array([[250, 235, 110], [250, 170, 190], [150, 220, 250], [180, 240, 150]]))
    img = np.empty((side, side, 3), np.uint8)
    img[:] = np.clip(col + rng.normal(0, 6, 3), 0, 255).astype(np.uint8)
    shade = np.linspace(1.0, rng.uniform(0.8, 0.95), side, dtype=np.float32)[:, None, None]
    img = u8(np.clip(img * shade, 0, 255))
    if rng.random() < 0.8:
        _scribble(
            img,
            rng,
            (int(rng.uniform(10, 60)),) * 2 + (int(rng.uniform(60, 160)),),
            int(rng.integers(2, 6)),
        )
    return Thing("note", img, np.full((side, side), 255, np.uint8), (0.08, 0.2))


def phone(rng: np.random.Generator, h: int = 300) -> Thing:
    w = int(h * rng.uniform(0.46, 0.5))
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = int(rng.uniform(10, 60))
    screen_on = rng.random() < 0.6
    m = max(3, w // 24)
    screen = (
        _noise_texture(h - 6 * m, w - 2 * m, rng)
        if screen_on
        else np.full((h - 6 * m, w - 2 * m, 3), 8, np.uint8)
    )
    img[3 * m : h - 3 * m, m : w - m] = screen
    alpha = rounded_mask(h, w, w // 7)
    return Thing("phone", img, alpha, (0.15, 0.4))


def book(rng: np.random.Generator, h: int = 360) -> Thing:
    w = int(h * rng.uniform(0.62, 0.78))
    img = _noise_texture(h, w, rng)
    band = rng.uniform(30, 230, 3)
    y0 = int(h * rng.uniform(0.1, 0.25))
    cv2.rectangle(img, (0, y0), (w, y0 + h // 6), tuple(int(v) for v in band), -1)
    cv2.putText(img, "".join(rng.choice(list("ABCDEFGHKLMNRST"), 6)), (w // 10, y0 + h // 9),
                cv2.FONT_HERSHEY_DUPLEX, w / 260, (255, 255, 255), 2, cv2.LINE_AA)  # fmt: skip
    edge = max(3, w // 30)
    img[:, -edge:] = np.linspace(235, 200, edge, dtype=np.float32)[None, :, None].astype(np.uint8)
    return Thing("book", img, np.full((h, w), 255, np.uint8), (0.35, 0.75))


def printed_photo(rng: np.random.Generator, photo: ImageRGB | None, h: int = 300) -> Thing:
    """A photograph print, about a card's proportions: the most card-like negative."""
    w = int(h * rng.choice([2 / 3, 3 / 4, 0.7, 1.5, 4 / 3]))
    if photo is not None:
        ph, pw = photo.shape[:2]
        ch, cw = min(ph, int(pw * h / w)), min(pw, int(ph * w / h))
        y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        img = u8(cv2.resize(photo[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA))
    else:
        img = _noise_texture(h, w, rng)
    if rng.random() < 0.5:  # white border
        b = max(4, int(min(h, w) * rng.uniform(0.04, 0.08)))
        img = img.copy()
        img[:b], img[-b:], img[:, :b], img[:, -b:] = 245, 245, 245, 245
    return Thing("photo", img, np.full((h, w), 255, np.uint8), (0.1, 0.35))


def receipt(rng: np.random.Generator, h: int = 420) -> Thing:
    w = int(h * rng.uniform(0.22, 0.34))
    img = np.full((h, w, 3), int(rng.uniform(228, 250)), np.uint8)
    _text_lines(img, rng, 0.06, 0.94, int(rng.integers(14, 30)))
    return Thing("receipt", img, np.full((h, w), 255, np.uint8), (0.12, 0.3))


def deck_box(rng: np.random.Generator, h: int = 300) -> Thing:
    """A card box from above: the lid face and two narrow sides in darker shades."""
    w = int(h * rng.uniform(0.7, 0.8))
    col = rng.uniform(30, 220, 3)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = col.astype(np.uint8)
    side = max(6, w // 9)
    img[:, -side:] = (col * 0.65).astype(np.uint8)
    img[-side:, :] = (col * 0.5).astype(np.uint8)
    cv2.circle(
        img,
        ((w - side) // 2, (h - side) // 2),
        min(w, h) // 5,
        tuple(int(v) for v in 255 - col),
        -1,
        cv2.LINE_AA,
    )
    return Thing("deck_box", img, np.full((h, w), 255, np.uint8), (0.15, 0.35))


def card_stack_edge(rng: np.random.Generator, w: int = 420) -> Thing:
    """A stack of cards seen edge-on: a long thin block of fine light and dark lines."""
    h = int(w * rng.uniform(0.06, 0.16))
    rows = np.where(np.arange(h) % int(rng.integers(2, 4)) == 0, 0.75, 1.0).astype(np.float32)
    base = rng.uniform(150, 240)
    img = u8(np.clip(base * rows[:, None, None] * np.ones((1, w, 3), np.float32), 0, 255))
    return Thing("stack", img, np.full((h, w), 255, np.uint8), (0.06, 0.15))


KINDS: dict[str, Callable[..., Thing]] = {
    "note": sticky_note,
    "phone": phone,
    "book": book,
    "photo": printed_photo,
    "receipt": receipt,
    "deck_box": deck_box,
    "stack": card_stack_edge,
}


def random_thing(rng: np.random.Generator, photos: Sequence[ImageRGB] = ()) -> Thing:
    """One object of a random kind (printed photographs use one of `photos` when given)."""
    kind = str(rng.choice(list(KINDS)))
    if kind == "photo":
        pick = photos[int(rng.integers(len(photos)))] if photos else None
        return printed_photo(rng, pick)
    return KINDS[kind](rng)
