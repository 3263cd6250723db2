"""End-to-end evaluation of a bundle on held-out scenes, through the device's own Recognizer.

Detection: recall and precision at polygon IoU >= 0.5 (cv2.intersectConvexConvex), greedy
matching by IoU. Identification: top-1 on detected known cards, overall, for reprints and by card
size, tilt and glare bins; unknown rejection (unknown cards flagged, known cards wrongly
flagged); the worst confusions; detection recall per background family and card size; the
embedder alone, on the boxes a perfect detector would give (the rotated rectangle of each true
card); and a perceptual-hash baseline (imagehash pHash, nearest by
Hamming distance over both views of every catalogue scan) on the very same rectified crops.
Writes report.json and report.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import imagehash
import numpy as np
from PIL import Image

from edge.config import RuntimeSettings
from edge.recognize.recognizer import Recognizer
from edge.recognize.rectify import order_corners, rotate180
from edge.types import ImageRGB, OrientedBox
from training.data import read_catalogue, read_rgb
from training.evaluate_decision import decision_markdown, decision_report
from training.evaluate_detection import (
    DetOutcome,
    detection_markdown,
    detection_report,
    match_boxes,
)

logger = logging.getLogger(__name__)

TILT_EDGES = (0.0, 15.0, 30.0, 45.0, 90.0)
TARGETS = {
    "detection_recall": (">=", 0.95),
    "identification_top1": (">=", 0.95),
    "unknown_flagged": (">=", 0.90),
    "known_wrongly_flagged": ("<=", 0.05),
}


@dataclass
class GtCard:
    card_id: str
    corners: np.ndarray  # 4 x 2 float32 px
    known: bool
    reprint: bool
    size_frac: float
    tilt_deg: float
    glare: float
    background: str = ""
    visible: float = 1.0  # visible_fraction: 1 for an unoccluded card
    face_down: bool = False  # a card back: detected, never named, never "unknown"


@dataclass
class Outcome:
    """One ground-truth card after detection and identification."""

    gt: GtCard
    detected: bool
    predicted: str = ""
    score: float = 0.0
    margin: float = 0.0
    accepted: bool = False  # the Recognizer said "known" (verified or probable)
    phash_predicted: str = ""
    perfect_box_predicted: str = ""  # the embedder on the true card's rotated rectangle
    confidence: str = "unknown"  # the Recognizer's tier; "dropped" when judged background
    inliers: int = 0
    runner_up: str = ""
    embedding_predicted: str = ""  # the embedding-only decision on the same box
    embedding_accepted: bool = False
    reported: bool = False  # the device reported a card at this card's place


def load_scenes(scene_dir: Path) -> Iterator[tuple[str, ImageRGB, list[GtCard]]]:
    """(scene_id, RGB image, ground truth) for every <id>.json + <id>.jpg in the folder."""
    for meta_path in sorted(scene_dir.glob("*.json")):
        meta = json.loads(meta_path.read_text("utf-8"))
        image = read_rgb(meta_path.with_suffix(".jpg"))
        cards = [
            GtCard(
                card_id=c["card_id"],
                corners=np.asarray(c["corners"], dtype=np.float32).reshape(4, 2),
                known=bool(c.get("known", True)),
                reprint=c.get("reprint_group") is not None,
                size_frac=float(c.get("size_frac", 0.0)),
                tilt_deg=float(c.get("tilt_deg", 0.0)),
                glare=float(c.get("glare", 0.0)),
                background=str(meta.get("background", "")),
                visible=float(c.get("visible_fraction", 1.0)),
                face_down=bool(c.get("face_down", False)),
            )
            for c in meta["cards"]
        ]
        yield meta.get("scene_id", meta_path.stem), image, cards


class PhashBaseline:
    """Nearest catalogue scan by pHash Hamming distance (both views), on rectified crops."""

    def __init__(self, catalogue_dir: Path, size: tuple[int, int]) -> None:
        ids, hashes = [], []
        for card in read_catalogue(catalogue_dir):
            scan = read_rgb(card.image, size)
            for view in (scan, rotate180(scan)):
                ids.append(card.card_id)
                hashes.append(_phash_bits(view))
        self.ids = ids
        self.bits = np.stack(hashes)

    def predict(self, crop: ImageRGB) -> str:
        distances = (self.bits != _phash_bits(crop)[None]).sum(axis=1)
        return self.ids[int(np.argmin(distances))]


def _phash_bits(image: ImageRGB) -> np.ndarray:
    return np.asarray(imagehash.phash(Image.fromarray(image)).hash, dtype=bool).reshape(-1)


def perfect_box(corners: np.ndarray) -> OrientedBox:
    """What a perfect OBB detector reports for a card: the minimum-area rotated rectangle of its
    true corners, card-ordered by the runtime's own ordering."""
    rect = cv2.boxPoints(cv2.minAreaRect(np.asarray(corners, np.float32)))
    return OrientedBox(corners=order_corners(rect), conf=1.0)


@dataclass
class FalseBox:
    """A report or a detection that matches no card of the scene (two lists: the device's
    reports, and the detector's boxes as the embedding-only decision would report them)."""

    reported: bool  # the device reported a card here (a false card)
    reported_known: bool  # ... as a known card
    embedding_known: bool  # the embedding-only decision, on the detector's box, said known


def evaluate_scene(
    rec: Recognizer, image: ImageRGB, gt: list[GtCard], phash: PhashBaseline
) -> tuple[list[Outcome], list[FalseBox]]:
    """Outcomes for every ground-truth card of one scene, and the reports that match no card.

    Detection is judged on the detector's boxes. The device's decision (shortlist, verify,
    decide) runs on every box of the frame, as on the device, and is judged on what it reports:
    a verified card's polygon is its refined one, so a loose box can still name its card. The
    embedding-only decision on the detector's boxes is kept beside it."""
    boxes = rec.detect(image)
    pairs = match_boxes(gt, boxes)
    outcomes = [Outcome(gt=g, detected=i in pairs) for i, g in enumerate(gt)]
    embedded, shortlists, _ = rec.shortlist(image, boxes)
    verdicts = rec.decide(image, embedded, shortlists)
    for gi, bi in pairs.items():
        o, emb = outcomes[gi], embedded[bi]
        o.embedding_predicted, o.embedding_accepted = emb.match.card_id, emb.match.known
        o.predicted, o.score, o.margin = emb.match.card_id, emb.match.score, emb.match.margin
        o.phash_predicted = phash.predict(rec.crops(image, [emb.box])[0].image)
        o.confidence = "dropped"  # until a report of the device matches it
    reported = [v for v in verdicts if v is not None]
    said = match_boxes(gt, [v.box for v in reported])
    for gi, ri in said.items():
        o, m = outcomes[gi], reported[ri].match
        o.predicted, o.score, o.margin, o.accepted = m.card_id, m.score, m.margin, m.known
        o.confidence, o.inliers, o.runner_up = m.confidence, m.inliers, m.runner_up
        o.reported = True
    matched_reports = set(said.values())
    matched_boxes = set(pairs.values())
    false_boxes = [
        FalseBox(reported=True, reported_known=reported[ri].match.known, embedding_known=False)
        for ri in range(len(reported))
        if ri not in matched_reports
    ] + [
        FalseBox(reported=False, reported_known=False, embedding_known=embedded[bi].match.known)
        for bi in range(len(boxes))
        if bi not in matched_boxes
    ]
    if gt:
        perfect, _, _ = rec.shortlist(image, [perfect_box(g.corners) for g in gt])
        for o, pcard in zip(outcomes, perfect, strict=True):
            o.perfect_box_predicted = pcard.match.card_id
    return outcomes, false_boxes


def device_detection(
    outcomes: Sequence[Outcome], false_boxes: Sequence[FalseBox], n_scenes: int
) -> dict[str, Any]:
    """The detection section, counting what the device reports: a card is found when a report
    lies on it (after verification dropped background), a back when it is reported as a back."""
    dets = [
        DetOutcome(
            o.gt.corners, o.gt.visible, o.gt.tilt_deg, o.gt.face_down, o.gt.background,
            o.reported, o.confidence == "back",
        )
        for o in outcomes
    ]  # fmt: skip
    n_false = sum(f.reported for f in false_boxes)
    n_reported = sum(o.reported for o in outcomes) + n_false
    return detection_report(dets, n_reported, n_false, n_scenes)


def _rate(flags: Sequence[bool]) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def _top1(outcomes: Sequence[Outcome], phash: bool = False) -> dict[str, Any]:
    hits = [(o.phash_predicted if phash else o.predicted) == o.gt.card_id for o in outcomes]
    return {"top1": _rate(hits), "n": len(hits)}


def _bins(outcomes: Sequence[Outcome], attr: str, edges: Sequence[float]) -> dict[str, Any]:
    """Top-1 (model and pHash) per [lo, hi) bin of a ground-truth attribute; the last bin is closed."""
    out = {}
    for lo, hi in itertools.pairwise(edges):
        last = hi == edges[-1]
        sel = [o for o in outcomes if lo <= (v := getattr(o.gt, attr)) < hi or (last and v == hi)]
        out[f"{lo:.3g}-{hi:.3g}"] = {"model": _top1(sel), "phash": _top1(sel, phash=True)}
    return out


def _detection_bins(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Detection recall per size tertile of all cards."""
    edges = _tertiles([o.gt.size_frac for o in outcomes])
    out = {}
    for lo, hi in itertools.pairwise(edges):
        last = hi == edges[-1]
        sel = [
            o.detected
            for o in outcomes
            if lo <= o.gt.size_frac < hi or (last and o.gt.size_frac == hi)
        ]
        out[f"{lo:.3g}-{hi:.3g}"] = {"recall": _rate(sel), "n": len(sel)}
    return out


def _tertiles(values: Sequence[float]) -> list[float]:
    """Bin edges splitting the values into thirds (data-driven: scales differ between worlds)."""
    if not values:
        return [0.0, 1.0]
    q = sorted(
        set(np.quantile(np.asarray(values, dtype=np.float64), [0, 1 / 3, 2 / 3, 1]).tolist())
    )
    return q if len(q) > 1 else [q[0], q[0] + 1e-6]


def summarise(
    outcomes: list[Outcome], n_detections: int, catalogue: dict[str, str]
) -> dict[str, Any]:
    """Every figure of the report from per-card outcomes."""
    backs = [o for o in outcomes if o.gt.face_down]  # judged in the detection section only
    outcomes = [o for o in outcomes if not o.gt.face_down]
    n_detections -= sum(o.detected for o in backs)
    detected = [o for o in outcomes if o.detected]
    known = [o for o in detected if o.gt.known]
    unknown = [o for o in detected if not o.gt.known]
    confusions = Counter((o.gt.card_id, o.predicted) for o in known if o.predicted != o.gt.card_id)
    return {
        "n_cards": len(outcomes),
        "n_detections": n_detections,
        "detection_recall": _rate([o.detected for o in outcomes]),
        "detection_precision": round(len(detected) / n_detections, 4) if n_detections else None,
        "identification_top1": _top1(known)["top1"],
        "identification_top1_accepted": _rate(
            [o.predicted == o.gt.card_id and o.accepted for o in known]
        ),
        "end_to_end_top1": _rate(
            [o.detected and o.predicted == o.gt.card_id for o in outcomes if o.gt.known]
        ),
        "n_known_detected": len(known),
        "n_unknown_detected": len(unknown),
        "unknown_flagged": _rate([not o.accepted for o in unknown]),
        "known_wrongly_flagged": _rate([not o.accepted for o in known]),
        "reprints": {
            "model": _top1([o for o in known if o.gt.reprint]),
            "phash": _top1([o for o in known if o.gt.reprint], phash=True),
        },
        "phash_top1": _top1(known, phash=True)["top1"],
        "identification_top1_perfect_boxes": _rate(
            [o.perfect_box_predicted == o.gt.card_id for o in outcomes if o.gt.known]
        ),
        "detection_by_background": {
            family: _rate([o.detected for o in outcomes if o.gt.background == family])
            for family in sorted({o.gt.background for o in outcomes})
        },
        "detection_by_size": _detection_bins(outcomes),
        "by_size": _bins(known, "size_frac", _tertiles([o.gt.size_frac for o in known])),
        "by_tilt": _bins(known, "tilt_deg", TILT_EDGES),
        "by_glare": _bins(known, "glare", _tertiles([o.gt.glare for o in known])),
        "worst_confusions": [
            {
                "true": t,
                "true_name": catalogue.get(t, ""),
                "predicted": p,
                "predicted_name": catalogue.get(p, ""),
                "count": n,
            }
            for (t, p), n in confusions.most_common(10)
        ],
    }


def gates(report: dict[str, Any]) -> dict[str, Any]:
    """Each target with its value and whether it is met."""
    out = {}
    for key, (op, target) in TARGETS.items():
        value = report.get(key)
        ok = value is not None and (value >= target if op == ">=" else value <= target)
        out[key] = {"value": value, "target": f"{op} {target}", "met": bool(ok)}
    return out


def evaluate(
    bundle: Path, scene_dir: Path, catalogue_dir: Path, *, threads: int = 0
) -> dict[str, Any]:
    """Run the Recognizer of `bundle` over every scene and return the report."""
    rec = Recognizer.from_bundle(bundle, RuntimeSettings(onnx_threads=threads))
    try:
        spec = rec.manifest.embedder.input
        phash = PhashBaseline(catalogue_dir, (spec.height, spec.width))
        outcomes: list[Outcome] = []
        false_boxes: list[FalseBox] = []
        n_scenes, t0 = 0, time.perf_counter()
        for _, image, gt in load_scenes(scene_dir):
            scene_out, scene_false = evaluate_scene(rec, image, gt, phash)
            outcomes.extend(scene_out)
            false_boxes.extend(scene_false)
            n_scenes += 1
        elapsed = time.perf_counter() - t0
        names = {c.card_id: c.fields.get("name", "") for c in read_catalogue(catalogue_dir)}
        n_det = sum(o.detected for o in outcomes) + len(false_boxes)
        report = summarise(outcomes, n_det, names)
        faces = [o for o in outcomes if not o.gt.face_down]
        report["decision"] = decision_report(faces, false_boxes, n_scenes)
        report["detection"] = device_detection(outcomes, false_boxes, n_scenes)
        report.update(
            bundle_id=rec.bundle_id,
            n_scenes=n_scenes,
            ms_per_scene=round(1000 * elapsed / max(n_scenes, 1), 1),
            thresholds=rec.manifest.thresholds.model_dump(),
            backends=rec.backends,
        )
        report["targets"] = gates(report)
        return report
    finally:
        rec.close()


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    """A human table of the report (report.md)."""
    lines = [
        f"# Evaluation of bundle `{report['bundle_id']}`",
        "",
        f"{report['n_scenes']} held-out scenes, {report['n_cards']} cards "
        f"({report['n_known_detected']} known and {report['n_unknown_detected']} unknown detected), "
        f"{report['ms_per_scene']} ms per scene on this machine.",
        "",
        "| metric | model | pHash baseline | target | met |",
        "|---|---|---|---|---|",
    ]
    baseline = {"identification_top1": report["phash_top1"]}
    for key, gate in report["targets"].items():
        lines.append(
            f"| {key} | {_fmt(gate['value'])} | {_fmt(baseline.get(key))} | "
            f"{gate['target']} | {'yes' if gate['met'] else 'NO'} |"
        )
    for key in (  # identification_top1_perfect_boxes: the embedder alone, on perfect boxes
        "detection_precision",
        "identification_top1_accepted",
        "end_to_end_top1",
        "identification_top1_perfect_boxes",
    ):
        lines.append(f"| {key} | {_fmt(report[key])} | - | - | - |")
    rp = report["reprints"]
    lines.append(
        f"| reprints top-1 (n={rp['model']['n']}) | {_fmt(rp['model']['top1'])} | "
        f"{_fmt(rp['phash']['top1'])} | - | - |"
    )
    for title, key in (
        ("card size (size_frac)", "by_size"),
        ("tilt (degrees)", "by_tilt"),
        ("glare", "by_glare"),
    ):
        lines += [
            "",
            f"## Top-1 by {title}",
            "",
            "| bin | n | model | pHash |",
            "|---|---|---|---|",
        ]
        for name, cell in report[key].items():
            lines.append(
                f"| {name} | {cell['model']['n']} | {_fmt(cell['model']['top1'])} | "
                f"{_fmt(cell['phash']['top1'])} |"
            )
    lines += ["", "## Detection recall by background and by card size", "", "| bin | recall |"]
    lines.append("|---|---|")
    for family, recall in report["detection_by_background"].items():
        lines.append(f"| {family or '-'} | {_fmt(recall)} |")
    for name, cell in report["detection_by_size"].items():
        lines.append(f"| size {name} (n={cell['n']}) | {_fmt(cell['recall'])} |")
    if "decision" in report:
        lines += decision_markdown(report["decision"])
    if "detection" in report:
        lines += detection_markdown(report["detection"], report.get("previous_detection"))
    lines += ["", "## Worst confusions", "", "| true | predicted | count |", "|---|---|---|"]
    for c in report["worst_confusions"]:
        lines.append(
            f"| {c['true']} {c['true_name']} | {c['predicted']} {c['predicted_name']} | "
            f"{c['count']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    """report.json and report.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    (out / "report.md").write_text(markdown(report), "utf-8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    p.add_argument("--scenes", type=Path, required=True, help="held-out test_scenes folder")
    p.add_argument("--catalogue", type=Path, required=True, help="catalogue folder (pHash refs)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: the bundle's)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all)")
    p.add_argument(
        "--previous", type=Path, default=None,
        help="the previous bundle's report.json on the same scenes: shown beside these figures",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    report = evaluate(args.bundle, args.scenes, args.catalogue, threads=args.threads)
    if args.previous is not None:
        before = json.loads(args.previous.read_text("utf-8"))
        report["previous_detection"] = before.get("detection")
        report["previous_bundle_id"] = before.get("bundle_id")
    write_report(report, args.out or args.bundle.parent)
    print(markdown(report))
    return 0
