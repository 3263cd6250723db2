"""ONNX Runtime backend (CPU provider): the portable path every bundle can run on.

onnxruntime is imported inside `OnnxBackend.__init__`, so importing this module (or the backend
registry) stays cheap on hosts that never use it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import BackendError, BackendUnavailableError

logger = logging.getLogger(__name__)

KEY = "onnx"

_ORT_TO_NUMPY: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _concrete_shape(shape: list[Any]) -> tuple[int, ...]:
    """An ONNX input shape with every dynamic dimension (a name or None) set to 1, for warm-up."""
    return tuple(d if isinstance(d, int) and d > 0 else 1 for d in shape)


class OnnxBackend:
    """One ONNX model in an onnxruntime InferenceSession, tuned for single-request latency."""

    key = KEY
    takes_pixels = False

    def __init__(self, path: Path, *, threads: int = 0, spinning: bool = False) -> None:
        """Load `path` on the CPU provider with `threads` intra-op threads (0: ORT's default);
        `spinning` lets idle workers busy-wait for the next run instead of sleeping.

        Raises BackendUnavailableError when onnxruntime is missing and BackendError when the file
        cannot be loaded or fails its warm-up run.
        """
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError(
                "onnxruntime is not installed", "pip install onnxruntime (a runtime dependency)"
            ) from e
        self.path = Path(path)
        self.threads = threads
        self.spinning = spinning
        self._ort_version: str = ort.__version__
        self._session = self._open_session(ort, self.path, threads, spinning)
        first = self._session.get_inputs()[0]
        self._input_name: str = first.name
        self._input_shape: tuple[int | str, ...] = tuple(
            d if isinstance(d, int) else str(d) for d in first.shape
        )
        self._input_dtype = _ORT_TO_NUMPY.get(first.type, np.float32)
        self._output_names: list[str] = [o.name for o in self._session.get_outputs()]
        self.warmup_ms = self._warm_up(first.shape)
        logger.info(
            "onnx backend loaded %s (input %s %s, threads=%s, warm-up %.1f ms)",
            self.path.name,
            self._input_name,
            self._input_shape,
            threads or "default",
            self.warmup_ms,
        )

    @staticmethod
    def _open_session(ort: Any, path: Path, threads: int, spinning: bool) -> Any:
        """Create the InferenceSession; a missing or malformed file becomes a BackendError."""
        if not path.is_file():
            raise BackendError(
                f"ONNX model {path.name} not found",
                "check the bundle: the manifest names a file that is not there",
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        opts.log_severity_level = 3  # errors only; ORT's warnings are noise on a device console
        try:
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped exceptions
            raise BackendError(
                f"cannot load ONNX model {path.name}: {e}",
                "the file is corrupt or was exported with an opset this onnxruntime lacks; "
                "re-export it or upgrade onnxruntime",
            ) from e

    def _warm_up(self, shape: list[Any]) -> float:
        """One run on zeros so the first real request does not pay for allocation and tuning."""
        zeros = np.zeros(_concrete_shape(shape), dtype=self._input_dtype)
        t0 = time.perf_counter()
        self.run(zeros)
        return (time.perf_counter() - t0) * 1000.0

    @property
    def input_name(self) -> str:
        """Name of the model's (first) input."""
        return self._input_name

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        """Declared input shape; dynamic dimensions are given by their symbolic name."""
        return self._input_shape

    @property
    def output_names(self) -> list[str]:
        """Output names in graph order."""
        return list(self._output_names)

    def run(self, inputs: npt.NDArray[Any]) -> dict[str, npt.NDArray[np.float32]]:
        """Run one batch; every output by name as float32."""
        if self._session is None:
            raise BackendError(
                f"ONNX backend for {self.path.name} is closed", "load the bundle again"
            )
        try:
            outs = self._session.run(self._output_names, {self._input_name: inputs})
        except Exception as e:  # onnxruntime raises its own untyped exceptions
            raise BackendError(
                f"ONNX Runtime failed on {self.path.name}: {e}",
                f"the input must be {self._input_shape} {np.dtype(self._input_dtype).name}; "
                f"got {tuple(inputs.shape)} {inputs.dtype}",
            ) from e
        return {
            name: np.asarray(out, dtype=np.float32)
            for name, out in zip(self._output_names, outs, strict=True)
        }

    def describe(self) -> dict[str, Any]:
        """What runs where, for /v1/status and logs."""
        return {
            "backend": KEY,
            "model": self.path.name,
            "provider": "CPUExecutionProvider",
            "onnxruntime": self._ort_version,
            "threads": self.threads,
            "spinning": self.spinning,
            "input": {"name": self._input_name, "shape": list(self._input_shape)},
            "outputs": list(self._output_names),
            "warmup_ms": round(self.warmup_ms, 2),
        }

    def close(self) -> None:
        """Drop the session; ORT frees its memory when the last reference goes."""
        self._session = None
