"""Fast unit tests of the detector's pure-numpy stages (letterbox, decode, rotated NMS, corners).

Where ultralytics is installed, its own functions are the reference; those tests skip without it.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import edge.recognize.detect
from edge.bundles.manifest import DetectorSpec, InputSpec, Thresholds
from edge.errors import BackendError, BadImageError
from edge.recognize.detect import (
    PAD_VALUE,
    Detector,
    LetterboxInfo,
    decode_obb,
    letterbox,
    xywhr_to_corners,
)
from edge.recognize.nms import NMS_DENSE_MAX, batch_probiou, nms_rotated

os.environ.setdefault("OMP_NUM_THREADS", "1")

SHAPES = [(720, 1280), (481, 997), (1000, 333), (320, 320), (17, 900)]


def _torch() -> Any:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def _raw(boxes: list[tuple[float, ...]], n: int = 64, nc: int = 1) -> npt.NDArray[np.float32]:
    """A (1, 4+nc+1, n) raw output: given rows (cx, cy, w, h, *class scores, angle), rest empty."""
    raw = np.zeros((1, 4 + nc + 1, n), dtype=np.float32)
    raw[0, 2:4] = 10.0
    for i, row in enumerate(boxes):
        raw[0, :, i * 3] = row  # spread out, so survivors are not simply the first anchors
    return raw


def _random_raw(rng: np.random.Generator, n: int, nc: int) -> npt.NDArray[np.float32]:
    """Random boxes clustered around a few centres, so that NMS has real overlaps to resolve."""
    centres = rng.uniform(50, 590, (6, 2))
    pick = rng.integers(0, 6, n)
    raw = np.empty((1, 4 + nc + 1, n), dtype=np.float32)
    raw[0, 0:2] = (centres[pick] + rng.normal(0, 8, (n, 2))).T
    raw[0, 2] = rng.uniform(40, 120, n)
    raw[0, 3] = rng.uniform(40, 160, n)
    raw[0, 4 : 4 + nc] = rng.uniform(0, 1, (nc, n)) ** 2
    raw[0, 4 + nc] = rng.uniform(-np.pi / 4, 3 * np.pi / 4, n)
    return raw


def _to_frame(xywhr: npt.NDArray[np.float32], info: LetterboxInfo) -> npt.NDArray[np.float32]:
    """Input-pixel boxes in frame pixels, one by one as the detector's corner loop scales them."""
    from edge.recognize.detect import _box_to_frame

    return np.array([_box_to_frame(b, info) for b in xywhr.tolist()], dtype=np.float32)


@pytest.fixture(params=["c", "numpy"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a decode test once with the C decode (edge/recognize/_obb.c) and once with the numpy one."""
    if request.param == "c" and edge.recognize.detect._obb is None:
        pytest.skip("the C decode was not built (no C compiler at install)")
    if request.param == "numpy":
        monkeypatch.setattr(edge.recognize.detect, "_obb", None)
    return str(request.param)


# --- letterbox -----------------------------------------------------------------------------


def test_letterbox_centres_a_wide_frame_with_grey_bars() -> None:
    # given a 1280x720 frame
    img = np.full((720, 1280, 3), 7, dtype=np.uint8)
    # when it is letterboxed to 640x640
    padded, info = letterbox(img, (640, 640))
    # then it is halved and centred vertically, with 114 above and below
    assert padded.shape == (640, 640, 3)
    assert (info.scale, info.pad_x, info.pad_y) == (0.5, 0, 140)
    assert (padded[:140] == PAD_VALUE).all() and (padded[500:] == PAD_VALUE).all()
    assert (padded[140:500] == 7).all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [320, 640])
def test_letterbox_equals_ultralytics(shape: tuple[int, int], size: int) -> None:
    augment = pytest.importorskip("ultralytics.data.augment")
    # given a random frame of an awkward size
    img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    # when both letterbox it
    ours, _ = letterbox(img, (size, size))
    theirs = augment.LetterBox((size, size), auto=False)(image=img)
    # then the pixels are identical
    np.testing.assert_array_equal(ours, theirs)


def test_letterbox_writes_into_the_given_buffer() -> None:
    # given a buffer holding garbage
    buf = np.full((320, 320, 3), 3, dtype=np.uint8)
    img = np.full((100, 200, 3), 50, dtype=np.uint8)
    # when letterboxing into it
    out, info = letterbox(img, (320, 320), out=buf)
    # then the buffer itself is the result and every pixel was rewritten
    assert out is buf
    assert (buf[: info.pad_y] == PAD_VALUE).all()
    assert (buf[info.pad_y : info.pad_y + 160] == 50).all()


def test_letterbox_refuses_a_grey_image() -> None:
    with pytest.raises(BadImageError):
        letterbox(np.zeros((10, 10), dtype=np.uint8), (320, 320))  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", SHAPES)
def test_letterbox_coordinates_round_trip(shape: tuple[int, int]) -> None:
    # given frame points and the letterbox of that frame
    _, info = letterbox(np.zeros((*shape, 3), dtype=np.uint8), (640, 640))
    pts = np.random.default_rng(1).uniform(0, 1, (20, 2)).astype(np.float32) * shape[::-1]
    # when mapped into the input and back
    back = info.to_frame(info.to_input(pts))
    # then they land where they started
    np.testing.assert_allclose(back, pts, atol=1e-3)


def test_letterbox_maps_frame_corners_onto_the_image_area() -> None:
    # given a 1280x720 frame letterboxed to 640
    _, info = letterbox(np.zeros((720, 1280, 3), dtype=np.uint8), (640, 640))
    # when its far corner is mapped into the input
    far = info.to_input(np.array([[1280.0, 720.0]], dtype=np.float32))
    # then it lands on the bottom-right of the resized area
    np.testing.assert_allclose(far, [[640.0, 500.0]])


@pytest.mark.parametrize("shape", SHAPES)
def test_boxes_scale_back_to_the_frame_as_ultralytics_scale_boxes(shape: tuple[int, int]) -> None:
    torch = _torch()
    ops = pytest.importorskip("ultralytics.utils.ops")
    # given input-pixel boxes and a frame size
    rng = np.random.default_rng(2)
    xywhr = rng.uniform(10, 300, (8, 5)).astype(np.float32)
    _, info = letterbox(np.zeros((*shape, 3), dtype=np.uint8), (320, 320))
    # when both scale them back to the frame
    ours = _to_frame(xywhr, info)
    theirs = torch.from_numpy(xywhr.copy())
    theirs[:, :4] = ops.scale_boxes((320, 320), theirs[:, :4], shape, xywh=True)
    # then they agree
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-3)


# --- corners --------------------------------------------------------------------------------


def test_xywhr_to_corners_of_an_axis_aligned_box() -> None:
    # given a 40x20 box at (100, 50), unrotated
    corners = xywhr_to_corners(np.array([[100, 50, 40, 20, 0]], dtype=np.float32))
    # then its corners are the box's, in ultralytics' order
    np.testing.assert_allclose(corners[0], [[120, 60], [120, 40], [80, 40], [80, 60]])


def test_xywhr_to_corners_equals_ultralytics() -> None:
    ops = pytest.importorskip("ultralytics.utils.ops")
    xywhr = np.random.default_rng(3).uniform(-3, 300, (50, 5)).astype(np.float32)
    np.testing.assert_allclose(xywhr_to_corners(xywhr), ops.xywhr2xyxyxyxy(xywhr), atol=1e-4)


# --- probiou and NMS ------------------------------------------------------------------------


def test_batch_probiou_equals_ultralytics() -> None:
    torch = _torch()
    metrics = pytest.importorskip("ultralytics.utils.metrics")
    b = _random_raw(np.random.default_rng(4), 200, 1)[0][[0, 1, 2, 3, 5]].T.copy()
    theirs = metrics.batch_probiou(torch.from_numpy(b), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(batch_probiou(b, b), theirs, atol=1e-5)


def test_probiou_of_a_box_with_itself_is_one() -> None:
    b = np.array([[10, 10, 30, 50, 0.3]], dtype=np.float32)
    assert batch_probiou(b, b)[0, 0] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("iou", [0.3, 0.7])
def test_nms_rotated_keeps_what_ultralytics_keeps(seed: int, iou: float) -> None:
    torch = _torch()
    metrics = pytest.importorskip("ultralytics.utils.metrics")
    nms = pytest.importorskip("ultralytics.utils.nms")
    # given clustered random rotated boxes with distinct scores
    raw = _random_raw(np.random.default_rng(seed), 300, 1)[0]
    boxes, scores = raw[[0, 1, 2, 3, 5]].T.copy(), raw[4].copy()
    # when both run Fast-NMS
    ours = nms_rotated(boxes, scores, iou)
    theirs = nms.TorchNMS.fast_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), iou, iou_func=metrics.batch_probiou
    ).numpy()
    # then the same boxes survive, in the same (descending score) order, and some were dropped
    assert 0 < len(ours) < len(scores)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("iou", [0.1, 0.7, 0.95])
def test_nms_rotated_on_many_candidates_keeps_what_ultralytics_keeps(iou: float) -> None:
    torch = _torch()
    metrics = pytest.importorskip("ultralytics.utils.metrics")
    nms = pytest.importorskip("ultralytics.utils.nms")
    # given more candidates than one dense matrix handles (a weak model at a low threshold)
    raw = _random_raw(np.random.default_rng(9), 1500, 1)[0]
    boxes, scores = raw[[0, 1, 2, 3, 5]].T.copy(), raw[4].copy()
    assert len(scores) > NMS_DENSE_MAX
    # when both run Fast-NMS
    ours = nms_rotated(boxes, scores, iou)
    theirs = nms.TorchNMS.fast_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), iou, iou_func=metrics.batch_probiou
    ).numpy()
    # then the pair-pruned path keeps exactly the same boxes
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("iou", [0.0, 0.1, 0.45, 0.7, 0.95, 0.9995, 1.0])
def test_nms_distance_bound_decides_exactly_as_the_iou(iou: float) -> None:
    from edge.recognize.nms import PROBIOU_EPS, _iou_of_distance, distance_bound

    # given clipped distances spread over the whole range, and every float32 next to the bound
    bound = distance_bound(iou)
    spread = np.geomspace(PROBIOU_EPS, 100.0, 20_000).astype(np.float32)
    near = np.array([bound], np.float32).view(np.int32) + np.arange(-500, 500, dtype=np.int32)
    near = near.view(np.float32)
    bd = np.clip(np.concatenate([spread, near[np.isfinite(near)]]), PROBIOU_EPS, 100.0)
    # when NMS compares distances with the bound instead of computing the IoU
    # then it suppresses exactly the pairs the IoU would
    np.testing.assert_array_equal(bd < bound, _iou_of_distance(bd) > iou)


def test_nms_rotated_of_nothing_is_empty() -> None:
    empty = np.zeros((0, 5), dtype=np.float32)
    assert nms_rotated(empty, np.zeros(0, dtype=np.float32), 0.7).shape == (0,)


# --- decode ---------------------------------------------------------------------------------


def test_decode_returns_known_boxes_best_first(decoder: str) -> None:
    # given two confident, separate boxes
    raw = _raw([(100, 100, 40, 60, 0.6, 0.1), (300, 200, 50, 70, 0.9, -0.2)])
    # when decoded
    xywhr, scores, classes = decode_obb(raw, 0.25, 0.7, 300)
    # then both come back exactly, the better one first
    np.testing.assert_allclose(scores, [0.9, 0.6])
    np.testing.assert_allclose(xywhr, [[300, 200, 50, 70, -0.2], [100, 100, 40, 60, 0.1]])
    np.testing.assert_array_equal(classes, [0, 0])


def test_decode_drops_boxes_below_the_confidence_threshold(decoder: str) -> None:
    raw = _raw([(100, 100, 40, 60, 0.24, 0.0), (300, 200, 50, 70, 0.26, 0.0)])
    xywhr, scores, _ = decode_obb(raw, 0.25, 0.7, 300)
    np.testing.assert_allclose(scores, [0.26])
    np.testing.assert_allclose(xywhr[:, :2], [[300, 200]])


def test_decode_suppresses_a_near_duplicate(decoder: str) -> None:
    raw = _raw([(100, 100, 40, 60, 0.8, 0.1), (102, 101, 41, 60, 0.7, 0.12)])
    _, scores, _ = decode_obb(raw, 0.25, 0.7, 300)
    np.testing.assert_allclose(scores, [0.8])


def test_decode_keeps_overlapping_boxes_of_different_classes_apart(decoder: str) -> None:
    # given the same box twice, once per class
    raw = _raw([(100, 100, 40, 60, 0.8, 0.1, 0.1), (100, 100, 40, 60, 0.1, 0.7, 0.1)], nc=2)
    # when decoded class-aware and class-agnostic
    _, _, aware = decode_obb(raw, 0.25, 0.7, 300)
    _, _, agnostic = decode_obb(raw, 0.25, 0.7, 300, agnostic=True)
    # then class-aware keeps both, agnostic only the best
    np.testing.assert_array_equal(aware, [0, 1])
    np.testing.assert_array_equal(agnostic, [0])


def test_decode_caps_detections_at_max_det(decoder: str) -> None:
    raw = _raw([(50 + 60 * i, 100, 20, 30, 0.5 + i / 100, 0) for i in range(8)])
    xywhr, _, _ = decode_obb(raw, 0.25, 0.7, 3)
    assert len(xywhr) == 3


@pytest.mark.parametrize("nc", [1, 3])
@pytest.mark.parametrize("seed", range(3))
def test_decode_equals_ultralytics_non_max_suppression(nc: int, seed: int, decoder: str) -> None:
    torch = _torch()
    nms = pytest.importorskip("ultralytics.utils.nms")
    # given a random raw output with many overlapping candidates
    raw = _random_raw(np.random.default_rng(seed), 600, nc)
    # when both decode it with the predictor's settings
    xywhr, scores, classes = decode_obb(raw, 0.25, 0.7, 300)
    (theirs,) = nms.non_max_suppression(
        torch.from_numpy(raw), 0.25, 0.7, max_det=300, nc=nc, rotated=True
    )
    theirs = theirs.numpy()
    # then boxes, scores and classes are the same, in the same order
    assert 0 < len(scores) < 600
    np.testing.assert_allclose(xywhr[:, :4], theirs[:, :4], atol=1e-4)
    np.testing.assert_allclose(xywhr[:, 4], theirs[:, 6], atol=1e-6)
    np.testing.assert_allclose(scores, theirs[:, 4], atol=1e-6)
    np.testing.assert_array_equal(classes, theirs[:, 5].astype(int))


def test_decode_refuses_a_batch(decoder: str) -> None:
    with pytest.raises(ValueError):
        decode_obb(np.zeros((2, 6, 10), dtype=np.float32), 0.25, 0.7, 300)


def _hard_raw(rng: np.random.Generator, trial: int) -> npt.NDArray[np.float32]:
    """Random outputs that probe every branch of the decode: one or three classes, tight and loose
    clusters, tied scores, NaNs, and enough candidates for numpy's pair-pruned path."""
    nc = 3 if trial % 3 == 2 else 1
    n = int(rng.integers(0, 700))
    k = int(rng.integers(1, 12))
    centres = rng.uniform(0, 640, (k, 2))
    raw = np.empty((1, 5 + nc, n), dtype=np.float32)
    raw[0, 0:2] = (centres[rng.integers(0, k, n)] + rng.normal(0, rng.uniform(0.5, 30), (n, 2))).T
    raw[0, 2:4] = rng.uniform(2, 160, (2, n))
    raw[0, 4 : 4 + nc] = rng.uniform(0, 1, (nc, n))
    raw[0, 4 + nc] = rng.uniform(-np.pi / 2, np.pi, n)
    if trial % 5 == 0:
        raw[0, 4, : n // 3] = 0.5  # ties: the lower anchor index goes first
    if trial % 11 == 0 and n:
        raw[0, int(rng.integers(0, 5 + nc)), rng.integers(0, n, 3)] = np.nan
    if trial % 13 == 0 and n > 1:  # zero-size boxes on one point: they overlap completely
        raw[0, 0:2, : n // 2] = raw[0, 0:2, :1]
        raw[0, 2:4, : n // 2] = 0.0
    if trial % 17 == 0:  # specks far apart: probiou's eps terms make them overlap anyway
        raw[0, 2:4] = rng.uniform(0.0, 1.5, (2, n))
    if trial % 19 == 0:  # needles: long, thin, badly conditioned
        raw[0, 2] = rng.uniform(100, 400, n)
        raw[0, 3] = rng.uniform(0.01, 1.0, n)
    return raw


def test_c_decode_keeps_exactly_what_the_numpy_decode_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    obb = edge.recognize.detect._obb
    if obb is None:
        pytest.skip("the C decode was not built (no C compiler at install)")
    rng = np.random.default_rng(7)
    dense_and_sparse = set()
    for trial in range(1500):
        # given a random output and random settings
        raw = _hard_raw(rng, trial)
        conf = float(rng.choice([0.01, 0.25, 0.6]))
        iou = float(rng.choice([0.05, 0.45, 0.7, 0.95, 0.99, 0.9995]))
        max_det = int(rng.choice([2, 300]))
        agnostic = bool(trial % 2)
        # when both decodes run
        monkeypatch.setattr(edge.recognize.detect, "_obb", obb)
        ours_c = decode_obb(raw, conf, iou, max_det, agnostic=agnostic)
        monkeypatch.setattr(edge.recognize.detect, "_obb", None)
        ours_np = decode_obb(raw, conf, iou, max_det, agnostic=agnostic)
        # then they keep the same boxes with the same scores and classes, in the same order
        for c_part, np_part in zip(ours_c, ours_np, strict=True):
            np.testing.assert_array_equal(c_part, np_part, err_msg=f"trial {trial}")
            assert c_part.dtype == np_part.dtype
        dense_and_sparse.add(int((raw[0, 4] > conf).sum()) > NMS_DENSE_MAX)
    assert dense_and_sparse == {False, True}  # both numpy paths were compared


def test_pair_pruned_nms_suppresses_exactly_what_the_dense_matrix_does() -> None:
    from edge.recognize.nms import (
        _bhattacharyya,
        _gauss,
        _index,
        _suppressed_sparse,
        distance_bound,
    )

    rng = np.random.default_rng(11)
    for trial in range(400):
        # given score-sorted candidates of every kind: cards, specks, needles, zero-size, NaNs
        raw = _hard_raw(rng, trial)[0]
        boxes = np.ascontiguousarray(raw[[0, 1, 2, 3, raw.shape[0] - 1]].T)
        iou = float(rng.choice([0.05, 0.45, 0.7, 0.95, 0.99, 0.9995]))
        # when suppression runs on pairs that could overlap, and on the whole matrix
        g = _gauss(boxes)
        bd = _bhattacharyya(_index(g, (slice(None), None)), _index(g, (None, slice(None))))
        dense = np.triu(bd < distance_bound(iou), k=1).any(axis=0)
        # then they agree on every box
        np.testing.assert_array_equal(_suppressed_sparse(boxes, iou), dense, f"trial {trial}")


def test_c_decode_is_built_where_a_compiler_is() -> None:
    # the speed of the detector's host work depends on it: a packaging slip must not hide
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the numpy decode serves")
    assert edge.recognize.detect._obb is not None, (
        "edge/recognize/_obb.c was not built: reinstall (make install-dev)"
    )


def test_c_decode_refuses_buffers_it_cannot_read() -> None:
    obb = edge.recognize.detect._obb
    if obb is None:
        pytest.skip("the C decode was not built (no C compiler at install)")
    pred = np.zeros((6, 10), dtype=np.float32)
    out = np.empty((10, 7), dtype=np.float32)
    args = (0.25, 1.0, 1.0, 300, 300, False, 7680.0)
    with pytest.raises(ValueError, match="pred"):
        obb.decode(pred.astype(np.float64), 10, 1, *args, out)  # wrong item type
    with pytest.raises(ValueError, match="pred"):
        obb.decode(pred, 11, 1, *args, out)  # fewer items than 6 x 11
    with pytest.raises((ValueError, BufferError)):
        obb.decode(np.zeros((6, 20), dtype=np.float32)[:, ::2], 10, 1, *args, out)  # strided
    with pytest.raises(ValueError, match="out"):
        obb.decode(pred, 10, 1, *args, np.empty((3, 7), dtype=np.float32))  # no room for 10
    with pytest.raises(ValueError, match="out"):
        obb.decode(pred, 10, 1, *args, np.empty((10, 7), dtype=np.float64))
    with pytest.raises(ValueError):
        obb.decode(pred, -1, 1, *args, out)


# --- Detector with a scripted backend -------------------------------------------------------


class ScriptedBackend:
    """Returns a fixed raw output and remembers what it was given (no model involved)."""

    key = "scripted"

    def __init__(self, outputs: dict[str, npt.NDArray[np.float32]]) -> None:
        self.outputs = outputs
        self.seen: list[npt.NDArray[Any]] = []

    def run(self, inputs: npt.NDArray[Any]) -> dict[str, npt.NDArray[np.float32]]:
        self.seen.append(inputs)
        return self.outputs

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"backend": self.key}


def _spec(size: int = 640) -> DetectorSpec:
    return DetectorSpec(
        file="detector.onnx",
        sha256="0" * 64,
        input=InputSpec(height=size, width=size, resize="letterbox"),
        output_name="output0",
    )


def test_detector_returns_card_ordered_boxes_in_frame_pixels() -> None:
    # given a landscape box in input pixels of a 1280x720 frame letterboxed to 640
    raw = _raw([(320, 320, 100, 60, 0.9, 0.0)])
    det = Detector(ScriptedBackend({"output0": raw}), _spec(), Thresholds())
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    # when detecting
    (box,) = det(frame)
    # then the corners are the doubled box around the frame centre, portrait-first, clockwise
    expected = {(540.0, 300.0), (740.0, 300.0), (740.0, 420.0), (540.0, 420.0)}
    assert {tuple(float(v) for v in p.round(3)) for p in box.corners} == expected
    edges = np.linalg.norm(box.corners - np.roll(box.corners, -1, axis=0), axis=1)
    np.testing.assert_allclose(edges, [120, 200, 120, 200], atol=1e-3)
    x, y = box.corners[:, 0], box.corners[:, 1]
    assert float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) > 0  # clockwise, y down
    assert box.conf == pytest.approx(0.9)
    assert det.last_forward_ms >= 0 and det.last_pre_ms > 0 and det.last_post_ms > 0


def test_detector_clips_corners_to_the_frame() -> None:
    raw = _raw([(10, 150, 100, 140, 0.9, 0.3)])
    det = Detector(ScriptedBackend({"output0": raw}), _spec(), Thresholds())
    (box,) = det(np.zeros((720, 1280, 3), dtype=np.uint8))
    assert box.corners.min() >= 0 and box.corners[:, 0].max() <= 1280
    assert box.corners[:, 1].max() <= 720


def test_detector_feeds_the_backend_rgb_nchw_in_unit_range() -> None:
    # given a pure red frame
    backend = ScriptedBackend({"output0": _raw([])})
    det = Detector(backend, _spec(320), Thresholds())
    frame = np.zeros((240, 320, 3), dtype=np.uint8)
    frame[..., 0] = 255
    # when detecting
    assert det(frame) == []
    # then the tensor is 1x3x320x320, red channel 1.0 in the image, pad grey elsewhere
    (x,) = backend.seen
    assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32
    assert x[0, 0, 160, 160] == 1.0 and x[0, 1, 160, 160] == 0.0
    assert x[0, 1, 0, 0] == pytest.approx(114 / 255)


def test_detector_uses_the_only_output_whatever_its_name() -> None:
    det = Detector(
        ScriptedBackend({"other": _raw([(50, 50, 30, 40, 0.9, 0)])}), _spec(), Thresholds()
    )
    assert len(det(np.zeros((640, 640, 3), dtype=np.uint8))) == 1


def test_detector_refuses_an_output_of_the_wrong_shape() -> None:
    det = Detector(
        ScriptedBackend({"output0": np.zeros((1, 84, 10), np.float32)}), _spec(), Thresholds()
    )
    with pytest.raises(BackendError):
        det(np.zeros((64, 64, 3), dtype=np.uint8))


def test_detector_postprocess_matches_a_manual_mapping() -> None:
    # given a box in input pixels and the letterbox info of an odd-sized frame
    _, info = letterbox(np.zeros((481, 997, 3), dtype=np.uint8), (640, 640))
    det = Detector(ScriptedBackend({}), _spec(), Thresholds())
    # when postprocessed
    (box,) = det.postprocess(_raw([(300, 320, 30, 80, 0.9, 0.0)]), info, (481, 997))
    # then its centre is the input centre mapped back to the frame
    centre = info.to_frame(np.array([[300, 320]], dtype=np.float32))[0]
    np.testing.assert_allclose(box.corners.mean(axis=0), centre, atol=1e-3)


def test_letterbox_info_is_consistent_with_cv2_resize() -> None:
    # the resized image covers exactly gain * frame size
    img = np.zeros((481, 997, 3), dtype=np.uint8)
    _, info = letterbox(img, (320, 320))
    assert isinstance(info, LetterboxInfo)
    resized = cv2.resize(img, (round(997 * info.gain_x), round(481 * info.gain_y)))
    assert resized.shape[:2] == (round(481 * info.scale), round(997 * info.scale))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
def test_detector_input_equals_the_shared_preprocessing_of_the_letterbox(
    shape: tuple[int, int], color_order: str
) -> None:
    from edge.recognize.embed import preprocess

    # given a frame and a detector spec with mean/std and a colour order
    spec = _spec(320).model_copy(
        update={
            "input": InputSpec(
                height=320,
                width=320,
                resize="letterbox",
                color_order=color_order,  # type: ignore[arg-type]
                mean=(10.0, 20.0, 30.0),
                std=(50.0, 60.0, 70.0),
            )
        }
    )
    det = Detector(ScriptedBackend({}), spec, Thresholds())
    img = np.random.default_rng(5).integers(0, 256, (*shape, 3), dtype=np.uint8)
    # when the detector builds its input (normalising only the image area)
    tensor, _ = det.preprocess(img)
    # then it is bit for bit the shared preprocessing of the whole letterboxed frame
    padded, _ = letterbox(img, (320, 320))
    np.testing.assert_array_equal(tensor, preprocess(padded[None], spec.input))


def test_detector_input_follows_the_frame_size_from_call_to_call() -> None:
    from edge.recognize.embed import preprocess

    # given one detector fed frames of changing sizes (a camera switch, uploaded photos)
    det = Detector(ScriptedBackend({}), _spec(320), Thresholds())
    rng = np.random.default_rng(6)
    for shape in [(720, 1280), (1280, 720), (333, 500), (720, 1280)]:
        img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        # when it builds each input in its reused buffer
        tensor, info = det.preprocess(img)
        # then each is the shared preprocessing of that frame's letterbox, grey bars included
        padded, expected_info = letterbox(img, (320, 320))
        assert info == expected_info
        np.testing.assert_array_equal(tensor, preprocess(padded[None], _spec(320).input))


def test_card_corners_order_boxes_as_the_general_corner_ordering_does() -> None:
    # given many boxes of every size, aspect and angle
    from edge.recognize.detect import card_corners
    from edge.recognize.rectify import order_corners_batch

    rng = np.random.default_rng(0)
    n = 5000
    boxes = np.stack(
        [
            rng.uniform(0, 1280, n),
            rng.uniform(0, 720, n),
            rng.uniform(5, 400, n),
            rng.uniform(5, 400, n),
            rng.uniform(-np.pi, np.pi, n),
        ],
        axis=1,
    ).astype(np.float32)
    # when corners come straight from the box axes
    fast = card_corners(boxes)
    # then they equal sorting the four corners by angle and picking the portrait start
    np.testing.assert_allclose(fast, order_corners_batch(xywhr_to_corners(boxes)), atol=1e-3)
    # and a card lying exactly sideways starts, like the angle sort, at its right edge
    sideways = np.array([[100, 100, 80, 50, 0]], np.float32)
    np.testing.assert_allclose(
        card_corners(sideways)[0], [[140, 75], [140, 125], [60, 125], [60, 75]]
    )
    # and clipped to a frame, they are exactly the float32 corners clipped afterwards
    boxes[::97, 0] = np.nan
    clipped = card_corners(boxes, (1280, 720))
    np.testing.assert_array_equal(clipped, np.clip(card_corners(boxes), 0, [1280, 720]))
    # and boxes in model-input pixels land where scaling them back first puts them
    _, info = letterbox(np.zeros((720, 1280, 3), dtype=np.uint8), (320, 320))
    np.testing.assert_allclose(
        card_corners(boxes, info=info), card_corners(_to_frame(boxes, info)), atol=1e-3
    )
