"""`cardedge-train`: one subcommand per training stage, plus `demo-bundle` (all of them, end to end).

The stages, in the order `demo-bundle` runs them: synth -> teacher -> distill (detector alongside)
-> index -> export -> bundle -> calibrate -> evaluate; then, for the Hailo, calib -> compile-hef.
Tools for a bundle that exists follow them (swap-detector, detector-curve, evaluate-detector,
feedback).

Each stage module exposes `add_arguments(parser)` and `main(args) -> int`; stage modules are
imported only when their subcommand runs, so `--help` stays fast. Other owners contribute
subcommands through `register(subparsers)` functions (synth, calib, compile-hef).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

# subcommand -> (module, help), in the order demo-bundle runs them (synth is registered first)
PIPELINE: dict[str, tuple[str, str]] = {
    "teacher": ("training.teacher", "train the DINOv3 teacher (ArcFace, frozen then partial)"),
    "distill": ("training.distill", "distil a timm student from the teacher's embeddings"),
    "detector": ("training.detector", "train YOLO11n-OBB on the synthetic scenes (+ ONNX export)"),
    "index": ("training.index_build", "embed the catalogue (both views), calibrate thresholds"),
    "export": ("training.export", "export the student to ONNX with a parity check"),
    "bundle": ("training.bundle_build", "assemble (and sign) a bundle with its lineage"),
    "calibrate": (
        "training.calibrate_scenes",
        "unknown-card thresholds from detector boxes in fresh training-config scenes",
    ),
    "evaluate": ("training.evaluate", "evaluate a bundle on held-out scenes (+ pHash baseline)"),
    "demo-bundle": ("training.demo", "regenerate the demo bundle end to end"),
}
# ... and for a bundle that exists
TOOLS: dict[str, tuple[str, str]] = {
    "swap-detector": (
        "training.swap_detector",
        "an existing bundle with a new detector, thresholds recalibrated",
    ),
    "detector-curve": (
        "training.detector_curve",
        "a long detector run's held-out recall against training hours (+ PNG)",
    ),
    "evaluate-detector": (
        "training.evaluate_detection",
        "detection recall by family, size, occlusion, tilt; backs; at one or more input shapes",
    ),
    "feedback": ("training.feedback", "device corrections (POST /v1/feedback) -> cls/ crops"),
}

# Owners' register(subparsers) hooks, used when their module is present: the synthetic world
# before the pipeline, the Hailo steps after it.
FIRST = ("training.synth.cli",)
HAILO = ("training.calib", "training.hailo_compile")


def _stage_parser(sub: argparse._SubParsersAction, name: str, module: str, text: str) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(name, help=text, description=text)
    mod = importlib.import_module(module)
    mod.add_arguments(p)
    p.set_defaults(func=mod.main)


def _register_optional(sub: argparse._SubParsersAction, modules: Sequence[str]) -> None:  # type: ignore[type-arg]
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                logger.debug("%s not present; its subcommands are absent", module)
                continue
            raise
        register: Callable[[argparse._SubParsersAction], None] | None = getattr(
            mod, "register", None
        )  # type: ignore[type-arg]
        if register is not None:
            register(sub)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The full parser; only the chosen stage's module (if any) is imported."""
    parser = argparse.ArgumentParser(prog="cardedge-train", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    _register_optional(sub, FIRST)
    for name, (module, text) in PIPELINE.items():
        _stage_or_stub(sub, name, module, text, chosen)
    _register_optional(sub, HAILO)
    for name, (module, text) in TOOLS.items():
        _stage_or_stub(sub, name, module, text, chosen)
    return parser


def _stage_or_stub(
    sub: argparse._SubParsersAction, name: str, module: str, text: str, chosen: str | None
) -> None:  # type: ignore[type-arg]
    """The chosen stage's full parser; for the others a line of help (their modules stay
    unimported)."""
    if chosen == name:
        _stage_parser(sub, name, module, text)
    else:
        sub.add_parser(name, help=text)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.error(f"{args.command}: nothing to run")
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
