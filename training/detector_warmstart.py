"""Start a detector run from a shipped detector: a bundle's YOLO11n-OBB ONNX back into weights.

A device bundle carries its detector as ONNX only, and a run trained from scratch needs hours on
a CPU to reach what the shipped detector already knows. ultralytics exports with every
convolution fused with its batch norm, and the ONNX initialisers keep the PyTorch module names
(`model.0.conv.weight`, `model.0.conv.bias`, ...), so the weights go back one to one: each fused
convolution's weight into the conv, its bias into a batch norm set to the identity plus that
bias (mean 0, variance 1 - eps, scale 1). The class logits are copied class by class where the
new dataset keeps the old class names (a detector of `card` starting a `card` + `back` run keeps
its `card` logits; `back` starts from the head's own initialisation).

`checkpoint_from_onnx` checks its work: the rebuilt model's outputs must match the ONNX's on the
same input, else it refuses (a model exported by other means, another architecture).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PARITY_ATOL = 1e-3  # boxes as a share of the input, scores, angles: fp32 round-off is far below


class WarmStartError(ValueError):
    """The ONNX cannot become the run's starting weights (and why)."""


def checkpoint_from_onnx(
    onnx_path: Path, out: Path, names: dict[int, str], model_yaml: str = "yolo11n-obb.yaml"
) -> Path:
    """Write a YOLO checkpoint at `out` holding `onnx_path`'s weights in a `model_yaml` model
    with the classes `names` (the new run's); returns `out`."""
    import onnx
    import torch
    from onnx import numpy_helper
    from ultralytics.nn.tasks import OBBModel

    from training.bundle_build import detector_classes

    proto = onnx.load(str(onnx_path))
    init = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    old_names = dict(enumerate(detector_classes(onnx_path)))
    model = OBBModel(model_yaml, nc=len(names), verbose=False)
    modules = dict(model.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)]
    missing = [n for n in convs if f"{n}.weight" not in init]
    if missing:
        raise WarmStartError(
            f"{onnx_path.name} is not a fused {model_yaml} export: no weights for "
            f"{len(missing)} of {len(convs)} convolutions (e.g. {missing[0]})"
        )
    # new class -> old class, by name (class logits are the only layers whose shape follows nc)
    keep = {new: old for old, o in old_names.items() for new, n in names.items() if n == o}
    with torch.no_grad():
        for name in convs:
            conv = modules[name]
            weight = torch.from_numpy(np.array(init[f"{name}.weight"]))
            bias_np = init.get(f"{name}.bias")
            bias = torch.from_numpy(np.array(bias_np)) if bias_np is not None else None
            if weight.shape != conv.weight.shape:
                _copy_classes(conv, weight, bias, keep, name)
                continue
            conv.weight.copy_(weight)
            if bias is None:
                continue
            if conv.bias is not None:
                conv.bias.copy_(bias)
                continue
            parent = modules[name.rsplit(".", 1)[0]]
            bn = getattr(parent, "bn", None)
            if not isinstance(bn, torch.nn.BatchNorm2d):
                raise WarmStartError(f"{name} has a bias in the ONNX but no batch norm here")
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
    _check_parity(model, proto, keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.names = dict(names)
    model.args = {"imgsz": _onnx_imgsz(proto), "task": "obb"}
    model.task = "obb"
    torch.save({"model": model, "train_args": {}, "epoch": -1}, out)
    logger.info(
        "warm start: %s -> %s (%d convolutions; classes kept by name: %s)",
        onnx_path.name, out, len(convs), {names[k]: old_names[v] for k, v in keep.items()},
    )  # fmt: skip
    return out


def _copy_classes(conv: Any, weight: Any, bias: Any, keep: dict[int, int], name: str) -> None:
    """A class-logit layer of another class count: copy the classes both runs name."""
    if weight.shape[1:] != conv.weight.shape[1:] or conv.bias is None or bias is None:
        raise WarmStartError(
            f"{name}: shape {tuple(weight.shape)} in the ONNX, {tuple(conv.weight.shape)} here"
        )
    for new, old in keep.items():
        conv.weight[new].copy_(weight[old])
        conv.bias[new].copy_(bias[old])


def _onnx_imgsz(proto: Any) -> list[int]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [int(dims[2].dim_value), int(dims[3].dim_value)]


def _check_parity(model: Any, proto: Any, keep: dict[int, int]) -> None:
    """Boxes, kept classes' scores and angles of the rebuilt model against the ONNX's, on one
    input at the ONNX's own size."""
    import onnxruntime as ort
    import torch

    h, w = _onnx_imgsz(proto)
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: x})[0]
    model.eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x))
    got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
    old_nc = ref.shape[1] - 5
    rows_ref = [0, 1, 2, 3, *(4 + old for old in keep.values()), 4 + old_nc]
    rows_got = [0, 1, 2, 3, *(4 + new for new in keep), got.shape[1] - 1]
    if got.shape[2] != ref.shape[2]:
        raise WarmStartError(f"{ref.shape[2]} anchors in the ONNX, {got.shape[2]} here")
    diff = np.abs(got[:, rows_got] - ref[:, rows_ref])
    diff[:, :4] /= max(h, w)  # box coordinates as a share of the input, scores and angles as is
    err = float(diff.max())
    if err > PARITY_ATOL:
        raise WarmStartError(f"rebuilt weights differ from the ONNX by {err:.4g} (> {PARITY_ATOL})")
    logger.info("warm start parity: max |difference| %.2e over %d outputs", err, len(rows_ref))
