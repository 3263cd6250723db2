"""Shipped ONNX models name no building machine's folders."""

from __future__ import annotations

from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

from training.detector import scrub_paths  # noqa: E402


def _model_with_description(path: Path, description: str) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    helper.set_model_props(model, {"description": description, "stride": "32"})
    onnx.save(model, str(path))


def test_absolute_dataset_path_is_reduced_to_its_file_name(tmp_path: Path) -> None:
    # given an exported model whose description carries the training machine's dataset path
    path = tmp_path / "detector.onnx"
    _model_with_description(path, "YOLO11n-obb model trained on /home/someone/data/obb/data.yaml")
    # when it is scrubbed
    scrub_paths(path)
    # then only the file name remains and other metadata is untouched
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props == {"description": "YOLO11n-obb model trained on data.yaml", "stride": "32"}
