"""Choose the backend for one model from what the bundle carries and what the host has.

Rule: the model's HEF runs on Hailo when `hailo_platform` imports, a device is present and the
HEF's target arch fits the device; everything else runs its ONNX graph on ONNX Runtime. The
reason is logged and returned so /v1/status can show which backend runs each model and why.
`runtime.backend = "onnx"` forces ONNX; `"hailo"` demands Hailo and fails with a fix hint.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge.backends import Backend, backend_class
from edge.bundles.manifest import HefSpec, ModelSpec
from edge.config import HailoSettings, RuntimeSettings
from edge.errors import BackendError, BackendUnavailableError

logger = logging.getLogger(__name__)

Role = Literal["detector", "embedder"]

# HEF arch -> device archs it runs on. A Hailo-8 runs Hailo-8L HEFs (slower than a native build);
# a Hailo-8L cannot run a Hailo-8 HEF (HAILO_INVALID_HEF).
_COMPATIBLE: dict[str, frozenset[str]] = {
    "hailo8l": frozenset({"hailo8l", "hailo8"}),
    "hailo8": frozenset({"hailo8"}),
}

INSTALL_HINT = (
    "install HailoRT 4.x for Hailo-8/8L (Raspberry Pi OS: `sudo apt install hailo-all`, then "
    "reboot) and create the venv with --system-site-packages so python3-hailort is visible"
)


@dataclass(frozen=True, slots=True)
class HailoProbe:
    """What the host offers: whether the library imports, which device arch answered, or why not."""

    available: bool
    arch: str | None  # normalised: "hailo8l" / "hailo8" / other lower-case name
    reason: str  # why it is unavailable, empty when available
    version: str | None = None


def normalize_arch(raw: object) -> str:
    """'HAILO8L', 'DeviceArchitectureTypes.HAILO8L', 'HAILO8_B0' -> 'hailo8l' / 'hailo8'."""
    text = str(getattr(raw, "name", raw)).rsplit(".", 1)[-1].strip().lower()
    for suffix in ("_b0", "_a0"):
        text = text.removesuffix(suffix)
    return text


def probe_hailo() -> HailoProbe:
    """Import hailo_platform, scan for devices and identify the first one's architecture."""
    try:
        hp: Any = importlib.import_module("hailo_platform")
    except ImportError as e:
        return HailoProbe(False, None, f"hailo_platform not installed ({e.name or e})")
    version = getattr(hp, "__version__", None)
    try:
        device_ids = list(hp.Device.scan())
    except Exception as e:  # HailoRT raises its own tree; any failure means "no usable device"
        return HailoProbe(False, None, f"device scan failed: {e}", version)
    if not device_ids:
        return HailoProbe(False, None, "no Hailo device found (is /dev/hailo0 there?)", version)
    try:
        device = hp.Device(device_ids[0])
        try:
            arch = normalize_arch(device.control.identify().device_architecture)
        finally:
            release = getattr(device, "release", None)
            if callable(release):
                release()
    except Exception as e:
        return HailoProbe(False, None, f"cannot identify Hailo device: {e}", version)
    return HailoProbe(True, arch, "", version)


def hef_mismatch(hef: HefSpec, device_arch: str) -> str | None:
    """Why this HEF cannot run on `device_arch`, or None when it can."""
    if device_arch in _COMPATIBLE.get(hef.arch, frozenset()):
        return None
    return f"HEF {hef.file} compiled for {hef.arch} but the device is {device_arch}"


def _hailo_blocker(
    role: Role, spec: ModelSpec, bundle_dir: Path, probe: HailoProbe
) -> tuple[str, str] | None:
    """(reason, hint) why the Hailo backend cannot run this model, or None when it can."""
    if spec.hef is None:
        return (
            f"bundle has no HEF for the {role}",
            "compile one with `cardedge-train compile-hef` and rebuild the bundle",
        )
    if not (bundle_dir / spec.hef.file).is_file():
        return f"HEF file {spec.hef.file} missing from the bundle", "reinstall the bundle"
    if not probe.available:
        return probe.reason, INSTALL_HINT
    mismatch = hef_mismatch(spec.hef, probe.arch or "unknown")
    if mismatch:
        return mismatch, f"use a bundle compiled with `compile-hef --arch {probe.arch}`"
    return None


def _load_onnx(spec: ModelSpec, bundle_dir: Path, settings: RuntimeSettings) -> Backend:
    cls = backend_class("onnx")
    backend: Backend = cls(
        bundle_dir / spec.file, threads=settings.onnx_threads, spinning=settings.onnx_spinning
    )
    return backend


def _load_hailo(role: Role, spec: ModelSpec, bundle_dir: Path, hailo: HailoSettings) -> Backend:
    cls = backend_class("hailo")
    backend: Backend = cls.from_spec(role, spec, bundle_dir, hailo)
    return backend


def select_backend(
    role: Role,
    spec: ModelSpec,
    bundle_dir: Path,
    settings: RuntimeSettings,
    *,
    hailo: HailoSettings | None = None,
    probe: HailoProbe | None = None,
) -> tuple[Backend, str]:
    """Load the best backend for one model; return it with a human reason ("hailo: ..." / "onnx: ...").

    `hailo` carries the Hailo section of the settings (default: its defaults); `probe` lets a
    caller that already probed the host (or a test) skip the probe.
    """
    if settings.backend == "onnx":
        reason = "onnx: forced by runtime.backend=onnx"
        logger.info("%s backend -> %s", role, reason)
        return _load_onnx(spec, bundle_dir, settings), reason
    probe = probe if probe is not None else probe_hailo()
    blocker = _hailo_blocker(role, spec, bundle_dir, probe)
    if blocker is not None:
        if settings.backend == "hailo":
            raise BackendUnavailableError(
                f"{role}: Hailo backend required but {blocker[0]}", blocker[1]
            )
        reason = f"onnx: {blocker[0]}"
        logger.info("%s backend -> %s", role, reason)
        return _load_onnx(spec, bundle_dir, settings), reason
    assert spec.hef is not None
    try:
        backend = _load_hailo(role, spec, bundle_dir, hailo or HailoSettings())
    except BackendError as e:
        if settings.backend == "hailo":
            raise
        reason = f"onnx: Hailo load failed: {e.message}"
        logger.warning("%s backend -> %s", role, reason)
        return _load_onnx(spec, bundle_dir, settings), reason
    reason = f"hailo: {spec.hef.file} ({spec.hef.arch}) on {probe.arch}"
    logger.info("%s backend -> %s", role, reason)
    return backend, reason
