"""`cardedge-train swap-detector`: an existing bundle with a newly trained detector.

The embedder, index, catalogue and verification features stay byte for byte; the detector's
ONNX and its manifest entry (input shape, classes) are replaced, a detector HEF compiled for the
old model is dropped (compile the new one with `cardedge-train compile-hef`), and every
threshold that depends on the detector's boxes and confidences is calibrated again on fresh
scenes (unknown-card scores, verification evidence, background confidence), as the full build
does. The bundle gets a new id and its lineage names the detector run.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.bundles.files import refresh_hashes, verify_bundle, write_manifest
from training.bundle_build import detector_spec, run_lineage

logger = logging.getLogger(__name__)


def swap(
    source: Path,
    detector_onnx: Path,
    out: Path,
    *,
    bundle_id: str,
    catalogue: Path,
    unknown: Path,
    detector_run: Path | None = None,
    verify_scenes: int = 600,
    scenes: int = 200,
    seed: int = 7,
    target_far: float = 0.02,
) -> dict[str, Any]:
    """Write `out` = `source` with `detector_onnx`, recalibrated; returns its manifest as JSON."""
    from training import calibrate_scenes

    src = verify_bundle(source)
    if out.exists():
        raise FileExistsError(f"{out} exists: choose a new folder")
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("manifest.sig"))
    old = src.detector
    if old.hef is not None:
        (out / old.hef.file).unlink(missing_ok=True)
        logger.warning("dropped %s (compiled for the old detector): recompile", old.hef.file)
    shutil.copy2(detector_onnx, out / old.file)
    new = detector_spec(out / old.file).model_copy(update={"file": old.file})
    lineage = dict(src.lineage)
    lineage["detector_swapped_from"] = src.bundle_id
    if detector_run is not None:
        lineage["detector"] = run_lineage(detector_run)
    manifest = src.model_copy(
        update={
            "bundle_id": bundle_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "detector": new,
            "lineage": lineage,
        }
    )
    write_manifest(out, refresh_hashes(out, manifest))
    calibrate_scenes.run(
        out, catalogue, unknown, n_scenes=scenes, target_far=target_far, seed=seed,
        verify_scenes=verify_scenes,
    )  # fmt: skip
    final = verify_bundle(out)
    logger.info(
        "bundle %s: detector %dx%d, classes %s, thresholds recalibrated",
        bundle_id, new.input.height, new.input.width, ",".join(new.class_names),
    )  # fmt: skip
    return final.model_dump(mode="json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="the bundle to start from")
    p.add_argument("--detector", type=Path, required=True, help="the new detector's ONNX")
    p.add_argument("--out", type=Path, required=True, help="a new folder for the result")
    p.add_argument("--bundle-id", required=True)
    p.add_argument("--catalogue", type=Path, required=True, help="catalogue scans (calibration)")
    p.add_argument("--unknown", type=Path, required=True, help="unknown cards (calibration)")
    p.add_argument("--detector-run", type=Path, default=None, help="run folder, for lineage")
    p.add_argument("--scenes", type=int, default=200, help="fresh scenes for unknown-card scores")
    p.add_argument("--verify-scenes", type=int, default=600, help="fresh scenes for verification")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--target-far", type=float, default=0.02)


def main(args: argparse.Namespace) -> int:
    if args.out.exists():
        print(f"error: {args.out} exists: choose a new folder for the bundle")
        return 2
    manifest = swap(
        args.bundle, args.detector, args.out, bundle_id=args.bundle_id,
        catalogue=args.catalogue, unknown=args.unknown, detector_run=args.detector_run,
        verify_scenes=args.verify_scenes, scenes=args.scenes, seed=args.seed,
        target_far=args.target_far,
    )  # fmt: skip
    det = manifest["detector"]
    print(
        f"wrote {args.out}: bundle {manifest['bundle_id']}, detector "
        f"{det['input']['height']}x{det['input']['width']} classes {det['class_names']}"
    )
    return 0
