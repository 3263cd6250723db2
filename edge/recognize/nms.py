"""Rotated NMS as ultralytics runs it: probabilistic IoU (ProbIoU) between box Gaussians, then Fast-NMS.

The numpy twin of the C decode's suppression (edge/recognize/_obb.c): results bit for bit as
ultralytics' torch kernels on float32 (transcendentals in float64, rounded once)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]

PROBIOU_EPS = 1e-7
NMS_DENSE_MAX = 256  # up to this many candidates, one dense IoU matrix is cheapest
NMS_CHUNK = 256  # rows per block of the sparse path


def _f32(fn: np.ufunc, x: FloatArray) -> FloatArray:
    """A transcendental ufunc evaluated in float64 and rounded to float32.

    Correctly rounded results, which is what torch's float32 kernels return almost always;
    numpy's float32 SIMD kernels may differ by an ulp, enough to move 1 - exp(-1e-7) by 50%.
    """
    out: FloatArray = fn(np.asarray(x, dtype=np.float64)).astype(np.float32)
    return out


# centre x, centre y, covariance a, b, c, and its determinant (clamped at 0), per box
Gauss = tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]


def _gauss(b: FloatArray) -> Gauss:
    """Box Gaussians as ultralytics' _get_covariance_matrix, plus each one's determinant."""
    ab = b[:, 2:4] ** 2 / 12
    a, bb = ab[:, 0], ab[:, 1]
    cos, sin = _f32(np.cos, b[:, 4]), _f32(np.sin, b[:, 4])
    cos2, sin2 = cos**2, sin**2
    va: FloatArray = np.asarray(a * cos2 + bb * sin2, dtype=np.float32)
    vb: FloatArray = np.asarray(a * sin2 + bb * cos2, dtype=np.float32)
    vc: FloatArray = np.asarray((a - bb) * cos * sin, dtype=np.float32)
    det: FloatArray = np.maximum(va * vb - vc**2, 0)
    return b[:, 0], b[:, 1], va, vb, vc, det


def _bhattacharyya(g1: Gauss, g2: Gauss) -> FloatArray:
    """Bhattacharyya distance of broadcastable box Gaussians, clipped to [eps, 100].

    Term by term the float32 arithmetic of ultralytics.utils.metrics.batch_probiou, so that
    suppression decisions near the threshold agree with ultralytics; shared subterms are computed
    once (its (x2 - x1) is the exact negation of x1 - x2, carried into the factor -0.5).
    """
    x1, y1, a1, bb1, c1, d1 = g1
    x2, y2, a2, bb2, c2, d2 = g2
    sa, sb, sc = a1 + a2, bb1 + bb2, c1 + c2
    det = sa * sb - sc**2
    den = det + PROBIOU_EPS
    dx, dy = x1 - x2, y1 - y2
    t1 = ((sa * dy**2 + sb * dx**2) / den) * 0.25
    t2 = ((sc * dx * dy) / den) * -0.5
    with np.errstate(invalid="ignore", divide="ignore"):  # degenerate boxes: NaN, as torch
        t3 = _f32(np.log, det / (4 * np.sqrt(d1 * d2) + PROBIOU_EPS) + PROBIOU_EPS) * 0.5
    bd: FloatArray = np.clip(t1 + t2 + t3, PROBIOU_EPS, 100.0)
    return bd


def _iou_of_distance(bd: FloatArray) -> FloatArray:
    """Probabilistic IoU from the clipped Bhattacharyya distance: 1 - Hellinger distance."""
    hd = np.sqrt(1.0 - _f32(np.exp, -np.asarray(bd, dtype=np.float32)) + PROBIOU_EPS)
    iou: FloatArray = np.asarray(1 - hd, dtype=np.float32)
    return iou


def _probiou(g1: Gauss, g2: Gauss) -> FloatArray:
    """Probabilistic IoU of broadcastable box Gaussians (ultralytics' float32 arithmetic)."""
    return _iou_of_distance(_bhattacharyya(g1, g2))


@functools.lru_cache(maxsize=64)
def distance_bound(iou: float) -> np.float32:
    """The float32 B with `_iou_of_distance(bd) > iou` exactly when `bd < B`, for every clipped
    distance bd: NMS then compares distances and skips the exp and sqrt on every pair.

    `_iou_of_distance` is non-increasing in bd (each float32 step rounds monotonically), so the
    distances that pass form a prefix of the float32 line; B, the first that fails, is found by
    bisection over the bit patterns of [eps, 100] (ordered as their values).
    """
    lo = int(np.float32(PROBIOU_EPS).view(np.int32))
    hi = int(np.float32(100.0).view(np.int32))

    def passes(bits: int) -> bool:
        bd = np.array([bits], dtype=np.int32).view(np.float32)
        return bool(_iou_of_distance(bd)[0] > iou)

    if not passes(lo):
        return np.float32(PROBIOU_EPS)  # no clipped distance passes: bd < eps never holds
    if passes(hi):
        return np.float32(np.inf)  # every distance passes (iou < 0)
    while hi - lo > 1:  # passes(lo) and not passes(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return np.float32(np.array([hi], dtype=np.int32).view(np.float32)[0])


def _index(g: Gauss, idx: Any) -> Gauss:
    """The same index (or broadcasting view) applied to every field of a Gauss."""
    x, y, a, b, c, d = g
    return x[idx], y[idx], a[idx], b[idx], c[idx], d[idx]


def batch_probiou(obb1: FloatArray, obb2: FloatArray) -> FloatArray:
    """(N, M) probabilistic IoU (1 - Hellinger distance of box Gaussians) of xywhr boxes."""
    g1 = _gauss(np.asarray(obb1, dtype=np.float32).reshape(-1, 5))
    g2 = g1 if obb2 is obb1 else _gauss(np.asarray(obb2, dtype=np.float32).reshape(-1, 5))
    return _probiou(_index(g1, (slice(None), None)), _index(g2, (None, slice(None))))


@functools.lru_cache(maxsize=64)
def reach(iou: float) -> float:
    """k such that probiou(i, j) > iou implies |centre_i - centre_j|^2 < k * (tr S_i + tr S_j)
    for two regular boxes (`_regular`); 0 where no such k is safe (iou above about 0.97).

    The Bhattacharyya distance is at least 1/4 of the Mahalanobis distance of the centres under
    S_i + S_j (its log-det term is >= 0), which is at least |d|^2 / 4 tr(S_i + S_j); probiou > iou
    needs that distance below bd_max = -ln(1 + eps - (1 - iou)^2). The eps terms move the
    distance by under 1e-7 when det(S_i + S_j) >= 2, and float32 rounding by under 0.1% when
    S is no worse conditioned than 1e4; the 5% margin covers both once bd_max >= 1e-3.
    """
    bd_max = -np.log(1.0 + PROBIOU_EPS - (1.0 - iou) ** 2)
    return float(4.0 * bd_max * 1.05 + 1e-6) if bd_max >= 1e-3 else 0.0


def _regular(g: Gauss) -> npt.NDArray[np.bool_]:
    """Boxes the distance pre-filter may judge: area >= 12 px^2 (det S >= 1) and an aspect
    within about 100 (tr^2 <= 1e4 det). Smaller or thinner ones (and NaNs) are always compared
    in full: there the eps terms or rounding can make two far-apart boxes overlap."""
    trace, det = g[2] + g[3], g[5]
    regular: npt.NDArray[np.bool_] = (det >= 1.0) & (trace * trace <= 1e4 * det)
    return regular


def _suppressed_sparse(boxes: FloatArray, iou: float) -> npt.NDArray[np.bool_]:
    """Fast-NMS suppression of score-sorted boxes, evaluating probiou only for pairs near enough
    to exceed `iou` (exactly the same result as the dense matrix, at a fraction of the cost)."""
    n = len(boxes)
    g = _gauss(boxes)
    trace = g[2] + g[3]
    irregular = ~_regular(g)
    within = reach(iou)
    bound = distance_bound(iou)
    suppressed = np.zeros(n, dtype=bool)
    x, y = g[0], g[1]
    for start in range(0, n - 1, NMS_CHUNK):
        rows = np.arange(start, min(n, start + NMS_CHUNK))
        cols = np.arange(start + 1, n)  # only lower-scoring boxes can be suppressed by these rows
        d2 = (x[rows, None] - x[None, cols]) ** 2 + (y[rows, None] - y[None, cols]) ** 2
        near = (d2 < within * (trace[rows, None] + trace[None, cols])) | (within == 0.0)
        near |= irregular[rows, None] | irregular[None, cols]
        near &= cols[None, :] > rows[:, None]
        ii, jj = np.nonzero(near)
        if len(ii):
            bd = _bhattacharyya(_index(g, rows[ii]), _index(g, cols[jj]))
            suppressed[cols[jj[bd < bound]]] = True
    return suppressed


def nms_rotated(xywhr: FloatArray, scores: FloatArray, iou: float) -> IntArray:
    """Fast-NMS over probabilistic IoU: indices of the kept boxes, by descending score.

    A box is dropped when any higher-scoring box overlaps it by more than `iou`, even one that was
    itself dropped (that is Fast-NMS, and what ultralytics does for OBB). Few candidates: one
    dense IoU matrix; many (a weak model at a low threshold): only pairs that could overlap.
    """
    if len(scores) <= 1:
        return np.arange(len(scores), dtype=np.intp)
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    boxes = np.asarray(xywhr, dtype=np.float32)[order]
    if len(boxes) <= NMS_DENSE_MAX:
        g = _gauss(boxes)
        bd = _bhattacharyya(_index(g, (slice(None), None)), _index(g, (None, slice(None))))
        suppressed = np.triu(bd < distance_bound(iou), k=1).any(axis=0)
    else:
        suppressed = _suppressed_sparse(boxes, iou)
    return order[~suppressed].astype(np.intp)
