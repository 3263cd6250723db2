"""Hailo-8/8L backend over HailoRT 4.x's async InferModel API (`hailo_platform`, imported lazily).

One VDevice per process, shared (refcounted) by every model, with the ROUND_ROBIN scheduler so
detector and embedder take turns on one chip; with `hailo.multi_process_service` the VDevice
joins hailort_service's group so other processes can share the chip. Inputs go to the chip as
NHWC uint8 pixels (mean/std live inside the HEF); callers may pass either that or the ONNX
path's normalised float tensor, which is mapped back to pixels here. `run` returns what
OnnxBackend returns: for the embedder the (N, D) embedding under the manifest's output name;
for the detector the (1, 4+nc+1, N) tensor decoded on the host from the nine cut-head outputs
(edge/recognize/obb_head.py), plus those raw outputs by stream name. A timeout raises
BackendTimeoutError and restarts the model; it never returns zeros.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import DetectorSpec, InputSpec, ModelSpec
from edge.config import HailoSettings
from edge.errors import BackendError, BackendTimeoutError, BackendUnavailableError

logger = logging.getLogger(__name__)

KEY = "hailo"
FloatArray = npt.NDArray[np.float32]

_SHARED_LOCK = threading.Lock()
_shared: dict[str, Any] = {"vdevice": None, "refs": 0, "settings": None}

_STATUS_HINTS = {
    "HAILO_OUT_OF_PHYSICAL_DEVICES": (
        "the Hailo device is busy in another process",
        "stop the other process, or run hailort_service and set hailo.multi_process_service=true "
        "in every process sharing the chip",
    ),
    "HAILO_INVALID_DRIVER_VERSION": (
        "the HailoRT library and the PCIe driver versions differ",
        "install matching versions (Raspberry Pi OS: `sudo apt install --reinstall hailo-all`) "
        "and reboot",
    ),
    "HAILO_INVALID_HEF": (
        "the HEF does not fit this device (compiled for another arch or corrupt)",
        "recompile with `cardedge-train compile-hef --arch` matching `hailortcli fw-control identify`",
    ),
}


def _hailo() -> Any:
    try:
        return importlib.import_module("hailo_platform")
    except ImportError as e:
        raise BackendUnavailableError(
            "hailo_platform is not installed", "install HailoRT 4.x (`sudo apt install hailo-all`)"
        ) from e


def _timeout_exceptions() -> tuple[type[BaseException], ...]:
    """HailoRTTimeout lives in hailo_platform.pyhailort.pyhailort (not re-exported by 4.x)."""
    try:
        mod = importlib.import_module("hailo_platform.pyhailort.pyhailort")
    except ImportError:
        return ()
    exc = getattr(mod, "HailoRTTimeout", None)
    return (exc,) if isinstance(exc, type) else ()


def _translate(e: Exception, what: str) -> BackendError:
    """A HailoRT exception -> a typed BackendError with a fix hint for the known field failures."""
    text = str(e)
    if type(e).__name__ == "HailoRTInvalidHEFException" and "HAILO_INVALID_HEF" not in text:
        text = f"{text} (HAILO_INVALID_HEF)"
    for status, (message, hint) in _STATUS_HINTS.items():
        if status in text:
            return BackendUnavailableError(f"{what}: {message} ({text})", hint)
    return BackendError(f"{what}: {text}", "see `cardedge doctor` and /var/log/hailort.log")


def acquire_vdevice(settings: HailoSettings) -> Any:
    """The process-wide VDevice (created on first use, ROUND_ROBIN scheduler), refcounted."""
    with _SHARED_LOCK:
        if _shared["vdevice"] is None:
            hp = _hailo()
            params = hp.VDevice.create_params()
            params.scheduling_algorithm = hp.HailoSchedulingAlgorithm.ROUND_ROBIN
            if settings.multi_process_service:
                params.multi_process_service = True
                params.group_id = settings.group_id
            try:
                _shared["vdevice"] = hp.VDevice(params)
            except Exception as e:
                raise _translate(e, "cannot open the Hailo device") from e
            _shared["settings"] = settings
            logger.info(
                "hailo VDevice opened (ROUND_ROBIN, multi_process_service=%s)",
                settings.multi_process_service,
            )
        _shared["refs"] += 1
        return _shared["vdevice"]


def release_vdevice() -> None:
    """Drop one reference; the last one releases the device."""
    with _SHARED_LOCK:
        if _shared["refs"] <= 0:
            return
        _shared["refs"] -= 1
        if _shared["refs"] == 0 and _shared["vdevice"] is not None:
            _shared["vdevice"].release()
            _shared["vdevice"] = None
            logger.info("hailo VDevice released")


def to_device_pixels(x: npt.NDArray[Any], spec: InputSpec) -> npt.NDArray[np.uint8]:
    """A model input batch -> N x H x W x 3 uint8 pixels, what the HEF's input stream takes.

    uint8 NHWC passes through; the ONNX path's tensor (spec layout, normalised with spec
    mean/std) is mapped back exactly, since it was made from integer pixels.
    """
    a = np.asarray(x)
    if a.ndim == 3:
        a = a[None]
    if a.dtype == np.uint8 and a.shape[-1] == 3:
        return np.ascontiguousarray(a)
    if spec.layout == "NCHW" or (a.shape[1] == 3 and a.shape[-1] != 3):
        a = a.transpose(0, 2, 3, 1)
    if a.dtype != np.uint8:
        a = a.astype(np.float32) * np.asarray(spec.std, np.float32) + np.asarray(
            spec.mean, np.float32
        )
        a = np.clip(np.rint(a), 0, 255)
    return np.ascontiguousarray(a, dtype=np.uint8)


class HailoBackend:
    """One HEF on the shared VDevice via the async InferModel API."""

    key = KEY

    def __init__(
        self,
        hef_path: Path,
        *,
        input_spec: InputSpec,
        settings: HailoSettings,
        max_batch: int = 1,
        output_name: str | None = None,
        detector: DetectorSpec | None = None,
        hef_arch: str = "",
    ) -> None:
        self.path = Path(hef_path)
        self.spec = input_spec
        self.settings = settings
        self.max_batch = max(1, max_batch)
        self._output_name = output_name
        self._detector = detector
        self._hef_arch = hef_arch
        self._lock = threading.Lock()
        self._timeouts = _timeout_exceptions()
        self.restarts = 0
        self.last_forward_ms = 0.0
        self._closed = False
        self._vdevice = acquire_vdevice(settings)
        try:
            self._configure()
        except Exception:
            release_vdevice()
            raise

    @classmethod
    def from_spec(
        cls, role: str, spec: ModelSpec, bundle_dir: Path, settings: HailoSettings
    ) -> HailoBackend:
        """Build from a manifest model entry (its HefSpec, input spec, output names)."""
        if spec.hef is None:
            raise BackendUnavailableError(f"{role}: the bundle has no HEF")
        max_batch = getattr(spec, "max_batch", 1)
        return cls(
            bundle_dir / spec.hef.file,
            input_spec=spec.input,
            settings=settings,
            max_batch=max_batch,
            output_name=spec.output_name,
            detector=spec if isinstance(spec, DetectorSpec) else None,
            hef_arch=spec.hef.arch,
        )

    # -- set-up

    def _configure(self) -> None:
        hp = _hailo()
        try:
            model = self._vdevice.create_infer_model(str(self.path))
            model.set_batch_size(self.max_batch)
            model.input().set_format_type(hp.FormatType.UINT8)
            want_float = self.settings.output_format == "float32"
            out_type = hp.FormatType.FLOAT32 if want_float else hp.FormatType.UINT8
            self._outputs = list(model.output_names)
            for name in self._outputs:
                model.output(name).set_format_type(out_type)
            self._configured = model.configure()
        except BackendError:
            raise
        except Exception as e:
            raise _translate(e, f"cannot load {self.path.name}") from e
        self._model = model
        self._input_shape = tuple(int(d) for d in model.input().shape)
        self._out_shapes = {n: tuple(int(d) for d in model.output(n).shape) for n in self._outputs}
        self._out_dtype = np.float32 if want_float else np.uint8
        self._quant = {n: self._quant_info(model.output(n)) for n in self._outputs}
        logger.info(
            "hailo backend loaded %s: input %s, outputs %s",
            self.path.name,
            self._input_shape,
            self._out_shapes,
        )

    @staticmethod
    def _quant_info(stream: Any) -> tuple[float, float]:
        q = stream.quant_infos[0]
        return float(q.qp_zp), float(q.qp_scale)

    def _restart(self) -> None:
        """Drop the configured model (its queue may hold a hung job) and configure it afresh."""
        self.restarts += 1
        logger.warning(
            "hailo backend %s: restarting after a failure (restart %d)",
            self.path.name,
            self.restarts,
        )
        try:
            self._configured.shutdown()
        except Exception as e:  # a wedged pipeline may refuse; we replace it anyway
            logger.debug("shutdown during restart failed: %s", e)
        self._configure()

    # -- inference

    @property
    def input_name(self) -> str:
        return str(self._model.input().name)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-frame NHWC shape the chip takes, with a leading batch of 1."""
        return (1, *self._input_shape)

    input_layout = "NHWC"
    takes_pixels = True  # mean/std live in the model script: run() wants uint8 NHWC pixels

    def run(self, inputs: npt.NDArray[Any]) -> dict[str, FloatArray]:
        """Run a batch (chunks of max_batch); outputs as OnnxBackend returns them, float32."""
        if self._closed:
            raise BackendError("hailo backend is closed")
        pixels = to_device_pixels(inputs, self.spec)
        if pixels.shape[1:] != self._input_shape:
            raise BackendError(
                f"input {pixels.shape[1:]} does not match the HEF input {self._input_shape}"
            )
        t0 = time.perf_counter()
        chunks = [
            self._infer(pixels[i : i + self.max_batch])
            for i in range(0, len(pixels), self.max_batch)
        ]
        raw = {n: np.concatenate([c[n] for c in chunks]) for n in self._outputs}
        self.last_forward_ms = (time.perf_counter() - t0) * 1000.0
        return self._present(raw)

    def _infer(self, frames: npt.NDArray[np.uint8]) -> dict[str, FloatArray]:
        timeout = self.settings.timeout_ms
        try:
            with self._lock:
                configured = self._configured
                configured.wait_for_async_ready(timeout_ms=timeout, frames_count=len(frames))
                bindings, outs = [], []
                for frame in frames:
                    b = configured.create_bindings()
                    b.input().set_buffer(np.ascontiguousarray(frame))
                    per = {
                        n: np.empty(self._out_shapes[n], dtype=self._out_dtype)
                        for n in self._outputs
                    }
                    for n, buf in per.items():
                        b.output(n).set_buffer(buf)
                    bindings.append(b)
                    outs.append(per)
                job = configured.run_async(bindings)
            job.wait(timeout)
        except Exception as e:
            if self._timeouts and isinstance(e, self._timeouts):
                self._restart_quietly()
                raise BackendTimeoutError(
                    f"hailo inference on {self.path.name} timed out after {timeout} ms",
                    "the backend was restarted; if this repeats run `cardedge doctor`",
                ) from e
            self._restart_quietly()
            raise _translate(e, f"hailo inference on {self.path.name} failed") from e
        return {n: self._dequantise(n, np.stack([o[n] for o in outs])) for n in self._outputs}

    def _restart_quietly(self) -> None:
        with self._lock:
            try:
                self._restart()
            except BackendError as e:
                logger.error("hailo backend restart failed: %s", e)

    def _dequantise(self, name: str, q: npt.NDArray[Any]) -> FloatArray:
        if q.dtype == np.float32:
            return q
        zp, scale = self._quant[name]
        return ((q.astype(np.float32) - zp) * scale).astype(np.float32)

    def _present(self, raw: dict[str, FloatArray]) -> dict[str, FloatArray]:
        """Shape outputs as the ONNX graph's: (N, D) embeddings. A detector's nine cut-head
        outputs are returned as the chip gave them (dequantised): the Detector finishes the head
        on the host (edge.recognize.obb_head.raw_detector_output) with its confidence threshold, so the
        DFL decode runs only on the anchors that can become boxes."""
        if self._detector is None and self._output_name and len(raw) == 1:
            (only,) = raw.values()
            return {self._output_name: only.reshape(len(only), -1)}
        return raw

    def describe(self) -> dict[str, Any]:
        return {
            "backend": KEY,
            "file": self.path.name,
            "arch": self._hef_arch,
            "input": list(self._input_shape),
            "outputs": {n: list(s) for n, s in self._out_shapes.items()},
            "output_format": self.settings.output_format,
            "max_batch": self.max_batch,
            "multi_process_service": self.settings.multi_process_service,
            "restarts": self.restarts,
        }

    def close(self) -> None:
        """Shut the model down and release this backend's hold on the shared VDevice."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            try:
                self._configured.shutdown()
            except Exception as e:
                logger.debug("hailo shutdown: %s", e)
        release_vdevice()
