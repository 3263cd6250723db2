"""Camera and light effects applied to a composed frame: light field and white balance, glare,
blur, sensor noise and JPEG. Every function takes its randomness from the caller's generator, and
full-frame work stays in saturating uint8 OpenCV calls so a 1280x720 frame costs milliseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.types import ImageRGB
from training.synth.arrays import f32, u8

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
_GRID = (18, 32)  # low-resolution grid (rows, cols) of the light and glare fields
_NOISE_SIGMA_Q = 16  # the noise bank holds N(0, 16) int16 samples; scaled by sigma / 16


@dataclass(frozen=True, slots=True)
class LightParams:
    """Ranges of the lighting model; train and held-out test configs use different values."""

    ambient: tuple[float, float] = (0.6, 1.15)  # overall exposure multiplier
    gradient: float = 0.45  # max brightness change across the frame
    spot_prob: float = 0.3  # chance of a lamp-like bright spot
    spot_gain: float = 0.35
    vignette: float = 0.25
    wb_shift: float = 0.12  # max relative red/blue gain change (white balance)
    wb_bias: tuple[float, float] = (0.0, 0.0)  # mean (red, blue) shift: warm or cool light


def light_field(rng: np.random.Generator, p: LightParams) -> F32:
    """A smooth multiplicative field (grid x 3) for exposure, gradient, spot, vignette and WB."""
    gh, gw = _GRID
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    xx = xx / (gw - 1) - 0.5
    yy = yy / (gh - 1) - 0.5
    ang = rng.uniform(0, 2 * np.pi)
    field = rng.uniform(*p.ambient) * (
        1 + rng.uniform(0, p.gradient) * (np.cos(ang) * xx + np.sin(ang) * yy)
    )
    if rng.random() < p.spot_prob:
        cx, cy, r = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.15, 0.4)
        field = field * (
            1
            + rng.uniform(0.1, p.spot_gain)
            * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        )
    field = field * (1 - rng.uniform(0, p.vignette) * (xx**2 + yy**2) * 2)
    gains = np.array(
        [
            1 + p.wb_bias[0] + rng.uniform(-p.wb_shift, p.wb_shift),
            1.0,
            1 + p.wb_bias[1] + rng.uniform(-p.wb_shift, p.wb_shift),
        ],
        np.float32,
    )
    return f32(field[..., None] * gains)


def apply_light(img: ImageRGB, field: F32) -> ImageRGB:
    """Multiply the frame by the upsampled field (uint8 fixed point, 128 == 1.0)."""
    h, w = img.shape[:2]
    f8 = np.clip(field * 128, 0, 255).astype(np.uint8)
    up = cv2.resize(f8, (w, h), interpolation=cv2.INTER_LINEAR)
    return u8(cv2.multiply(img, up, scale=1.0 / 128))


def glare_field(rng: np.random.Generator, n_spots: int, strength: tuple[float, float]) -> F32:
    """Specular spots (grid) in [0, 1]: elongated Gaussian blobs, as a lamp reflected in gloss."""
    gh, gw = _GRID
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    out = np.zeros(_GRID, np.float32)
    for _ in range(n_spots):
        cx, cy = rng.uniform(0, gw), rng.uniform(0, gh)
        sx, sy = rng.uniform(0.6, 3.0), rng.uniform(0.6, 2.0)
        th = rng.uniform(0, np.pi)
        dx, dy = xx - cx, yy - cy
        u = dx * np.cos(th) + dy * np.sin(th)
        v = -dx * np.sin(th) + dy * np.cos(th)
        out += rng.uniform(*strength) * np.exp(-(u**2 / (2 * sx * sx) + v**2 / (2 * sy * sy)))
    return np.clip(out, 0, 1)


def apply_glare(img: ImageRGB, glare: F32, cover: F32) -> ImageRGB:
    """Add white light where glare meets glossy surfaces (`cover`: grid, 1 on cards)."""
    h, w = img.shape[:2]
    g8 = np.clip(glare * cover * 210, 0, 255).astype(np.uint8)  # partial blow-out, not a white card
    up = cv2.resize(g8, (w, h), interpolation=cv2.INTER_CUBIC)
    return u8(cv2.add(img, cv2.merge([up, up, up])))


def motion_blur(img: ImageRGB, length: int, angle_deg: float) -> ImageRGB:
    """Linear motion blur: a normalised line kernel of `length` px at `angle_deg`."""
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = np.cos(np.radians(angle_deg)) * c, np.sin(np.radians(angle_deg)) * c
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
    return u8(cv2.filter2D(img, -1, k / max(float(k.sum()), 1e-6), borderType=cv2.BORDER_REFLECT))


def defocus(img: ImageRGB, sigma: float) -> ImageRGB:
    """Out-of-focus blur approximated by a Gaussian."""
    return u8(cv2.GaussianBlur(img, (0, 0), sigma))


_noise_bank: dict[tuple[int, int], tuple[ImageRGB, ImageRGB]] = {}
_BANK_ROWS = 256  # extra rows: scenes read the window starting at a random row


def _bank(h: int, w: int) -> tuple[ImageRGB, ImageRGB]:
    """A fixed (seeded) block of N(0, 16) noise per frame size, split into its positive and
    negative parts as uint8 so scaling and adding stay saturating SIMD ops on contiguous rows."""
    if (h, w) not in _noise_bank:
        rng = np.random.default_rng(12345)
        n = np.clip(np.round(rng.normal(0, _NOISE_SIGMA_Q, (h + _BANK_ROWS, w, 3))), -255, 255)
        _noise_bank[(h, w)] = (
            np.maximum(n, 0).astype(np.uint8),
            np.maximum(-n, 0).astype(np.uint8),
        )
    return _noise_bank[(h, w)]


def sensor_noise(img: ImageRGB, sigma: float, rng: np.random.Generator) -> ImageRGB:
    """Additive Gaussian noise of std `sigma` (grey levels) from a random window of the bank."""
    if sigma <= 0:
        return img
    h, w = img.shape[:2]
    pos, neg = _bank(h, w)
    if rng.random() < 0.5:
        pos, neg = neg, pos
    y0 = int(rng.integers(0, _BANK_ROWS + 1))
    k = sigma / _NOISE_SIGMA_Q
    up = cv2.convertScaleAbs(pos[y0 : y0 + h], alpha=k)
    down = cv2.convertScaleAbs(neg[y0 : y0 + h], alpha=k)
    return u8(cv2.subtract(cv2.add(img, up), down))


def jpeg(img: ImageRGB, quality: int) -> ImageRGB:
    """Round-trip through JPEG at `quality` (block and ringing artefacts)."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError("JPEG encode failed")
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(out)
