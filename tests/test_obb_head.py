"""Host decode of the cut YOLO11-OBB head equals the full ultralytics graph.

The detector ONNX is exported by ultralytics itself (random weights, offline), cut before the
head's concat exactly where the Hailo compile cuts it, and both graphs run on the same input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.bundles.manifest import DetectorSpec, HefSpec, InputSpec
from edge.errors import BackendError
from edge.recognize.obb_head import decode_head, make_anchors, raw_detector_output

IMGSZ = 320


@pytest.fixture(scope="module")
def yolo_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Full and cut ONNX graphs of a one-class YOLO11n-OBB, plus their outputs on one image."""
    pytest.importorskip("ultralytics")
    ort = pytest.importorskip("onnxruntime")
    import torch
    import yaml
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load

    from training.hailo_compile import cut_detector_onnx

    os.environ["YOLO_OFFLINE"] = "1"
    torch.set_num_threads(1)
    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("yolo")
    cfg = yaml_model_load("yolo11n-obb.yaml")
    cfg["nc"] = 1  # one class, as the card detector: class and angle convs both have 1 channel
    cfg_file = work / "yolo11n-obb.yaml"
    cfg_file.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "yaml_file"}))
    yolo = YOLO(str(cfg_file))

    # A fresh head predicts alike boxes and scores everywhere; random final convs make them differ.
    head = yolo.model.model[-1]
    for branch in (head.cv2, head.cv3, head.cv4):
        for seq in branch:
            seq[-1].weight.data.normal_(0.0, 0.01)
    for seq in head.cv3:
        seq[-1].bias.data.fill_(-1.0)
    cwd = Path.cwd()
    os.chdir(work)
    try:
        full = (
            work
            / Path(
                yolo.export(
                    format="onnx", imgsz=IMGSZ, simplify=False, dynamic=False, verbose=False
                )
            ).name
        )
    finally:
        os.chdir(cwd)
    cut_path = work / "detector_cut.onnx"
    cut = cut_detector_onnx(full, cut_path)
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    full_out = ort.InferenceSession(str(full), providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )[0]
    cut_out = ort.InferenceSession(str(cut_path), providers=["CPUExecutionProvider"]).run(
        list(cut.tensor_names), {"images": x}
    )
    return {"full": full_out, "cut": cut_out, "names": cut.tensor_names}


@pytest.mark.slow
@pytest.mark.train
def test_cut_graph_has_nine_outputs_box_cls_angle_per_stride(yolo_graphs: dict[str, Any]) -> None:
    # given the cut graph's outputs in decode order
    shapes = [o.shape for o in yolo_graphs["cut"]]
    # then each stride gives (64, 1, 1) channels on grids 40, 20, 10
    assert shapes == [
        (1, c, g, g) for g in (IMGSZ // 8, IMGSZ // 16, IMGSZ // 32) for c in (64, 1, 1)
    ]


@pytest.mark.slow
@pytest.mark.train
def test_decoded_cut_head_equals_full_graph_output(yolo_graphs: dict[str, Any]) -> None:
    # when the nine cut outputs are decoded on the host
    decoded = decode_head(yolo_graphs["cut"], strides=(8, 16, 32), reg_max=16, layout="NCHW")
    full = yolo_graphs["full"]
    # then the tensor matches the full graph: boxes within 1e-3 px, scores and angles within 1e-5
    assert decoded.shape == full.shape == (1, 6, 2100)
    np.testing.assert_allclose(decoded[:, :4], full[:, :4], atol=1e-3, rtol=1e-5)
    np.testing.assert_allclose(decoded[:, 4:], full[:, 4:], atol=1e-5)


@pytest.mark.slow
@pytest.mark.train
def test_decoded_cut_head_gives_the_same_boxes_after_nms(yolo_graphs: dict[str, Any]) -> None:
    from edge.recognize.detect import decode_obb

    full = yolo_graphs["full"]
    # a threshold midway between two distinct scores, so float ulps cannot flip a candidate
    levels = np.unique(np.round(full[0, 4], 4))
    conf = (
        float(levels[-20:-18].mean())
        if len(levels) > 20
        else float(levels[len(levels) // 2 - 1 : len(levels) // 2 + 1].mean())
    )
    # given the same NMS over both tensors
    ref_boxes, ref_scores, _ = decode_obb(full, conf, 0.7, 300)
    decoded = decode_head(yolo_graphs["cut"], layout="NCHW")
    boxes, scores, _ = decode_obb(decoded, conf, 0.7, 300)
    # then the kept boxes agree within 0.01 px / 0.01 score
    assert len(ref_boxes) > 0
    np.testing.assert_allclose(boxes, ref_boxes, atol=1e-2)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-2)


@pytest.mark.slow
@pytest.mark.train
def test_nhwc_layout_decodes_like_nchw(yolo_graphs: dict[str, Any]) -> None:
    # given the same outputs as HailoRT returns them (NHWC)
    nhwc = [o.transpose(0, 2, 3, 1) for o in yolo_graphs["cut"]]
    # then the NHWC decode equals the NCHW decode
    np.testing.assert_allclose(
        decode_head(nhwc, layout="NHWC"),
        decode_head(yolo_graphs["cut"], layout="NCHW"),
        rtol=1e-5,
        atol=1e-5,
    )


def test_anchors_are_cell_centres_row_major() -> None:
    # when anchors are made for a 2x3 grid at stride 8
    points, strides = make_anchors([(2, 3)], [8])
    # then x runs fastest, offsets are 0.5 and each anchor carries its stride
    assert points.tolist() == [
        [0.5, 0.5],
        [1.5, 0.5],
        [2.5, 0.5],
        [0.5, 1.5],
        [1.5, 1.5],
        [2.5, 1.5],
    ]
    assert strides.ravel().tolist() == [8.0] * 6


def _random_head(seed: int, size: int = 64) -> list[np.ndarray]:
    """Nine NHWC head outputs with a few confident anchors among many background ones."""
    rng = np.random.default_rng(seed)
    outs = []
    for g in (size // 8, size // 16, size // 32):
        outs.append(rng.normal(0, 3, (1, g, g, 64)).astype(np.float32))
        outs.append(rng.normal(-4, 2.5, (1, g, g, 1)).astype(np.float32))
        outs.append(rng.normal(0, 1, (1, g, g, 1)).astype(np.float32))
    return outs


def test_candidate_only_decode_keeps_exactly_the_boxes_of_the_full_decode() -> None:
    from edge.recognize.detect import decode_obb

    for seed in range(5):
        # given raw head outputs, decoded whole and decoded for the anchors above 0.25 only
        outs = _random_head(seed, size=320)
        full = decode_head(outs, layout="NHWC")
        cand = decode_head(outs, layout="NHWC", min_score=0.25)
        # then the candidates are exactly the full tensor's columns above the threshold
        above = np.flatnonzero(full[0, 4] > 0.25)
        assert 0 < cand.shape[2] == len(above) < full.shape[2] // 4
        np.testing.assert_array_equal(cand[0], full[0][:, above])
        # and thresholding plus NMS at that confidence keeps the same boxes, bit for bit
        for a, b in zip(
            decode_obb(full, 0.25, 0.7, 300), decode_obb(cand, 0.25, 0.7, 300), strict=True
        ):
            np.testing.assert_array_equal(a, b)


def test_wrong_number_of_head_outputs_is_a_backend_error() -> None:
    # given eight outputs for three strides
    outs = [np.zeros((1, 64, 4, 4), np.float32)] * 8
    # then decoding refuses with a typed error
    with pytest.raises(BackendError):
        decode_head(outs)


def _spec(output_names: tuple[str, ...]) -> DetectorSpec:
    return DetectorSpec(
        file="detector.onnx",
        sha256="0" * 64,
        input=InputSpec(height=64, width=64, resize="letterbox"),
        output_name="output0",
        hef=HefSpec(
            file="detector.hef", sha256="0" * 64, arch="hailo8l", output_names=output_names
        ),
    )


def test_raw_detector_output_prefers_the_full_graph_output() -> None:
    # given a backend result that already holds the full tensor
    full = np.ones((1, 6, 84), np.float32)
    # then it is returned untouched
    assert raw_detector_output({"output0": full}, _spec(())) is not None
    np.testing.assert_array_equal(raw_detector_output({"output0": full}, _spec(())), full)


def test_raw_detector_output_decodes_named_head_outputs_in_manifest_order() -> None:
    # given nine NHWC head outputs under HEF stream names, listed in the manifest's decode order
    rng = np.random.default_rng(1)
    names = tuple(f"net/conv{i}" for i in range(9))
    grids = (8, 4, 2)
    arrays = {
        names[3 * i + k]: rng.standard_normal((1, g, g, c)).astype(np.float32)
        for i, g in enumerate(grids)
        for k, c in enumerate((64, 1, 1))
    }
    # when decoded through the manifest
    out = raw_detector_output(arrays, _spec(names))
    # then it equals decoding the same arrays in that order
    expected = decode_head([arrays[n] for n in names], layout="NHWC")
    np.testing.assert_array_equal(out, expected)
    assert out.shape == (1, 6, 64 + 16 + 4)
