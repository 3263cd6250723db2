"""Helpers for the Hailo tests: tiny ONNX graphs built with onnx.helper (no torch), their specs,
fake HEFs for the hailo_platform test double, and the fixture plumbing that puts the double on
sys.path for one test only."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.bundles.manifest import DetectorSpec, EmbedderSpec, HefSpec, InputSpec

FAKES = Path(__file__).parent / "fakes"
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
EMB_H, EMB_W, EMB_D = 32, 24, 16
DET = 64


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(arr.astype(np.float32), name)


def embedder_onnx(path: Path, seed: int = 0) -> Path:
    """images (N,3,H,W) -> Conv s2 -> Relu -> GAP -> Flatten -> Gemm -> embedding (N, D)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["embedding"]),
    ]
    inits = [
        _init("w1", rng.normal(0, 0.3, (12, 3, 3, 3))),
        _init("b1", rng.normal(0, 0.1, (12,))),
        _init("w2", rng.normal(0, 0.5, (12, EMB_D))),
        _init("b2", rng.normal(0, 0.1, (EMB_D,))),
    ]
    graph = helper.make_graph(
        nodes,
        "embedder",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, EMB_H, EMB_W])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", EMB_D])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def detector_cut_onnx(path: Path, nc: int = 1, seed: int = 0) -> list[str]:
    """images (1,3,64,64) -> per stride 8/16/32: AvgPool -> 1x1 convs to 64 / nc / 1 channels."""
    rng = np.random.default_rng(seed)
    nodes, inits, outputs, names = [], [], [], []
    for s in (8, 16, 32):
        nodes.append(
            helper.make_node(
                "AveragePool", ["images"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]
            )
        )
        for branch, ch in (("box", 64), ("cls", nc), ("ang", 1)):
            out = f"{branch}{s}"
            nodes.append(helper.make_node("Conv", [f"p{s}", f"w_{out}", f"b_{out}"], [out]))
            inits += [
                _init(f"w_{out}", rng.normal(0, 1.0, (ch, 3, 1, 1))),
                _init(f"b_{out}", rng.normal(0, 0.5, (ch,))),
            ]
            outputs.append(
                helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, ch, DET // s, DET // s])
            )
            names.append(out)
    graph = helper.make_graph(
        nodes,
        "detector_cut",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, DET, DET])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return names


def calib_pixels(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def embedder_spec(hef: HefSpec | None = None) -> EmbedderSpec:
    return EmbedderSpec(
        file="embedder.onnx",
        sha256="0" * 64,
        input=InputSpec(height=EMB_H, width=EMB_W, mean=MEAN, std=STD),
        input_name="images",
        output_name="embedding",
        embedding_dim=EMB_D,
        max_batch=4,
        hef=hef,
    )


def detector_spec(hef: HefSpec | None = None) -> DetectorSpec:
    return DetectorSpec(
        file="detector.onnx",
        sha256="0" * 64,
        input=InputSpec(height=DET, width=DET, resize="letterbox"),
        output_name="output0",
        hef=hef,
    )


def load_fake_hailo(monkeypatch: Any) -> Any:
    """Put tests/fakes on sys.path and import the hailo_platform test double with a fresh chip."""
    monkeypatch.syspath_prepend(str(FAKES))
    for name in [
        m for m in sys.modules if m == "hailo_platform" or m.startswith("hailo_platform.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    hp = importlib.import_module("hailo_platform")
    hp.reset_fake_state()
    return hp


def unload_fake_hailo() -> None:
    for name in [
        m for m in sys.modules if m == "hailo_platform" or m.startswith("hailo_platform.")
    ]:
        del sys.modules[name]


def build_hailo_bundle(
    root: Path, *, arch: str = "hailo8l", latency_ms: float = 0.0
) -> tuple[EmbedderSpec, DetectorSpec]:
    """embedder.onnx/.hef and detector.onnx (the cut graph)/.hef in `root`; specs that name them."""
    from tests.fakes.hailo_platform.hef_tool import make_fake_hef

    embedder_onnx(root / "embedder.onnx")
    emb_names = make_fake_hef(
        root / "embedder.onnx",
        root / "embedder.hef",
        arch=arch,
        height=EMB_H,
        width=EMB_W,
        mean=MEAN,
        std=STD,
        calib_pixels=calib_pixels(16, EMB_H, EMB_W),
        latency_ms=latency_ms,
    )
    onnx_names = detector_cut_onnx(root / "detector.onnx")
    det_names = make_fake_hef(
        root / "detector.onnx",
        root / "detector.hef",
        arch=arch,
        height=DET,
        width=DET,
        mean=(0.0, 0.0, 0.0),
        std=(255.0, 255.0, 255.0),
        calib_pixels=calib_pixels(8, DET, DET),
        output_onnx_names=onnx_names,
        output_names=[f"det/{n}" for n in onnx_names],
        latency_ms=latency_ms,
    )
    emb = embedder_spec(
        HefSpec(file="embedder.hef", sha256="0" * 64, arch=arch, output_names=tuple(emb_names))
    )  # type: ignore[arg-type]
    det = detector_spec(
        HefSpec(file="detector.hef", sha256="0" * 64, arch=arch, output_names=tuple(det_names))
    )  # type: ignore[arg-type]
    return emb, det
