"""RECORDING TEST DOUBLE of the Hailo Dataflow Compiler's `hailo_sdk_client` -- not the real one.

Imitates the calls cardedge's compile step makes, with the names of the DFC Python API
(Hailo Dataflow Compiler user guide, "ClientRunner"): ClientRunner(hw_arch=...),
translate_onnx_model(model, net_name, start_node_names, end_node_names, net_input_shapes),
load_model_script(text), optimize(calib_data), infer_context(InferenceContext.SDK_QUANTIZED)
+ infer(ctx, data), compile() -> HEF bytes, get_hn_dict(), save_har(path). Every call is
recorded in `ClientRunner.calls`. The "emulator" parses the normalisation out of the loaded
model script, applies it to the NHWC 0-255 input and runs the translated ONNX graph (up to
the end nodes) with onnxruntime, returning NHWC outputs -- so a wrong calibration domain or a
missing normalisation shows up as a parity failure, as on the real emulator. Set
`ClientRunner.emulation_noise` to degrade the emulation on purpose.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from enum import Enum
from typing import Any

import numpy as np

instances: list[ClientRunner] = []


class InferenceContext(Enum):
    SDK_NATIVE = "native"
    SDK_FP_OPTIMIZED = "fp_optimized"
    SDK_QUANTIZED = "quantized"


class ClientRunner:
    emulation_noise = 0.0

    def __init__(self, hw_arch: str = "hailo8", har: str | None = None) -> None:
        self.hw_arch = hw_arch
        self.calls: list[tuple[str, Any]] = [("__init__", {"hw_arch": hw_arch})]
        self._onnx: str | None = None
        self._name = ""
        self._ends: list[str] | None = None
        self._script = ""
        instances.append(self)

    def translate_onnx_model(
        self,
        model: str,
        net_name: str,
        start_node_names: list[str] | None = None,
        end_node_names: list[str] | None = None,
        net_input_shapes: dict[str, list[int]] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self.calls.append(
            (
                "translate_onnx_model",
                {
                    "model": model,
                    "net_name": net_name,
                    "start_node_names": start_node_names,
                    "end_node_names": end_node_names,
                    "net_input_shapes": net_input_shapes,
                },
            )
        )
        self._onnx, self._name, self._ends = model, net_name, end_node_names
        return self.get_hn_dict(), {}

    def load_model_script(self, text: str) -> None:
        self.calls.append(("load_model_script", text))
        self._script = text

    def optimize(self, calib_data: Any) -> None:
        self.calls.append(
            (
                "optimize",
                {"shape": tuple(np.shape(calib_data)), "dtype": str(np.asarray(calib_data).dtype)},
            )
        )

    @contextlib.contextmanager
    def infer_context(self, target: InferenceContext) -> Iterator[InferenceContext]:
        self.calls.append(("infer_context", target))
        yield target

    def _output_tensors(self) -> tuple[Any, list[str]]:
        import onnx

        model = onnx.load(str(self._onnx))
        if not self._ends:
            return model, [o.name for o in model.graph.output]
        by_node = {n.name: n.output[0] for n in model.graph.node}
        return model, [by_node[n] for n in self._ends]

    def infer(self, context: InferenceContext, dataset: Any) -> Any:
        import onnxruntime as ort

        self.calls.append(("infer", {"context": context, "shape": tuple(np.shape(dataset))}))
        m = re.search(r"normalization\(\[([^\]]*)\],\s*\[([^\]]*)\]\)", self._script)
        mean = (
            np.array([float(v) for v in m.group(1).split(",")], np.float32)
            if m
            else np.zeros(3, np.float32)
        )
        std = (
            np.array([float(v) for v in m.group(2).split(",")], np.float32)
            if m
            else np.ones(3, np.float32)
        )
        x = ((np.asarray(dataset, np.float32) - mean) / std).transpose(0, 3, 1, 2)
        model, names = self._output_tensors()
        extracted = model
        if self._ends:
            import onnx.utils

            extracted = onnx.utils.Extractor(
                onnx.shape_inference.infer_shapes(model)
            ).extract_model([model.graph.input[0].name], names)
        sess = ort.InferenceSession(
            extracted.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        in_name = sess.get_inputs()[0].name
        runs = [sess.run(names, {in_name: x[i : i + 1]}) for i in range(len(x))]
        rng = np.random.default_rng(0)
        outs = []
        for k in range(len(names)):
            y = np.concatenate([r[k] for r in runs])
            if self.emulation_noise:
                y = y + rng.normal(0, self.emulation_noise, y.shape).astype(np.float32)
            outs.append(y.transpose(0, 2, 3, 1) if y.ndim == 4 else y)
        return outs if len(outs) > 1 else outs[0]

    def get_hn_dict(self) -> dict[str, Any]:
        ends = self._ends or ["output"]
        layers = {
            f"output_layer{i + 1}": {"type": "output_layer", "original_names": [n]}
            for i, n in enumerate(ends)
        }
        # the compiler orders outputs its own way: reversed, to prove the mapping is by name
        order = list(reversed(list(layers)))
        return {"name": self._name, "layers": layers, "net_params": {"output_layers_order": order}}

    def compile(self) -> bytes:
        self.calls.append(("compile", None))
        return b"RECORDED-HEF:" + self.hw_arch.encode() + b":" + self._name.encode()

    def save_har(self, path: str) -> None:
        self.calls.append(("save_har", path))
