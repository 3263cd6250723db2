"""Card detector: letterbox -> forward -> YOLO-OBB decode + rotated Fast-NMS.

The decode runs in C (`edge/recognize/_obb.c`) where the install built it, else in numpy: the same
decisions either way (tests hold the two to each other and to ultralytics).

The decode reproduces what `ultralytics.YOLO(model).predict` does for an OBB model (letterbox
geometry, confidence filter, Fast-NMS over probabilistic IoU, scaling back to the frame), so a
bundle's detector gives the same boxes here as in training and evaluation. Only
`Detector.forward` touches a backend; the Hailo path feeds the same raw tensor to `postprocess`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import types
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.backends import Backend
from edge.bundles.manifest import DetectorSpec, InputSpec, Thresholds
from edge.errors import BackendError, BadImageError
from edge.recognize.embed import pixel_spec, takes_pixels
from edge.recognize.embed import preprocess as model_input
from edge.recognize.nms import distance_bound, nms_rotated, reach
from edge.recognize.obb_head import raw_detector_output
from edge.types import ImageRGB, OrientedBox

_obb: types.ModuleType | None
try:  # the decode in C, built at install where a C compiler was found (setup.py)
    from edge.recognize import _obb
except ImportError:  # pragma: no cover - depends on the install
    _obb = None

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]

PAD_VALUE = 114  # ultralytics' letterbox grey
MAX_NMS = 30_000  # most candidates ultralytics hands to NMS
MAX_WH = 7680  # ultralytics' per-class coordinate offset for class-aware NMS


@dataclass(frozen=True, slots=True)
class LetterboxInfo:
    """How a frame was placed in the letterboxed model input.

    `gain_x`/`gain_y` are the resized size over the frame size per axis: equal to `scale` up to
    the rounding of the resized image to whole pixels, which ultralytics also undoes per axis.
    """

    scale: float  # input px per frame px before rounding
    pad_x: int  # left padding, input px
    pad_y: int  # top padding, input px
    gain_x: float  # resized width / frame width
    gain_y: float  # resized height / frame height

    def to_frame(self, xy: FloatArray) -> FloatArray:
        """Points (..., 2) in input pixels -> frame pixels."""
        pts = np.asarray(xy, dtype=np.float32)
        return ((pts - (self.pad_x, self.pad_y)) / (self.gain_x, self.gain_y)).astype(np.float32)

    def to_input(self, xy: FloatArray) -> FloatArray:
        """Points (..., 2) in frame pixels -> input pixels."""
        pts = np.asarray(xy, dtype=np.float32)
        return (pts * (self.gain_x, self.gain_y) + (self.pad_x, self.pad_y)).astype(np.float32)


def letterbox_geometry(
    frame_hw: tuple[int, int], input_hw: tuple[int, int]
) -> tuple[tuple[int, int], LetterboxInfo]:
    """Resized (w, h) and placement of a frame in the input, rounded exactly as ultralytics does."""
    h0, w0 = frame_hw
    h1, w1 = input_hw
    r = min(h1 / h0, w1 / w0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    left = round((w1 - new_w) / 2 - 0.1)
    top = round((h1 - new_h) / 2 - 0.1)
    return (new_w, new_h), LetterboxInfo(r, left, top, new_w / w0, new_h / h0)


def letterbox(
    img: ImageRGB, shape: tuple[int, int], *, out: npt.NDArray[np.uint8] | None = None
) -> tuple[npt.NDArray[np.uint8], LetterboxInfo]:
    """Resize keeping aspect (bilinear), centre, pad with 114 to `shape` (h, w).

    With `out` (h x w x 3 uint8) the result is written into it and no image-sized memory is
    allocated: the resize lands directly in the centre view of the buffer.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise BadImageError(f"expected an H x W x 3 RGB image, got shape {img.shape}")
    h1, w1 = shape
    (new_w, new_h), info = letterbox_geometry((img.shape[0], img.shape[1]), shape)
    if out is None:
        out = np.empty((h1, w1, 3), dtype=np.uint8)
    elif out.shape != (h1, w1, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be {(h1, w1, 3)} uint8, got {out.shape} {out.dtype}")
    top, left = info.pad_y, info.pad_x
    bottom, right = top + new_h, left + new_w
    out[:top] = PAD_VALUE
    out[bottom:] = PAD_VALUE
    out[top:bottom, :left] = PAD_VALUE
    out[top:bottom, right:] = PAD_VALUE
    _resize_into(img, out[top:bottom, left:right])
    return out, info


def _resize_into(img: ImageRGB, dst: npt.NDArray[np.uint8]) -> None:
    """The letterbox's resize (bilinear, as ultralytics), written into `dst` (a view is fine)."""
    if img.shape[:2] == dst.shape[:2]:
        dst[...] = img
    else:
        cv2.resize(img, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=cv2.INTER_LINEAR)


def xywhr_to_corners(xywhr: FloatArray) -> FloatArray:
    """(K, 5) centre x, centre y, w, h, angle (rad) -> (K, 4, 2) corners, in ultralytics' order."""
    b = np.asarray(xywhr, dtype=np.float32).reshape(-1, 5)
    ctr = b[:, None, 0:2]
    cos, sin = np.cos(b[:, 4]), np.sin(b[:, 4])
    half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
    v1 = np.stack([half_w * cos, half_w * sin], axis=-1)[:, None, :]
    v2 = np.stack([-half_h * sin, half_h * cos], axis=-1)[:, None, :]
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float32)[None, :, :, None]
    return (ctr + signs[:, :, 0] * v1 + signs[:, :, 1] * v2).astype(np.float32)


def card_corners(
    xywhr: FloatArray,
    frame_wh: tuple[int, int] | None = None,
    info: LetterboxInfo | None = None,
) -> FloatArray:
    """(K, 5) boxes -> (K, 4, 2) corners ordered as `edge.recognize.rectify.order_corners` orders them
    (clockwise from the card's top-left: a short edge first, the higher one of the two), straight
    from the box's axes instead of sorting four points by angle.

    The half-axis across the long side points at the top edge; the one along it runs from the
    top-left to the top-right corner, i.e. the first one turned 90 degrees clockwise (y down).
    Plain floats per box: a frame has a few boxes, each of which then costs a warp and an
    embedding, and twenty numpy calls on 4-row arrays cost more than the arithmetic itself.
    With `info` the boxes are in model-input pixels and are first scaled back to the frame; with
    `frame_wh` the corners are clipped to the frame (before the rounding to float32, which gives
    the same numbers as clipping after it: both bounds are float32 values).
    """
    out = []
    for box in np.asarray(xywhr, dtype=np.float32).reshape(-1, 5).tolist():
        cx, cy, w, h, angle = box if info is None else _box_to_frame(box, info)
        cos, sin = math.cos(angle), math.sin(angle)
        u = (cos * w / 2, sin * w / 2)  # along w
        v = (-sin * h / 2, cos * h / 2)  # along h
        (tx, ty), (ax, ay) = (v, u) if w <= h else (u, v)  # centre -> middle of a short edge
        # Of the two short edges, the higher one; a tie (a card lying exactly sideways) takes the
        # one on the right, as the angle sort does.
        if ty > 0 or (ty == 0 and tx < 0):
            tx, ty = -tx, -ty
        if ax * -ty + ay * tx < 0:  # along must point as the top half-axis turned clockwise
            ax, ay = -ax, -ay
        corners = [
            (cx + tx - ax, cy + ty - ay),
            (cx + tx + ax, cy + ty + ay),
            (cx + ax - tx, cy + ay - ty),
            (cx - tx - ax, cy - ty - ay),
        ]
        if frame_wh is not None:
            w_max, h_max = frame_wh  # min/max as np.clip: a NaN stays NaN
            corners = [(min(max(x, 0), w_max), min(max(y, 0), h_max)) for x, y in corners]
        out.append(corners)
    return np.array(out, dtype=np.float32).reshape(-1, 4, 2)


def decode_obb(
    raw: FloatArray, conf: float, iou: float, max_det: int, *, agnostic: bool = False
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Raw YOLO-OBB output (1, 4+nc+1, N) -> kept (xywhr Kx5, scores K, classes K), input px.

    Rows are cx, cy, w, h, nc class scores (already sigmoid), angle (rad). Thresholds first,
    so the geometry work runs on the few candidates above `conf`, never on all N anchors.
    """
    pred = np.asarray(raw, dtype=np.float32)
    if pred.ndim == 3:
        if pred.shape[0] != 1:
            raise ValueError(f"decode_obb takes one image, got batch {pred.shape[0]}")
        pred = pred[0]
    nc = pred.shape[0] - 5
    if pred.ndim != 2 or nc < 1:
        raise ValueError(f"expected (1, 4+nc+1, N) with nc >= 1, got {raw.shape}")
    if _obb is not None:
        return _decode_c(np.ascontiguousarray(pred), nc, conf, iou, max_det, agnostic)
    kept = _kept_anchors(pred, nc, conf, iou, max_det, agnostic)
    cols = pred[:, kept]
    class_scores = cols[4 : 4 + nc]
    if nc == 1:
        scores, classes = class_scores[0], np.zeros(len(kept), dtype=np.intp)
    else:
        scores, classes = class_scores.max(axis=0), class_scores.argmax(axis=0).astype(np.intp)
    return np.ascontiguousarray(cols[[0, 1, 2, 3, 4 + nc]].T), scores, classes


def _kept_anchors(
    pred: FloatArray, nc: int, conf: float, iou: float, max_det: int, agnostic: bool
) -> IntArray:
    """The anchors (columns of pred) that survive the threshold and Fast-NMS, best first: the
    reference implementation in numpy, used where the C decode was not built."""
    best = pred[4] if nc == 1 else pred[4 : 4 + nc].max(axis=0)
    cand = np.flatnonzero(best > conf)
    scores = best[cand]
    if len(cand) > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        cand, scores = cand[top], scores[top]
    boxes = pred[np.ix_(np.array([0, 1, 2, 3, 4 + nc], dtype=np.intp), cand)].T
    if not agnostic and nc > 1:  # keep classes apart, as ultralytics does
        classes = pred[4 : 4 + nc, cand].argmax(axis=0)
        boxes = boxes.copy()
        boxes[:, :2] += classes[:, None].astype(np.float32) * MAX_WH
    kept: IntArray = cand[nms_rotated(boxes, scores, iou)[:max_det]]
    return kept


def _decode_c(
    pred: FloatArray, nc: int, conf: float, iou: float, max_det: int, agnostic: bool
) -> tuple[FloatArray, FloatArray, IntArray]:
    """`decode_obb` in C (edge/recognize/_obb.c): the same boxes, without numpy's per-call cost."""
    assert _obb is not None
    n = pred.shape[1]
    rows = np.empty((min(n, max_det), 7), dtype=np.float32)
    bound, within = float(distance_bound(iou)), reach(iou)
    count = _obb.decode(pred, n, nc, conf, bound, within, MAX_NMS, max_det, agnostic, MAX_WH, rows)
    kept = rows[:count]
    return kept[:, :5], kept[:, 5], kept[:, 6].astype(np.intp)


def _box_to_frame(box: list[float], info: LetterboxInfo) -> tuple[float, ...]:
    """One input-pixel xywhr box in frame pixels, as ultralytics' scale_boxes maps it (centre
    unpadded, sizes divided per axis)."""
    cx, cy, w, h, angle = box
    gx, gy = info.gain_x, info.gain_y
    return (cx - info.pad_x) / gx, (cy - info.pad_y) / gy, w / gx, h / gy, angle


def boxes_in_frame(
    xywhr: FloatArray,
    scores: FloatArray,
    classes: IntArray,
    info: LetterboxInfo,
    frame_hw: tuple[int, int],
) -> list[OrientedBox]:
    """Input-pixel xywhr -> OrientedBoxes in the frame: card-ordered corners, clipped to it."""
    corners = card_corners(xywhr, (frame_hw[1], frame_hw[0]), info)
    return [
        OrientedBox(corners=c, conf=s, class_id=k)
        for c, s, k in zip(corners, scores.tolist(), classes.tolist(), strict=True)
    ]


@dataclass(frozen=True, slots=True)
class _LetterboxState:
    """One thread's detector input for one frame size: the tensor with its grey bars already
    normalised, the view of its image area, and the uint8 image the frame is resized into."""

    frame_hw: tuple[int, int]
    info: LetterboxInfo
    tensor: FloatArray  # 1 x 3 x H x W
    tensor_centre: FloatArray  # view of the image area
    centre: npt.NDArray[np.uint8]  # new_h x new_w x 3
    centre_spec: InputSpec


class Detector:
    """preprocess -> forward -> postprocess around one detector backend.

    Thread-safe: each thread letterboxes into its own reusable buffer. `last_*_ms` report the
    latest call's stage times (for benchmarks and /v1/status, not for accounting under load).
    """

    def __init__(self, backend: Backend, spec: DetectorSpec, thresholds: Thresholds) -> None:
        self.backend = backend
        self.spec = spec
        self.thresholds = thresholds
        self.input_hw = (spec.input.height, spec.input.width)
        self._local = threading.local()
        # a backend that normalises on the device gets the letterboxed pixels as they are
        self._pixels = pixel_spec(spec.input) if takes_pixels(backend) else None
        self.last_pre_ms = 0.0
        self.last_forward_ms = 0.0
        self.last_post_ms = 0.0

    def _buffer(self) -> npt.NDArray[np.uint8]:
        """This thread's letterbox buffer."""
        buf: npt.NDArray[np.uint8] | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = np.empty((*self.input_hw, 3), dtype=np.uint8)
            self._local.buf = buf
        return buf

    def preprocess(self, image: ImageRGB) -> tuple[npt.NDArray[Any], LetterboxInfo]:
        """RGB frame -> model input batch of one, per the manifest's input spec.

        The float32 NCHW tensor is this thread's own buffer, valid until the thread's next call
        (the detector runs pre -> forward -> post on one thread). Its grey bars are written once
        per frame geometry; each frame only resizes into the image area and normalises that.
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise BadImageError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
        spec = self.spec.input
        if self._pixels is not None or spec.dtype != "float32" or spec.layout != "NCHW":
            padded, info = letterbox(image, self.input_hw, out=self._buffer())
            return model_input(padded[None], self._pixels or spec), info
        state = self._state_for((image.shape[0], image.shape[1]))
        _resize_into(image, state.centre)
        model_input(state.centre[None], state.centre_spec, out=state.tensor_centre)
        return state.tensor, state.info

    def _state_for(self, frame_hw: tuple[int, int]) -> _LetterboxState:
        """This thread's input tensor laid out for frames of this size (grey bars in place)."""
        state: _LetterboxState | None = getattr(self._local, "state", None)
        if state is None or state.frame_hw != frame_hw:
            (new_w, new_h), info = letterbox_geometry(frame_hw, self.input_hw)
            top, left = info.pad_y, info.pad_x
            grey = np.full((1, *self.input_hw, 3), PAD_VALUE, dtype=np.uint8)
            tensor = model_input(grey, self.spec.input)  # the grey bars, normalised once
            area = (slice(None), slice(None), slice(top, top + new_h), slice(left, left + new_w))
            state = _LetterboxState(
                frame_hw=frame_hw,
                info=info,
                tensor=tensor,
                tensor_centre=tensor[area],
                centre=np.empty((new_h, new_w, 3), dtype=np.uint8),
                centre_spec=self.spec.input.model_copy(update={"height": new_h, "width": new_w}),
            )
            self._local.state = state
        return state

    def forward(self, tensor: npt.NDArray[Any]) -> FloatArray:
        """The backend call: returns the raw (1, 4+nc+1, N) output.

        A full graph's output comes back whole; a cut head's nine outputs (the HEF) are decoded
        on the host for the anchors above det_conf only (postprocess keeps no others)."""
        outputs = self.backend.run(tensor)
        if self.spec.output_name not in outputs and len(outputs) == 1:
            outputs = {self.spec.output_name: next(iter(outputs.values()))}
        raw = raw_detector_output(outputs, self.spec, min_score=self.thresholds.det_conf)
        rows = 4 + self.spec.num_classes + 1
        if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[1] != rows:
            raise BackendError(
                f"detector output has shape {raw.shape}, expected (1, {rows}, N)",
                "the model is not a YOLO-OBB export matching the manifest's num_classes",
            )
        return raw

    def postprocess(
        self, raw: FloatArray, info: LetterboxInfo, frame_hw: tuple[int, int]
    ) -> list[OrientedBox]:
        """Raw output -> boxes in frame pixels, best first. Class-agnostic NMS: one thing on the
        table is a card face or a card back, never both, so the better-scoring class wins."""
        t = self.thresholds
        xywhr, scores, classes = decode_obb(raw, t.det_conf, t.det_iou, t.max_det, agnostic=True)
        return boxes_in_frame(xywhr, scores, classes, info, frame_hw)

    def __call__(self, image: ImageRGB) -> list[OrientedBox]:
        """Detect every card in an RGB frame, timing each stage."""
        t0 = time.perf_counter()
        tensor, info = self.preprocess(image)
        t1 = time.perf_counter()
        raw = self.forward(tensor)
        t2 = time.perf_counter()
        boxes = self.postprocess(raw, info, (image.shape[0], image.shape[1]))
        t3 = time.perf_counter()
        self.last_pre_ms = (t1 - t0) * 1000.0
        self.last_forward_ms = (t2 - t1) * 1000.0
        self.last_post_ms = (t3 - t2) * 1000.0
        logger.debug(
            "detect: %d boxes, pre %.2f ms, forward %.2f ms, post %.2f ms",
            len(boxes),
            self.last_pre_ms,
            self.last_forward_ms,
            self.last_post_ms,
        )
        return boxes
