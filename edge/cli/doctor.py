"""`cardedge doctor`: tell a Pi owner what is wrong with the accelerator, camera, disk and clock.

Each finding is {check, status ok|warn|fail, detail, hint}. Hailo facts come from HailoRT
itself and from `hailortcli fw-control identify` ("Device Architecture:" is reliable; the
"Board Name" line can mislead). With a bundle, its HEFs' target archs are checked against the
device and the embedder HEF is compared with the ONNX graph on the bundle's self-test images.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.backends.select import hef_mismatch, normalize_arch
from edge.bundles.manifest import Manifest, load_manifest
from edge.config import HailoSettings
from edge.errors import EdgeError

logger = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]
PARITY_MIN_COSINE = 0.99
_ARCH_LINE = re.compile(r"^\s*Device Architecture:\s*(\S+)", re.MULTILINE)
_DRIVER_VERSION_FILE = Path("/sys/module/hailo_pci/version")


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    detail: str
    hint: str = ""


def parse_identify(text: str) -> str | None:
    """The normalised arch from `hailortcli fw-control identify` output, or None."""
    m = _ARCH_LINE.search(text)
    return normalize_arch(m.group(1)) if m else None


def _run(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)
    return out.stdout + out.stderr


def check_hailort() -> tuple[Finding, str | None]:
    try:
        hp = importlib.import_module("hailo_platform")
    except ImportError:
        return Finding(
            "hailort",
            "warn",
            "hailo_platform not installed: models run on ONNX Runtime (CPU)",
            "for the Hailo-8L: `sudo apt install hailo-all`, reboot, venv with --system-site-packages",
        ), None
    version = str(getattr(hp, "__version__", "unknown"))
    if not version.startswith("4."):
        return Finding(
            "hailort",
            "fail",
            f"HailoRT {version}: Hailo-8/8L need HailoRT 4.x",
            "install HailoRT 4.x (5.x is for Hailo-10/15)",
        ), version
    return Finding("hailort", "ok", f"HailoRT {version}"), version


def check_driver(hailort_version: str | None, version_file: Path = _DRIVER_VERSION_FILE) -> Finding:
    if not version_file.is_file():
        return Finding(
            "driver",
            "warn",
            "hailo_pci driver not loaded",
            "install hailort-pcie-driver (part of hailo-all) and reboot; check `dmesg | grep hailo`",
        )
    driver = version_file.read_text(encoding="utf-8").strip()
    if hailort_version and driver != hailort_version:
        return Finding(
            "driver",
            "fail",
            f"driver {driver} != HailoRT {hailort_version} (HAILO_INVALID_DRIVER_VERSION)",
            "install matching versions: `sudo apt install --reinstall hailo-all`, then reboot",
        )
    return Finding("driver", "ok", f"hailo_pci {driver}")


def check_device(run: Callable[[list[str]], str]) -> tuple[Finding, str | None]:
    if shutil.which("hailortcli") is None and run is _run:
        return Finding("device", "warn", "hailortcli not found", "install hailo-all"), None
    try:
        text = run(["hailortcli", "fw-control", "identify"])
    except (OSError, subprocess.SubprocessError) as e:
        return Finding(
            "device", "fail", f"hailortcli failed: {e}", "check `dmesg | grep hailo`"
        ), None
    arch = parse_identify(text)
    if arch is None:
        return Finding(
            "device",
            "fail",
            "no Hailo device answered `hailortcli fw-control identify`",
            "seat the AI Kit / M.2 card, enable PCIe Gen3 in config.txt, reboot",
        ), None
    return Finding("device", "ok", f"device architecture {arch}"), arch


def check_hef_arch(manifest: Manifest, device_arch: str | None) -> list[Finding]:
    findings = []
    for role in ("detector", "embedder"):
        hef = getattr(manifest, role).hef
        if hef is None:
            findings.append(
                Finding(
                    f"{role}_hef",
                    "warn",
                    f"bundle has no {role} HEF: it runs on ONNX",
                    "compile one with `cardedge-train compile-hef`",
                )
            )
        elif device_arch is None:
            findings.append(
                Finding(f"{role}_hef", "warn", f"{hef.file} for {hef.arch}; no device to check")
            )
        elif (why := hef_mismatch(hef, device_arch)) is not None:
            findings.append(
                Finding(
                    f"{role}_hef",
                    "fail",
                    why,
                    f"rebuild with `cardedge-train compile-hef --arch {device_arch}`",
                )
            )
        else:
            findings.append(
                Finding(f"{role}_hef", "ok", f"{hef.file} ({hef.arch}) fits {device_arch}")
            )
    return findings


def selftest_crops(bundle_dir: Path, manifest: Manifest) -> np.ndarray:
    """The bundle's self-test scans resized to the embedder input, N x H x W x 3 RGB uint8."""
    import cv2

    spec = manifest.embedder.input
    crops = []
    for name in sorted(manifest.selftest):
        bgr = cv2.imread(str(bundle_dir / name), cv2.IMREAD_COLOR)
        if bgr is not None:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            crops.append(cv2.resize(rgb, (spec.width, spec.height), interpolation=cv2.INTER_AREA))
    return np.stack(crops) if crops else np.zeros((0, spec.height, spec.width, 3), np.uint8)


def check_parity(bundle_dir: Path, manifest: Manifest, hailo: HailoSettings) -> Finding:
    """HEF vs ONNX embeddings on the self-test images (ConvNeXt HEFs have been seen to drift)."""
    from edge.backends.hailo import HailoBackend
    from edge.backends.onnx import OnnxBackend
    from edge.recognize.embed import preprocess

    spec = manifest.embedder
    crops = selftest_crops(bundle_dir, manifest)
    if len(crops) == 0:
        return Finding("parity", "warn", "bundle has no self-test images to compare on")
    onnx = OnnxBackend(bundle_dir / spec.file, threads=1)
    try:
        hef = HailoBackend.from_spec("embedder", spec, bundle_dir, hailo)
    except EdgeError as e:
        onnx.close()
        return Finding("parity", "fail", f"cannot load the embedder HEF: {e.message}", e.hint or "")
    try:
        x = preprocess(crops, spec.input)
        a = np.asarray(onnx.run(x)[spec.output_name], np.float64).reshape(len(x), -1)
        b = np.asarray(hef.run(x)[spec.output_name], np.float64).reshape(len(x), -1)
    finally:
        hef.close()
        onnx.close()
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    worst = float(cos.min())
    if worst < PARITY_MIN_COSINE:
        return Finding(
            "parity",
            "fail",
            f"HEF vs ONNX embedding cosine {worst:.4f} < {PARITY_MIN_COSINE}",
            "set runtime.backend=onnx and recompile; consider the EfficientNet-Lite0 student",
        )
    return Finding(
        "parity", "ok", f"HEF vs ONNX embedding cosine >= {worst:.4f} on {len(x)} images"
    )


def check_camera() -> Finding:
    if importlib.util.find_spec("picamera2") is not None:
        return Finding("camera", "ok", "picamera2 available")
    videos = sorted(glob.glob("/dev/video*"))
    if videos:
        return Finding("camera", "ok", f"V4L2 devices: {', '.join(videos[:4])}")
    return Finding(
        "camera",
        "warn",
        "no camera found (no picamera2, no /dev/video*)",
        "`sudo apt install python3-picamera2`, check the ribbon cable, `rpicam-hello --list-cameras`",
    )


def check_disk(path: Path) -> Finding:
    probe = path if path.exists() else Path("/")
    free_mb = shutil.disk_usage(probe).free / 2**20
    if free_mb < 200:
        return Finding(
            "disk", "fail", f"{free_mb:.0f} MiB free at {probe}", "free space: old bundles, logs"
        )
    if free_mb < 1024:
        return Finding(
            "disk",
            "warn",
            f"{free_mb:.0f} MiB free at {probe}",
            "a bundle install needs room for two bundles",
        )
    return Finding("disk", "ok", f"{free_mb / 1024:.1f} GiB free at {probe}")


def check_clock(now: float | None = None) -> Finding:
    year = time.gmtime(time.time() if now is None else now).tm_year
    if year < 2024:
        return Finding(
            "clock",
            "warn",
            f"system clock says {year}",
            "the Pi has no RTC battery by default: enable NTP (`timedatectl set-ntp true`)",
        )
    return Finding("clock", "ok", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))


def run_doctor(
    bundle_dir: Path | None,
    *,
    state_dir: Path = Path("/var/lib/cardedge"),
    hailo: HailoSettings | None = None,
    run: Callable[[list[str]], str] = _run,
    driver_version_file: Path = _DRIVER_VERSION_FILE,
) -> list[Finding]:
    """Every check, in order; never raises for a failing check."""
    hailort, version = check_hailort()
    findings = [hailort]
    arch = None
    if version is not None:
        findings.append(check_driver(version, driver_version_file))
        device, arch = check_device(run)
        findings.append(device)
    if bundle_dir is not None:
        try:
            manifest = load_manifest(bundle_dir / "manifest.json")
        except EdgeError as e:
            findings.append(Finding("bundle", "fail", e.message, e.hint or ""))
        else:
            findings.extend(check_hef_arch(manifest, arch))
            if arch is not None and manifest.embedder.hef is not None:
                findings.append(check_parity(bundle_dir, manifest, hailo or HailoSettings()))
    findings += [check_camera(), check_disk(state_dir), check_clock()]
    return findings


def _cmd(args: argparse.Namespace) -> int:
    from edge.config import load_with_flags

    settings = load_with_flags(
        args.config,
        {
            "--bundle": (("runtime", "bundle"), args.bundle),
            "--state-dir": (("runtime", "state_dir"), args.state_dir),
        },
    )
    findings = run_doctor(
        settings.runtime.bundle, state_dir=settings.runtime.state_dir, hailo=settings.hailo
    )
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(
                f"[{f.status:>4}] {f.check}: {f.detail}"
                + (f"\n       fix: {f.hint}" if f.hint and f.status != "ok" else "")
            )
    return 1 if any(f.status == "fail" for f in findings) else 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `doctor` to the cardedge command."""
    p = subparsers.add_parser(
        "doctor", help="check the accelerator, bundle, camera, disk and clock"
    )
    p.add_argument("--bundle", type=Path, help="bundle directory to check against the device")
    p.add_argument(
        "--state-dir", type=Path, help="state directory (disk check; default: runtime.state_dir)"
    )
    p.add_argument("--config", type=Path, help="config file (TOML or YAML)")
    p.add_argument("--json", action="store_true", help="machine-readable findings")
    p.set_defaults(func=_cmd)
