"""`cardedge-train compile-hef`: ONNX -> Hailo HEF with the Dataflow Compiler, recorded in the bundle.

Steps per model: translate the ONNX graph (the detector cut before its head's concat: nine
outputs, box/class/angle convs at each stride), a model script that puts the manifest's mean/std
inside the network (the device is fed raw uint8 RGB), optimise (quantise) on the calibration
set from training/calib.py, check the quantised emulator against ONNX Runtime (embedding cosine
>= 0.99), compile, and record the HEF, its arch and its output order in the bundle manifest.
The compiler (`hailo_sdk_client`) is x86 Linux only and comes from Hailo's developer zone.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import HefSpec, InputSpec, Manifest, ModelSpec, load_manifest
from edge.errors import EdgeError
from edge.recognize.embed import preprocess

logger = logging.getLogger(__name__)

Role = Literal["detector", "embedder"]
Arch = Literal["hailo8l", "hailo8"]

PARITY_MIN_COSINE = 0.99
SDK_HINT = (
    "install the Hailo Dataflow Compiler (hailo_dataflow_compiler wheel, part of the Hailo AI "
    "Software Suite) from https://hailo.ai/developer-zone/ on an x86-64 Linux host with Python "
    "3.8-3.10, then run compile-hef there; the Pi only needs HailoRT"
)

# Last conv of each OBB head branch: /model.<i>/cv<2|3|4>.<level>/.../cv<b>.<level>.2/Conv
_HEAD_CONV = re.compile(r"^/model\.(\d+)/cv([234])\.(\d+)/(?:.*/)?cv\2\.\3\.2/Conv$")
_BRANCH_ORDER = {"2": 0, "3": 1, "4": 2}  # box DFL, class, angle


class CompileError(EdgeError):
    """Compilation could not run or produced a model that fails its checks."""

    code = "compile_failed"


@dataclass(frozen=True, slots=True)
class HeadCut:
    """Where the detector graph is cut: ONNX node names and their output tensors, in decode order."""

    node_names: tuple[str, ...]  # (box, cls, angle) per stride, strides ascending
    tensor_names: tuple[str, ...]


def find_obb_cut(model: Any) -> HeadCut:
    """Locate the nine last head convolutions of an ultralytics YOLO-OBB ONNX graph."""
    found: dict[tuple[int, int, int], tuple[str, str]] = {}
    for node in model.graph.node:
        m = _HEAD_CONV.match(node.name)
        if m and node.op_type == "Conv":
            found[(int(m.group(1)), int(m.group(3)), _BRANCH_ORDER[m.group(2)])] = (
                node.name,
                node.output[0],
            )
    if not found:
        raise CompileError(
            "no YOLO-OBB head convolutions (/model.N/cv2|cv3|cv4.L...) in the detector graph",
            "export the detector with ultralytics (YOLO(...).export(format='onnx'))",
        )
    head = max(k[0] for k in found)
    keys = sorted(k for k in found if k[0] == head)
    levels = sorted({k[1] for k in keys})
    if len(keys) != 3 * len(levels):
        raise CompileError(
            f"incomplete OBB head: found {len(keys)} branch outputs for {len(levels)} strides"
        )
    return HeadCut(tuple(found[k][0] for k in keys), tuple(found[k][1] for k in keys))


def cut_detector_onnx(src: Path, dst: Path, input_name: str = "images") -> HeadCut:
    """Write the detector graph cut before the head's concat (the graph Hailo compiles) to `dst`."""
    import onnx
    import onnx.utils

    cut = find_obb_cut(onnx.load(str(src)))
    onnx.utils.extract_model(str(src), str(dst), [input_name], list(cut.tensor_names))
    logger.info(
        "cut detector graph %s -> %s (%d outputs)", src.name, dst.name, len(cut.tensor_names)
    )
    return cut


def model_script(spec: InputSpec, *, calibset_size: int = 1024, batch_size: int = 8) -> str:
    """Hailo model script (.alls): normalisation inside the network from the manifest's mean/std.

    The calibration set and the device input are then raw 0-255 pixels in the model's colour
    order, the same preprocessing spec the ONNX path applies on the host.
    """
    mean = ", ".join(f"{v:.6g}" for v in spec.mean)
    std = ", ".join(f"{v:.6g}" for v in spec.std)
    return (
        f"normalization1 = normalization([{mean}], [{std}])\n"
        f"model_optimization_config(calibration, batch_size={batch_size}, "
        f"calibset_size={calibset_size})\n"
    )


def cosine_rows(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Cosine similarity of matching rows after flattening each sample."""
    x = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    y = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    num = (x * y).sum(axis=1)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    return (num / np.maximum(den, 1e-12)).astype(np.float32)


def import_sdk() -> Any:
    """The hailo_sdk_client module, or a CompileError saying what to install."""
    try:
        return importlib.import_module("hailo_sdk_client")
    except ImportError as e:
        raise CompileError(
            "the Hailo Dataflow Compiler (hailo_sdk_client) is not installed", SDK_HINT
        ) from e


@dataclass(frozen=True, slots=True)
class CompileResult:
    hef: bytes
    output_names: tuple[str, ...]  # HEF output stream names, in decode order
    parity_min_cosine: float


def _onnx_reference(
    onnx_path: Path, batch: npt.NDArray[Any], outputs: Sequence[str] | None
) -> list[npt.NDArray[Any]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    res = [sess.run(list(outputs) if outputs else None, {name: x[None]}) for x in batch]
    return [np.concatenate([r[i] for r in res]) for i in range(len(res[0]))]


def _to_nchw_like(emu: npt.NDArray[Any], ref: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Emulator outputs are NHWC; bring a 4-D one to the ONNX reference's NCHW for comparison."""
    e = np.asarray(emu)
    if e.ndim == 4 and ref.ndim == 4 and e.shape[1:] != ref.shape[1:]:
        e = e.transpose(0, 3, 1, 2)
    return e.reshape(ref.shape)


def hef_output_order(runner: Any, cut: HeadCut | None) -> tuple[str, ...]:
    """HEF output stream names in decode order, matched to the cut nodes via HN original names."""
    hn = runner.get_hn_dict()
    net = hn.get("name", "")
    layers: dict[str, Any] = hn["layers"]
    order = hn.get("net_params", {}).get("output_layers_order") or [
        n for n, lay in layers.items() if lay.get("type") == "output_layer"
    ]
    if cut is None:
        return tuple(f"{net}/{n}" if net and "/" not in n else n for n in order)
    by_node: dict[str, str] = {}
    for lname in order:
        for orig in layers[lname].get("original_names", []):
            by_node[orig] = lname
    missing = [n for n in cut.node_names if n not in by_node]
    if missing:
        raise CompileError(f"compiled outputs do not map to cut nodes {missing}")
    return tuple(by_node[n] if "/" in by_node[n] else f"{net}/{by_node[n]}" for n in cut.node_names)


def compile_model(
    onnx_path: Path,
    name: str,
    spec: ModelSpec,
    calib: npt.NDArray[np.float32],
    *,
    arch: Arch,
    role: Role,
    parity_images: int = 16,
) -> CompileResult:
    """Translate, quantise, check the emulator against ONNX Runtime and compile one model."""
    sdk = import_sdk()
    cut = None
    if role == "detector":
        import onnx

        cut = find_obb_cut(onnx.load(str(onnx_path)))
    runner = sdk.ClientRunner(hw_arch=arch)
    shape = [1, 3, spec.input.height, spec.input.width]
    runner.translate_onnx_model(
        str(onnx_path),
        name,
        start_node_names=[spec.input_name],
        end_node_names=list(cut.node_names) if cut else None,
        net_input_shapes={spec.input_name: shape},
    )
    runner.load_model_script(model_script(spec.input, calibset_size=len(calib)))
    runner.optimize(calib)
    sample = calib[:parity_images]
    with runner.infer_context(sdk.InferenceContext.SDK_QUANTIZED) as ctx:
        emulated = runner.infer(ctx, sample)
    emulated = emulated if isinstance(emulated, list) else [emulated]
    normalized = _normalized_from_raw(sample, spec.input)
    with tempfile.TemporaryDirectory() as tmp:
        graph = onnx_path
        if cut is not None:  # the reference for the cut outputs is the cut graph
            graph = Path(tmp) / "cut.onnx"
            cut_detector_onnx(onnx_path, graph, spec.input_name)
        reference = _onnx_reference(graph, normalized, cut.tensor_names if cut else None)
    worst = min(
        float(cosine_rows(_to_nchw_like(e, r), r).min())
        for e, r in zip(emulated, reference, strict=True)
    )
    logger.info("%s: quantised emulator vs ONNX worst cosine %.4f", name, worst)
    if worst < PARITY_MIN_COSINE:
        raise CompileError(
            f"{name}: quantised emulation diverges from ONNX (worst cosine {worst:.4f} < {PARITY_MIN_COSINE})",
            "check the calibration set preprocessing; try the EfficientNet-Lite0 student",
        )
    hef = bytes(runner.compile())
    return CompileResult(hef, hef_output_order(runner, cut), worst)


def _normalized_from_raw(raw_nhwc: npt.NDArray[np.float32], spec: InputSpec) -> npt.NDArray[Any]:
    """Calibration images (NHWC 0-255, model colour order) -> the ONNX input via the one preprocess.

    The calibration set already holds the model's colour order, so the spec is applied with RGB
    order to avoid swapping the channels twice.
    """
    as_rgb = spec.model_copy(update={"color_order": "RGB"})
    return preprocess(np.clip(np.rint(raw_nhwc), 0, 255).astype(np.uint8), as_rgb)


def record_hef(
    bundle_dir: Path, role: Role, result: CompileResult, arch: Arch, latency_ms: float | None = None
) -> Manifest:
    """Write `<role>.hef` into the bundle and its HefSpec into the manifest (files table refreshed)."""
    from edge.bundles.files import build_files_table, sha256_file, write_manifest

    hef_name = f"{role}.hef"
    (bundle_dir / hef_name).write_bytes(result.hef)
    manifest = load_manifest(bundle_dir / "manifest.json")
    hef = HefSpec(
        file=hef_name,
        sha256=sha256_file(bundle_dir / hef_name),
        arch=arch,
        output_names=result.output_names,
        latency_ms=latency_ms,
    )
    model = getattr(manifest, role).model_copy(update={"hef": hef})
    lineage = dict(manifest.lineage)
    lineage[f"{role}_hef"] = {"arch": arch, "parity_min_cosine": result.parity_min_cosine}
    manifest = manifest.model_copy(update={role: model, "lineage": lineage})
    manifest = manifest.model_copy(update={"files": build_files_table(bundle_dir)})
    write_manifest(bundle_dir, manifest)
    return manifest


def compile_bundle(
    bundle_dir: Path,
    calib_dir: Path,
    *,
    arch: Arch,
    roles: Sequence[Role] = ("detector", "embedder"),
) -> Manifest:
    """Compile every requested model of a bundle from its calibration sets (`calib_dir/<role>.npy`)."""
    manifest = load_manifest(bundle_dir / "manifest.json")
    for role in roles:
        spec: ModelSpec = getattr(manifest, role)
        calib_file = calib_dir / f"{role}.npy"
        if not calib_file.is_file():
            raise CompileError(
                f"no calibration set {calib_file}", "run `cardedge-train calib` first"
            )
        calib = np.load(calib_file, mmap_mode="r")
        result = compile_model(
            bundle_dir / spec.file,
            f"cardedge_{role}",
            spec,
            np.asarray(calib),
            arch=arch,
            role=role,
        )
        manifest = record_hef(bundle_dir, role, result, arch)
        logger.info("compiled %s for %s into %s", role, arch, bundle_dir)
    return manifest


def _cmd(args: argparse.Namespace) -> int:
    try:
        compile_bundle(args.bundle, args.calib, arch=args.arch, roles=args.roles)
    except EdgeError as e:
        print(f"compile-hef: {e}")
        return 2
    print(
        f"compiled {', '.join(args.roles)} for {args.arch}; re-sign the bundle before shipping it"
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `compile-hef` to the cardedge-train command."""
    p = subparsers.add_parser("compile-hef", help="compile the bundle's models to Hailo HEFs (DFC)")
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory to compile into")
    p.add_argument("--calib", type=Path, required=True, help="calibration dir from `calib`")
    p.add_argument("--arch", choices=["hailo8l", "hailo8"], default="hailo8l")
    p.add_argument(
        "--roles", nargs="+", choices=["detector", "embedder"], default=["detector", "embedder"]
    )
    p.set_defaults(func=_cmd)
