"""Inference backends: one module, one KEY, one class per backend, imported lazily.

Importing this package imports no onnxruntime and no hailo_platform; `load_backend` does, on use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from edge.errors import BackendUnavailableError

# key -> "module:Class"; modules import their heavy library inside `load`.
REGISTRY: dict[str, str] = {
    "onnx": "edge.backends.onnx:OnnxBackend",
    "hailo": "edge.backends.hailo:HailoBackend",
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]
    dtype: str


@runtime_checkable
class Backend(Protocol):
    """A loaded model on some accelerator. Only `run` touches hardware."""

    key: str
    # True where the model normalises on the device and `run` wants uint8 NHWC pixels in the
    # model's colour order (edge.recognize.embed.pixel_spec); read with edge.recognize.embed.takes_pixels.
    takes_pixels: bool

    def run(self, inputs: npt.NDArray[Any]) -> dict[str, npt.NDArray[np.float32]]:
        """Run one batch; return every output by name, dequantised to float32."""
        ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What runs where, for /v1/status and logs."""
        ...


def backend_class(key: str) -> type[Any]:
    """Resolve a registry key to its class, importing the module lazily."""
    try:
        target = REGISTRY[key]
    except KeyError as e:
        raise BackendUnavailableError(
            f"unknown backend {key!r}", f"choose one of {', '.join(sorted(REGISTRY))}"
        ) from e
    module_name, _, cls_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Any] = getattr(module, cls_name)
    return cls
