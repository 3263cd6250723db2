"""Detection figures on held-out scenes: recall by background family, card short side in
pixels, occlusion and tilt; precision; false boxes per scene; card backs.

Two uses. `detection_report(outcomes, ...)` turns the outcomes of a full bundle evaluation
(training/evaluate.py) into the detection section of its report, counting what the device
reports. `cardedge-train evaluate-detector --onnx M --scenes DIR [--hw 256x448 ...]` runs a bare
ONNX detector (a checkpoint of a long run, or one model at several input shapes) through the
device's own Detector, letterbox and decode: the learning curve and the input-shape table come
from it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge.backends.onnx import OnnxBackend
from edge.bundles.manifest import DetectorSpec, InputSpec, Thresholds
from edge.recognize.detect import Detector
from edge.recognize.rectify import side_lengths
from training.synth.io import TruthCard, load_scene_dir

logger = logging.getLogger(__name__)

SHORT_SIDE_EDGES = (0.0, 40.0, 80.0, 160.0, 10_000.0)  # px in the camera frame
VISIBLE_EDGES = (0.0, 0.7, 0.999, 1.01)  # occluded, partly hidden, whole
TILT_EDGES = (0.0, 15.0, 30.0, 45.0, 90.0)
IOU_MATCH = 0.5
CONTAINED = 0.8  # see on_visible_part
TARGETS = {  # issue bars: (selector name, op, value)
    "recall_unoccluded_80px": (">=", 0.97),
    "recall_unoccluded_40_80px": (">=", 0.85),
    "recall_worst_family": (">=", 0.93),
    "precision": (">=", 0.97),
    "backs_detected": (">=", 0.90),
    "backs_as_faces": ("<=", 0.0),
}


class HasCorners(Protocol):
    """A true card or a detected box: four corners in frame px."""

    @property
    def corners(self) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class DetOutcome:
    """One true card (or back) after detection: found, and with which class."""

    corners: np.ndarray  # its true corners, px
    visible_fraction: float
    tilt_deg: float
    face_down: bool
    background: str
    detected: bool
    as_back: bool = False  # the box (or report) that found it says `back`

    @classmethod
    def of(cls, t: TruthCard, background: str, detected: bool, as_back: bool) -> DetOutcome:
        return cls(
            t.corners, t.visible_fraction, t.tilt_deg, t.face_down, background, detected, as_back
        )


def short_side(corners: np.ndarray) -> float:
    return float(min(side_lengths(corners)))


def _rate(flags: Sequence[bool]) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def _binned(
    outcomes: Sequence[DetOutcome], value: Any, edges: Sequence[float], label: str = "{lo:g}-{hi:g}"
) -> dict[str, Any]:
    out = {}
    for lo, hi in itertools.pairwise(edges):
        sel = [o.detected for o in outcomes if lo <= value(o) < hi]
        out[label.format(lo=lo, hi=hi)] = {"recall": _rate(sel), "n": len(sel)}
    return out


def detection_report(
    outcomes: Sequence[DetOutcome], n_reported: int, n_false: int, n_scenes: int
) -> dict[str, Any]:
    """The detection section: recall of card faces by family, short side, occlusion and tilt;
    card backs; precision and false boxes per scene of what is reported."""
    faces = [o for o in outcomes if not o.face_down]
    backs = [o for o in outcomes if o.face_down]
    whole = [o for o in faces if o.visible_fraction >= 0.999]
    families = sorted({o.background for o in faces})
    by_family = {f: _rate([o.detected for o in faces if o.background == f]) for f in families}
    rated = [v for v in by_family.values() if v is not None]
    report: dict[str, Any] = {
        "n_faces": len(faces),
        "n_backs": len(backs),
        "recall": _rate([o.detected for o in faces]),
        "recall_unoccluded_80px": _rate([o.detected for o in whole if short_side(o.corners) >= 80]),
        "recall_unoccluded_40_80px": _rate(
            [o.detected for o in whole if 40 <= short_side(o.corners) < 80]
        ),
        "recall_worst_family": min(rated) if rated else None,
        "precision": round(1 - n_false / n_reported, 4) if n_reported else None,
        "false_per_scene": round(n_false / max(n_scenes, 1), 4),
        "backs_detected": _rate([o.detected for o in backs]),
        "backs_as_faces": _rate([o.detected and not o.as_back for o in backs]),
        "faces_as_backs": _rate([o.detected and o.as_back for o in faces]),
        "by_family": by_family,
        "by_short_side_px": _binned(faces, lambda o: short_side(o.corners), SHORT_SIDE_EDGES),
        "by_visible": _binned(faces, lambda o: o.visible_fraction, VISIBLE_EDGES),
        "by_tilt": _binned(faces, lambda o: o.tilt_deg, TILT_EDGES),
    }
    report["targets"] = {
        key: {"value": report[key], "target": f"{op} {t}", "met": _met(report[key], op, t)}
        for key, (op, t) in TARGETS.items()
    }
    return report


def _met(value: float | None, op: str, target: float) -> bool:
    return value is not None and (value >= target if op == ">=" else value <= target)


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two convex quadrilaterals (4 x 2 px)."""
    pa, pb = a.astype(np.float32).reshape(-1, 1, 2), b.astype(np.float32).reshape(-1, 1, 2)
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    union = cv2.contourArea(pa) + cv2.contourArea(pb) - inter
    return float(inter / union) if union > 0 else 0.0


def match_boxes(gt: Sequence[HasCorners], boxes: Sequence[HasCorners]) -> dict[int, int]:
    """Greedy one-to-one matching by IoU (highest first), pairs at IoU >= 0.5: gt index -> box.
    A partly hidden card (a `visible` share under 1) also matches a box on what is seen of it
    (`on_visible_part`), after the pairs that match by IoU."""
    pairs = [(_pair_score(g, b), gi, bi) for gi, g in enumerate(gt) for bi, b in enumerate(boxes)]
    used_g: set[int] = set()
    used_b: set[int] = set()
    out = {}
    for iou, gi, bi in sorted(pairs, reverse=True):
        if iou < IOU_MATCH:
            break
        if gi not in used_g and bi not in used_b:
            out[gi] = bi
            used_g.add(gi)
            used_b.add(bi)
    return out


def _pair_score(g: HasCorners, b: HasCorners) -> float:
    iou = polygon_iou(g.corners, b.corners)
    # GtCard's `visible`, TruthCard's `visible_fraction`; a box has neither (whole)
    visible = float(getattr(g, "visible", getattr(g, "visible_fraction", 1.0)))
    if iou >= IOU_MATCH or visible >= 1.0:
        return iou
    return IOU_MATCH if on_visible_part(g.corners, visible, b.corners) else iou


def on_visible_part(card: np.ndarray, visible: float, box: np.ndarray) -> bool:
    """Whether `box` lies on the seen part of a card of which only `visible` of the area is in
    view (under another card or beyond the frame's edge): CONTAINED of the box on the card, and
    the box as large as CONTAINED of the part in view. Its IoU with the whole card is about
    `visible`, under the IoU match for a card half hidden, yet a report there is that card."""
    pc = cv2.convexHull(np.asarray(card, np.float32))
    pb = cv2.convexHull(np.asarray(box, np.float32))
    inter, _ = cv2.intersectConvexConvex(pc, pb)
    box_area, seen = cv2.contourArea(pb), visible * cv2.contourArea(pc)
    return box_area > 0 and seen > 0 and inter >= CONTAINED * max(box_area, seen)


def detector_for(
    onnx: Path, hw: tuple[int, int], num_classes: int, threads: int, conf: float
) -> Detector:
    """The device's Detector around a bare ONNX export (no bundle needed)."""
    spec = DetectorSpec(
        file=onnx.name, sha256="0" * 64, output_name="output0", num_classes=num_classes,
        class_names=("card", "back")[:num_classes] if num_classes <= 2 else tuple(
            f"class{i}" for i in range(num_classes)
        ),
        input=InputSpec(height=hw[0], width=hw[1], resize="letterbox"),
    )  # fmt: skip
    return Detector(OnnxBackend(onnx, threads=threads), spec, Thresholds(det_conf=conf))


def evaluate_onnx(
    onnx: Path, scenes: Path, hw: tuple[int, int], *, num_classes: int = 2, threads: int = 0,
    conf: float = 0.25, back_class: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Detection report of one ONNX model at one input shape, plus its median forward."""
    det = detector_for(onnx, hw, num_classes, threads, conf)
    outcomes: list[DetOutcome] = []
    n_boxes = n_false = n_scenes = 0
    forwards: list[float] = []
    for scene in load_scene_dir(scenes):
        image = scene.image()
        boxes = det(image)
        forwards.append(det.last_forward_ms)
        pairs = match_boxes(scene.cards, boxes)
        n_boxes += len(boxes)
        n_false += len(boxes) - len(pairs)
        n_scenes += 1
        for ti, t in enumerate(scene.cards):
            bi = pairs.get(ti)
            as_back = bi is not None and boxes[bi].class_id == back_class and num_classes > 1
            outcomes.append(DetOutcome.of(t, scene.background, bi is not None, as_back))
    report = detection_report(outcomes, n_boxes, n_false, n_scenes)
    report["input_hw"] = list(hw)
    report["forward_ms_median"] = round(float(np.median(forwards)), 2) if forwards else None
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    from training.detector import parse_hw

    p.add_argument("--onnx", type=Path, required=True, help="detector ONNX (any input shape)")
    p.add_argument("--scenes", type=Path, required=True, help="held-out test_scenes folder")
    p.add_argument(
        "--hw", type=parse_hw, action="append", default=None,
        help="input HxW to run at (repeatable; default the ONNX's own)",
    )  # fmt: skip
    p.add_argument(
        "--num-classes", type=int, default=None,
        help="classes the model outputs (default: read from the ONNX)",
    )  # fmt: skip
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the reports as JSON here")


def main(args: argparse.Namespace) -> int:
    import onnx

    model = onnx.load(str(args.onnx), load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    shapes = args.hw or [(dims[2], dims[3])]
    channels = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value  # 4 + classes + 1
    outputs = channels - 5 if channels > 5 else None
    num_classes = args.num_classes or outputs or 1
    if outputs is not None and num_classes != outputs:
        print(f"error: --num-classes {num_classes}, but {args.onnx.name} outputs {outputs} classes")
        return 2
    reports = []
    for hw in shapes:
        t0 = time.perf_counter()
        r = evaluate_onnx(
            args.onnx,
            args.scenes,
            hw,
            num_classes=num_classes,
            threads=args.threads,
            conf=args.conf,
        )
        r["seconds"] = round(time.perf_counter() - t0, 1)
        reports.append(r)
        t = r["targets"]
        print(
            f"{hw[0]}x{hw[1]}: recall {r['recall']}  >=80px {t['recall_unoccluded_80px']['value']}  "
            f"40-80px {t['recall_unoccluded_40_80px']['value']}  worst family {r['recall_worst_family']}  "
            f"precision {r['precision']}  false/scene {r['false_per_scene']}  backs {r['backs_detected']}  "
            f"forward {r['forward_ms_median']} ms"
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=1) + "\n", "utf-8")
    return 0


def detection_markdown(det: dict[str, Any], previous: dict[str, Any] | None = None) -> list[str]:
    """The detection section of report.md, each figure beside the previous bundle's."""
    prev = previous or {}

    def row(name: str, key: str) -> str:
        return f"| {name} | {_fmt(det.get(key))} | {_fmt(prev.get(key))} |"

    lines = [
        "",
        "## Detection (what the device reports)",
        "",
        f"{det['n_faces']} card faces, {det['n_backs']} card backs.",
        "",
        "| figure | this bundle | previous |",
        "|---|---|---|",
    ]
    for key in ("recall", *TARGETS, "false_per_scene", "faces_as_backs"):
        target = TARGETS.get(key)
        lines.append(row(key + (f" ({target[0]} {target[1]})" if target else ""), key))
    for title, key in (
        ("background family", "by_family"),
        ("short side (px)", "by_short_side_px"),
        ("visible fraction", "by_visible"),
        ("tilt (degrees)", "by_tilt"),
    ):
        lines += ["", f"### Recall by {title}", "", "| bin | n | this bundle | previous |"]
        lines.append("|---|---|---|---|")
        for name, cell in det[key].items():
            before = prev.get(key, {}).get(name)
            if isinstance(cell, dict):
                old = before.get("recall") if isinstance(before, dict) else None
                lines.append(f"| {name} | {cell['n']} | {_fmt(cell['recall'])} | {_fmt(old)} |")
            else:
                lines.append(f"| {name} | - | {_fmt(cell)} | {_fmt(before)} |")
    return lines


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
