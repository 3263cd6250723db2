"""TEST DOUBLE of HailoRT 4.x's `hailo_platform.pyhailort.pyhailort` (no chip, no driver).

Imitates the subset of the Python API that cardedge uses, with the names, signatures and error
classes of HailoRT 4.x's pyhailort.py (github.com/hailo-ai/hailort, bindings/python) and the
"Python Async Inference Tutorial" of the HailoRT user guide: Device.scan(), Device(id).control.
identify().device_architecture, VDevice(params) / VDevice.create_params() with
scheduling_algorithm, group_id, multi_process_service; create_infer_model(hef_path) ->
InferModel with input()/output(name) streams (.name .shape .format .quant_infos,
set_format_type), set_batch_size, configure() -> ConfiguredInferModel (context manager),
create_bindings(), bindings.input().set_buffer / bindings.output(name).set_buffer,
run(bindings, timeout), run_async(bindings, callback) -> AsyncInferJob.wait(timeout_ms),
wait_for_async_ready(timeout_ms, frames_count), shutdown().

Behind the API it computes real outputs: a fake HEF (JSON, see hef_tool.py, this double's own
format) points at an ONNX graph; inputs are NHWC uint8 pixels that the double normalises with
the mean/std "compiled into" the HEF, quantises to 8 bits, runs with onnxruntime, and quantises
every output with the scale / zero point recorded from calibration statistics. FLOAT32 outputs
are dequantised as (q - zero_point) * scale; UINT8 outputs hand back q. Device time is modelled
by one device lock held for latency_ms per frame (compute happens outside it). Faults are
injected through `hailo_platform.fake_state` (see FakeState).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- errors (as HailoRT)


class HailoRTException(Exception):
    pass


class HailoRTTimeout(HailoRTException):
    pass


class HailoRTInvalidArgumentException(HailoRTException):
    pass


class HailoRTInvalidOperationException(HailoRTException):
    pass


class HailoRTNotFoundException(HailoRTException):
    pass


class HailoRTInvalidHEFException(HailoRTException):
    pass


class HailoRTStreamAbortedByUser(HailoRTException):
    pass


class HailoRTHEFNotCompatibleWithDevice(HailoRTException):
    pass


def _status_error(code: int, name: str) -> HailoRTException:
    return HailoRTException(f"libhailort failed with error: {code} ({name})")


# --------------------------------------------------------------------------- enums


class FormatType(IntEnum):
    AUTO = 0
    UINT8 = 1
    UINT16 = 2
    FLOAT32 = 3


class FormatOrder(IntEnum):
    AUTO = 0
    NHWC = 1
    NC = 5


class HailoSchedulingAlgorithm(IntEnum):
    NONE = 0
    ROUND_ROBIN = 1


class DeviceArchitectureTypes(Enum):
    HAILO8_A0 = 0
    HAILO8 = 1
    HAILO8L = 2


# --------------------------------------------------------------------------- injectable state


@dataclass
class FakeState:
    """What the fake chip looks like and which faults it injects. Reset per test."""

    devices: list[str] = field(default_factory=lambda: ["0000:01:00.0"])
    arch: str = "HAILO8L"
    hailort_version: str = "4.23.0"
    driver_version: str = "4.23.0"
    firmware_version: str = "4.23.0"
    busy_other_process: bool = False  # another process holds the chip without the service
    hang_next: int = 0  # that many next jobs never complete (timeout)
    fail_next: int = 0  # that many next jobs complete with an error status
    latency_ms: dict[str, float] = field(default_factory=dict)  # network name -> ms per frame
    time_scale: float = 1.0  # multiply every latency (0 disables sleeping)
    # records
    vdevices_created: int = 0
    vdevice_params: list[Any] = field(default_factory=list)
    infer_models_configured: int = 0
    jobs: list[tuple[str, int]] = field(default_factory=list)  # (network, frames)
    live_vdevices: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


fake_state = FakeState()
_DEVICE_LOCK = threading.Lock()  # one chip: one job's device time at a time


def reset_fake_state() -> FakeState:
    """Fresh chip for a test; returns it."""
    global fake_state
    fake_state = FakeState()
    return fake_state


# --------------------------------------------------------------------------- Device / control


@dataclass
class _BoardInformation:
    device_architecture: DeviceArchitectureTypes
    board_name: str
    firmware_version: str


class _Control:
    def identify(self) -> _BoardInformation:
        st = fake_state
        return _BoardInformation(DeviceArchitectureTypes[st.arch], "Hailo-8", st.firmware_version)


class Device:
    """Physical device handle (control only; inference goes through VDevice)."""

    def __init__(self, device_id: str | None = None) -> None:
        if not fake_state.devices:
            raise HailoRTException("HailoRT device not found in the system")
        self._device_id = device_id or fake_state.devices[0]
        self._control = _Control()

    @staticmethod
    def scan() -> list[str]:
        return list(fake_state.devices)

    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def control(self) -> _Control:
        return self._control

    def release(self) -> None:
        pass

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *args: Any) -> bool:
        self.release()
        return False


# --------------------------------------------------------------------------- VDevice


@dataclass
class VDeviceParams:
    scheduling_algorithm: HailoSchedulingAlgorithm = HailoSchedulingAlgorithm.NONE
    group_id: str = "UNIQUE"
    multi_process_service: bool = False
    device_count: int = 1


class VDevice:
    """Virtual device. Without the multi-process service only one may be open per chip."""

    def __init__(
        self, params: VDeviceParams | None = None, *, device_ids: list[str] | None = None
    ) -> None:
        self._params = params or VDevice.create_params()
        st = fake_state
        if st.driver_version != st.hailort_version:
            raise _status_error(76, "HAILO_INVALID_DRIVER_VERSION")
        if not st.devices:
            raise _status_error(74, "HAILO_OUT_OF_PHYSICAL_DEVICES")
        with st.lock:
            exclusive_taken = st.live_vdevices > 0 and not self._params.multi_process_service
            if st.busy_other_process or exclusive_taken:
                raise _status_error(74, "HAILO_OUT_OF_PHYSICAL_DEVICES")
            st.live_vdevices += 1
            st.vdevices_created += 1
            st.vdevice_params.append(self._params)
        self._released = False
        self._creation_pid = os.getpid()

    @staticmethod
    def create_params() -> VDeviceParams:
        return VDeviceParams()

    def create_infer_model(self, hef_source: str, network_name: str = "") -> InferModel:
        if self._released:
            raise HailoRTInvalidOperationException("VDevice released")
        if os.getpid() != self._creation_pid:
            raise HailoRTException(
                "InferModel can be created only from the process VDevice was created in."
            )
        return InferModel(_FakeHef.load(Path(hef_source)), self)

    def release(self) -> None:
        if not self._released:
            self._released = True
            with fake_state.lock:
                fake_state.live_vdevices -= 1

    def __enter__(self) -> VDevice:
        return self

    def __exit__(self, *args: Any) -> bool:
        self.release()
        return False


# --------------------------------------------------------------------------- HEF


@dataclass
class QuantInfo:
    qp_zp: float
    qp_scale: float
    limvals_min: float
    limvals_max: float


@dataclass
class _StreamDesc:
    name: str
    onnx_name: str
    shape: tuple[int, ...]  # per frame, NHWC (H, W, C) or (D,)
    quant: QuantInfo


class _FakeHef:
    """The double's own HEF format: JSON pointing at an ONNX graph plus quantisation parameters."""

    def __init__(self, raw: dict[str, Any], base: Path) -> None:
        if raw.get("format") != "cardedge-fake-hef/1":
            raise HailoRTInvalidHEFException("Invalid HEF. See hailort.log for more information")
        self.arch: str = raw["arch"]
        self.network_name: str = raw["network_name"]
        self.onnx_path = base / raw["onnx"]
        inp = raw["input"]
        self.input = _StreamDesc(
            inp["name"], inp["onnx_name"], tuple(inp["shape"]), QuantInfo(**inp["quant"])
        )
        self.mean = np.asarray(inp["mean"], dtype=np.float32)
        self.std = np.asarray(inp["std"], dtype=np.float32)
        self.outputs = [
            _StreamDesc(o["name"], o["onnx_name"], tuple(o["shape"]), QuantInfo(**o["quant"]))
            for o in raw["outputs"]
        ]
        self.latency_ms: float = float(raw.get("latency_ms", 0.0))

    @classmethod
    def load(cls, path: Path) -> _FakeHef:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise HailoRTNotFoundException(f"HEF file {path} not found") from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HailoRTInvalidHEFException(
                "Invalid HEF. See hailort.log for more information"
            ) from e
        hef = cls(raw, path.parent)
        device_arch = fake_state.arch.lower().removesuffix("_a0")
        if hef.arch == "hailo8" and device_arch == "hailo8l":
            raise _hef_incompatible()
        return hef


def _hef_incompatible() -> HailoRTException:
    return HailoRTInvalidHEFException("libhailort failed with error: 26 (HAILO_INVALID_HEF)")


# --------------------------------------------------------------------------- InferModel


@dataclass
class _Format:
    type: FormatType
    order: FormatOrder


class InferModel:
    class InferStream:
        def __init__(self, desc: _StreamDesc, fmt: _Format) -> None:
            self._desc = desc
            self._format = fmt

        @property
        def name(self) -> str:
            return self._desc.name

        @property
        def shape(self) -> tuple[int, ...]:
            return self._desc.shape

        @property
        def format(self) -> _Format:
            return self._format

        @property
        def quant_infos(self) -> list[QuantInfo]:
            return [self._desc.quant]

        def set_format_type(self, type: FormatType) -> None:
            if type not in (FormatType.UINT8, FormatType.FLOAT32, FormatType.AUTO):
                raise HailoRTInvalidArgumentException(f"unsupported format type {type}")
            self._format.type = FormatType.UINT8 if type == FormatType.AUTO else type

    def __init__(self, hef: _FakeHef, vdevice: VDevice) -> None:
        self._hef = hef
        self._vdevice = vdevice
        self._batch_size = 1
        self._input = InferModel.InferStream(hef.input, _Format(FormatType.UINT8, FormatOrder.NHWC))
        order = lambda d: FormatOrder.NC if len(d.shape) == 1 else FormatOrder.NHWC  # noqa: E731
        self._outputs = {
            d.name: InferModel.InferStream(d, _Format(FormatType.UINT8, order(d)))
            for d in hef.outputs
        }

    @property
    def input_names(self) -> list[str]:
        return [self._hef.input.name]

    @property
    def output_names(self) -> list[str]:
        return [d.name for d in self._hef.outputs]

    def input(self, name: str = "") -> InferModel.InferStream:
        if name not in ("", self._hef.input.name):
            raise HailoRTNotFoundException(f"no input {name!r}")
        return self._input

    def output(self, name: str = "") -> InferModel.InferStream:
        if name == "" and len(self._outputs) == 1:
            return next(iter(self._outputs.values()))
        if name not in self._outputs:
            raise HailoRTNotFoundException(f"no output {name!r}")
        return self._outputs[name]

    def set_batch_size(self, batch_size: int) -> None:
        self._batch_size = int(batch_size)

    def configure(self) -> ConfiguredInferModel:
        if self._vdevice._released:
            raise HailoRTInvalidOperationException("VDevice released")
        with fake_state.lock:
            fake_state.infer_models_configured += 1
        return ConfiguredInferModel(self)


class AsyncInferCompletionInfo:
    def __init__(self, exception: HailoRTException | None) -> None:
        self._exception = exception

    @property
    def exception(self) -> HailoRTException | None:
        return self._exception


class AsyncInferJob:
    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: HailoRTException | None = None

    def wait(self, timeout_ms: int) -> None:
        if not self._done.wait(timeout_ms / 1000.0):
            raise HailoRTTimeout(
                "Received a timeout - hailort has failed because a timeout had occurred"
            )
        if self._error is not None:
            raise self._error


class ConfiguredInferModel:
    class Bindings:
        class InferStream:
            def __init__(self, shape: tuple[int, ...], is_input: bool, fmt: _Format) -> None:
                self._shape = shape
                self._is_input = is_input
                self._fmt = fmt
                self._buffer: np.ndarray | None = None

            def set_buffer(self, buffer: np.ndarray) -> None:
                arr = np.asarray(buffer)
                dtype = np.uint8 if self._fmt.type == FormatType.UINT8 else np.float32
                expected = int(np.prod(self._shape)) * np.dtype(dtype).itemsize
                if arr.nbytes != expected or not arr.flags.c_contiguous:
                    raise HailoRTInvalidArgumentException(
                        f"buffer of {arr.nbytes} bytes, expected {expected} C-contiguous bytes"
                    )
                self._buffer = buffer

            def get_buffer(self, tf_format: bool | None = False) -> np.ndarray | None:
                return self._buffer

        def __init__(self, model: InferModel) -> None:
            self._in = self.InferStream(model._hef.input.shape, True, model._input.format)
            self._out = {
                n: self.InferStream(s.shape, False, s.format) for n, s in model._outputs.items()
            }
            self._output_names = list(self._out)

        def input(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            return self._in

        def output(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            if name == "" and len(self._out) == 1:
                return next(iter(self._out.values()))
            if name not in self._out:
                raise HailoRTNotFoundException(f"no output {name!r}")
            return self._out[name]

    _QUEUE = 4

    def __init__(self, model: InferModel) -> None:
        import onnxruntime as ort

        self._model = model
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model._hef.onnx_path), opts, providers=["CPUExecutionProvider"]
        )
        self._pool = ThreadPoolExecutor(max_workers=self._QUEUE, thread_name_prefix="fake-hailo")
        self._inflight = threading.Semaphore(self._QUEUE)
        self._shut = False

    def __enter__(self) -> ConfiguredInferModel:
        return self

    def __exit__(self, *args: Any) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        self._shut = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def get_async_queue_size(self) -> int:
        return self._QUEUE

    def create_bindings(
        self, input_buffers: Any = None, output_buffers: Any = None
    ) -> ConfiguredInferModel.Bindings:
        return ConfiguredInferModel.Bindings(self._model)

    def wait_for_async_ready(self, timeout_ms: int = 1000, frames_count: int = 1) -> None:
        if not self._inflight.acquire(timeout=timeout_ms / 1000.0):
            raise HailoRTTimeout(
                "Received a timeout - hailort has failed because a timeout had occurred"
            )
        self._inflight.release()

    def run(self, bindings: list[ConfiguredInferModel.Bindings], timeout: int) -> None:
        self.run_async(bindings).wait(timeout)

    def run_async(
        self, bindings: list[ConfiguredInferModel.Bindings], callback: Any = None
    ) -> AsyncInferJob:
        if self._shut:
            raise HailoRTStreamAbortedByUser("Stream was aborted")
        for b in bindings:
            if b._in.get_buffer() is None or any(o.get_buffer() is None for o in b._out.values()):
                raise HailoRTInvalidOperationException(
                    "every binding needs input and output buffers"
                )
        job = AsyncInferJob()
        st = fake_state
        with st.lock:
            hang = st.hang_next > 0
            st.hang_next -= int(hang)
            fail = not hang and st.fail_next > 0
            st.fail_next -= int(fail)
            st.jobs.append((self._model._hef.network_name, len(bindings)))
        if hang:
            return job  # never completes: the caller's wait() times out
        self._inflight.acquire()
        self._pool.submit(self._execute, bindings, job, callback, fail)
        return job

    # -- the "chip"

    def _execute(self, bindings: list[Any], job: AsyncInferJob, callback: Any, fail: bool) -> None:
        error: HailoRTException | None = None
        try:
            if fail:
                raise _status_error(8, "HAILO_INTERNAL_FAILURE")
            outputs = self._compute(np.stack([b._in.get_buffer() for b in bindings]))
            hef = self._model._hef
            latency = (
                fake_state.latency_ms.get(hef.network_name, hef.latency_ms) * fake_state.time_scale
            )
            with _DEVICE_LOCK:
                if latency > 0:
                    time.sleep(latency * len(bindings) / 1000.0)
            for name, q in outputs.items():
                for i, b in enumerate(bindings):
                    out = b._out[name]
                    target = out.get_buffer()
                    if out._fmt.type == FormatType.FLOAT32:
                        desc = self._model._outputs[name]._desc.quant
                        target[...] = (
                            (q[i].astype(np.float32) - desc.qp_zp) * desc.qp_scale
                        ).reshape(target.shape)
                    else:
                        target[...] = q[i].reshape(target.shape)
        except HailoRTException as e:
            error = e
        finally:
            self._inflight.release()
        job._error = error
        job._done.set()
        if callback is not None:
            callback(completion_info=AsyncInferCompletionInfo(error))

    def _compute(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 NHWC frames -> quantised uint8 outputs per stream (per frame, stream shape)."""
        hef = self._model._hef
        x = (pixels.astype(np.float32) - hef.mean) / hef.std
        lo = float(((0.0 - hef.mean) / hef.std).min())
        hi = float(((255.0 - hef.mean) / hef.std).max())
        scale = (hi - lo) / 255.0
        x = np.clip(np.rint((x - lo) / scale), 0, 255) * scale + lo  # 8-bit input quantisation
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
        names = [d.onnx_name for d in hef.outputs]
        results = [
            self._session.run(names, {hef.input.onnx_name: x[i : i + 1]}) for i in range(len(x))
        ]
        quantised: dict[str, np.ndarray] = {}
        for k, desc in enumerate(hef.outputs):
            y = np.concatenate([r[k] for r in results])
            if y.ndim == 4:
                y = y.transpose(0, 2, 3, 1)  # the chip emits NHWC
            q = np.clip(np.rint(y / desc.quant.qp_scale + desc.quant.qp_zp), 0, 255).astype(
                np.uint8
            )
            quantised[desc.name] = q.reshape((len(x), *desc.shape))
        return quantised
