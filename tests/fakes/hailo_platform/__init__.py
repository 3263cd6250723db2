"""TEST DOUBLE of HailoRT 4.x's Python package `hailo_platform` -- not the real library.

Importable only when a test puts tests/fakes on sys.path (fixture `fake_hailo` in the Hailo
tests); never installed. See pyhailort/pyhailort.py for what it imitates and how it computes
real outputs, and hef_tool.py for the double's own HEF format.
"""

from hailo_platform.pyhailort import pyhailort as _impl
from hailo_platform.pyhailort.pyhailort import (
    AsyncInferJob,
    ConfiguredInferModel,
    Device,
    FormatOrder,
    FormatType,
    HailoRTException,
    HailoRTStreamAbortedByUser,
    HailoSchedulingAlgorithm,
    InferModel,
    VDevice,
    reset_fake_state,
)

__version__ = "4.23.0"


def __getattr__(name: str) -> object:
    # `fake_state` is replaced by reset_fake_state(); always hand out the current one.
    if name == "fake_state":
        return _impl.fake_state
    raise AttributeError(name)


__all__ = [
    "AsyncInferJob",
    "ConfiguredInferModel",
    "Device",
    "FormatOrder",
    "FormatType",
    "HailoRTException",
    "HailoRTStreamAbortedByUser",
    "HailoSchedulingAlgorithm",
    "InferModel",
    "VDevice",
    "reset_fake_state",
]
