"""TEST HELPER: write a HEF for the fake `hailo_platform` (its own JSON format, not a real HEF).

A fake HEF names the ONNX graph the double runs, the target arch, the input normalisation that a
real model script would compile into the network, and per-output 8-bit quantisation (scale,
zero point) derived from calibration statistics: the outputs' min/max over calibration images,
as the Dataflow Compiler derives them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _quant(lo: float, hi: float) -> dict[str, float]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero must be representable
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = float(np.clip(np.rint(-lo / scale), 0, 255))
    return {"qp_zp": zp, "qp_scale": float(scale), "limvals_min": lo, "limvals_max": hi}


def make_fake_hef(
    onnx_path: Path,
    out_path: Path,
    *,
    arch: str,
    height: int,
    width: int,
    mean: Sequence[float],
    std: Sequence[float],
    calib_pixels: np.ndarray,
    output_onnx_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    network_name: str | None = None,
    latency_ms: float = 0.0,
    input_onnx_name: str | None = None,
) -> list[str]:
    """Write a fake HEF next to (or pointing at) `onnx_path`; return its output stream names.

    `calib_pixels` are N x H x W x 3 uint8 images used for the output statistics.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    in_name = input_onnx_name or sess.get_inputs()[0].name
    onnx_outs = list(output_onnx_names or [o.name for o in sess.get_outputs()])
    net = network_name or out_path.stem
    names = list(output_names or [f"{net}/out{i}" for i in range(len(onnx_outs))])
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    x = ((calib_pixels.astype(np.float32) - m) / s).transpose(0, 3, 1, 2)
    runs = [sess.run(onnx_outs, {in_name: x[i : i + 1]}) for i in range(len(x))]
    outputs: list[dict[str, Any]] = []
    for k, (onnx_name, name) in enumerate(zip(onnx_outs, names, strict=True)):
        y = np.concatenate([r[k] for r in runs])
        shape = [*list(y.shape[2:]), y.shape[1]] if y.ndim == 4 else list(y.shape[1:])
        outputs.append(
            {
                "name": name,
                "onnx_name": onnx_name,
                "shape": shape,
                "quant": _quant(float(y.min()), float(y.max())),
            }
        )
    raw = {
        "format": "cardedge-fake-hef/1",
        "arch": arch,
        "network_name": net,
        "onnx": str(Path(onnx_path).resolve().relative_to(out_path.parent.resolve()))
        if Path(onnx_path).resolve().parent == out_path.parent.resolve()
        else str(Path(onnx_path).resolve()),
        "input": {
            "name": f"{net}/input_layer1",
            "onnx_name": in_name,
            "shape": [height, width, 3],
            "mean": list(map(float, mean)),
            "std": list(map(float, std)),
            "quant": {"qp_zp": 0.0, "qp_scale": 1.0, "limvals_min": 0.0, "limvals_max": 255.0},
        },
        "outputs": outputs,
        "latency_ms": latency_ms,
    }
    out_path.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    return names
