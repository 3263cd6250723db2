"""Host decode of a YOLO11-OBB head cut before its final concat (the Hailo detector graph).

Hailo compiles the detector up to the last convolution of each head branch: per stride a box
conv (4 * reg_max DFL logits), a class conv (nc logits) and an angle conv (1 logit), nine
outputs for strides 8/16/32. This module finishes the head on the host exactly as
ultralytics' OBB head does (DFL softmax expectation, anchors at cell centres, distance to
rotated box, sigmoid class scores, angle = (sigmoid - 0.25) * pi) and returns the full graph's
(B, 4 + nc + 1, N) tensor, so edge/recognize/detect.py's decode and rotated NMS serve both paths.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import DetectorSpec
from edge.errors import BackendError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
Layout = Literal["NCHW", "NHWC"]


@dataclass(frozen=True, slots=True)
class HeadLevel:
    """The three raw branch outputs of one stride, as (B, H*W, C) arrays."""

    box: FloatArray  # B x HW x 4*reg_max, DFL logits
    cls: FloatArray  # B x HW x nc, class logits
    angle: FloatArray  # B x HW x 1, angle logit
    height: int
    width: int
    stride: int


def _sigmoid(x: FloatArray) -> FloatArray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _flatten(x: npt.NDArray[np.float32], layout: Layout) -> tuple[FloatArray, int, int]:
    """(B,C,H,W) or (B,H,W,C) -> (B, H*W, C) plus H and W; a missing batch axis becomes B=1."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise BackendError(f"head output must be 3-D or 4-D, got shape {a.shape}")
    if layout == "NCHW":
        b, c, h, w = a.shape
        return np.ascontiguousarray(a.reshape(b, c, h * w).transpose(0, 2, 1)), h, w
    b, h, w, c = a.shape
    return a.reshape(b, h * w, c), h, w


def make_anchors(
    sizes: Sequence[tuple[int, int]], strides: Sequence[int]
) -> tuple[FloatArray, FloatArray]:
    """Cell-centre anchors in grid units (N x 2, x then y, row-major per level) and strides (N x 1)."""
    points, stride_col = [], []
    for (h, w), s in zip(sizes, strides, strict=True):
        sy, sx = np.meshgrid(
            np.arange(h, dtype=np.float32) + 0.5,
            np.arange(w, dtype=np.float32) + 0.5,
            indexing="ij",
        )
        points.append(np.stack((sx, sy), axis=-1).reshape(-1, 2))
        stride_col.append(np.full((h * w, 1), float(s), dtype=np.float32))
    return np.concatenate(points), np.concatenate(stride_col)


@functools.lru_cache(maxsize=8)
def _anchors(
    sizes: tuple[tuple[int, int], ...], strides: tuple[int, ...]
) -> tuple[FloatArray, FloatArray]:
    """make_anchors, computed once per grid (read-only: every frame shares them)."""
    points, stride_col = make_anchors(sizes, strides)
    points.setflags(write=False)
    stride_col.setflags(write=False)
    return points, stride_col


def dfl_expectation(box_logits: FloatArray, reg_max: int) -> FloatArray:
    """(B, N, 4*reg_max) DFL logits -> (B, N, 4) expected distances (softmax over bins, sum of bin*p)."""
    b, n, c = box_logits.shape
    if c != 4 * reg_max:
        raise BackendError(f"box output has {c} channels, expected 4 * reg_max = {4 * reg_max}")
    logits = box_logits.reshape(b, n, 4, reg_max)
    logits = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=-1, keepdims=True)
    bins = np.arange(reg_max, dtype=np.float32)
    expected: FloatArray = (p @ bins).astype(np.float32)
    return expected


def dist2rbox(dist: FloatArray, angle: FloatArray, anchors: FloatArray) -> FloatArray:
    """(B,N,4) ltrb distances + (B,N,1) angle + (N,2) anchors -> (B,N,4) rotated cx, cy, w, h (grid units)."""
    lt, rb = dist[..., :2], dist[..., 2:]
    cos, sin = np.cos(angle), np.sin(angle)
    half = (rb - lt) / 2.0
    xf, yf = half[..., :1], half[..., 1:]
    x = xf * cos - yf * sin
    y = xf * sin + yf * cos
    xy = np.concatenate([x, y], axis=-1) + anchors
    return np.concatenate([xy, lt + rb], axis=-1).astype(np.float32)


def split_levels(
    outputs: Sequence[npt.NDArray[np.float32]],
    strides: Sequence[int],
    *,
    layout: Layout = "NCHW",
) -> list[HeadLevel]:
    """Nine outputs ordered (box, cls, angle) per stride -> one HeadLevel per stride."""
    if len(outputs) != 3 * len(strides):
        raise BackendError(
            f"a cut OBB head has 3 outputs per stride ({3 * len(strides)}), got {len(outputs)}"
        )
    levels = []
    for i, stride in enumerate(strides):
        box, h, w = _flatten(outputs[3 * i], layout)
        cls, hc, wc = _flatten(outputs[3 * i + 1], layout)
        ang, ha, wa = _flatten(outputs[3 * i + 2], layout)
        if not (h, w) == (hc, wc) == (ha, wa):
            raise BackendError(
                f"stride {stride}: branch grids differ {(h, w)} {(hc, wc)} {(ha, wa)}"
            )
        if ang.shape[-1] != 1:
            raise BackendError(
                f"stride {stride}: angle output has {ang.shape[-1]} channels, expected 1"
            )
        levels.append(HeadLevel(box, cls, ang, h, w, int(stride)))
    return levels


def decode_head(
    outputs: Sequence[npt.NDArray[np.float32]],
    *,
    strides: Sequence[int] = (8, 16, 32),
    reg_max: int = 16,
    layout: Layout = "NCHW",
    min_score: float | None = None,
) -> FloatArray:
    """Cut-head outputs (box, cls, angle per stride) -> (B, 4 + nc + 1, N) like the full ONNX graph.

    Rows: cx, cy, w, h in input pixels, nc sigmoid class scores, angle in radians in [-pi/4, 3pi/4).
    With `min_score` (one image only) the columns are just the anchors whose best class score
    exceeds it, in anchor order: the DFL decode, most of the host's cost, then runs on a few
    dozen candidates instead of every anchor, and a decode thresholded at `min_score` or above
    keeps exactly the boxes it would keep from the full tensor.
    """
    levels = split_levels(outputs, strides, layout=layout)
    box = np.concatenate([lv.box for lv in levels], axis=1)
    cls = _sigmoid(np.concatenate([lv.cls for lv in levels], axis=1))
    ang_logit = np.concatenate([lv.angle for lv in levels], axis=1)
    anchors, stride_col = _anchors(tuple((lv.height, lv.width) for lv in levels), tuple(strides))
    if min_score is not None:
        if box.shape[0] != 1:
            raise BackendError(f"min_score decodes one image, got a batch of {box.shape[0]}")
        keep = np.flatnonzero(cls[0].max(axis=-1) > min_score)
        box, cls, ang_logit = box[:, keep], cls[:, keep], ang_logit[:, keep]
        anchors, stride_col = anchors[keep], stride_col[keep]
    angle = ((_sigmoid(ang_logit) - 0.25) * np.pi).astype(np.float32)
    rbox = dist2rbox(dfl_expectation(box, reg_max), angle, anchors) * stride_col
    out = np.concatenate([rbox, cls, angle], axis=-1)
    return np.ascontiguousarray(out.transpose(0, 2, 1), dtype=np.float32)


def raw_detector_output(
    outputs: Mapping[str, npt.NDArray[np.float32]],
    spec: DetectorSpec,
    *,
    layout: Layout | None = None,
    min_score: float | None = None,
) -> FloatArray:
    """A backend's outputs -> the (B, 4+nc+1, N) detector tensor, whichever graph produced them.

    The full ONNX graph already emits it under `spec.output_name`; a cut graph (the HEF) emits
    nine head outputs named, in decode order, by `spec.hef.output_names`. `layout` defaults to
    NHWC for HEF streams (what HailoRT returns) and NCHW otherwise. `min_score` is passed to
    `decode_head` (candidates only); the full graph's tensor is returned whole.
    """
    if spec.output_name in outputs:
        return np.asarray(outputs[spec.output_name], dtype=np.float32)
    names = spec.hef.output_names if spec.hef is not None else ()
    missing = [n for n in names if n not in outputs]
    if not names or missing:
        raise BackendError(
            f"detector outputs {sorted(outputs)} hold neither {spec.output_name!r} nor the cut head "
            f"outputs {list(names)}",
            "the bundle's detector output names do not match its model; rebuild the bundle",
        )
    return decode_head(
        [outputs[n] for n in names],
        strides=spec.strides,
        reg_max=spec.reg_max,
        layout=layout or "NHWC",
        min_score=min_score,
    )
