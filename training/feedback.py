"""`cardedge-train feedback`: corrections kept by devices (POST /v1/feedback) -> training data.

    cardedge-train feedback --feedback STATE/feedback --out data/synth [--split train]
                            [--overlay STATE/overlay]

reads a device's feedback folder (copied off it, e.g. `rsync pi:/var/lib/cardedge/feedback .`)
and the views taught on it (its overlay folder, by default the one beside --feedback) and
writes, into the layout the training stages already read:

    OUT/cls/<split>/<card_id>/fb-<feedback_id>.jpg   rectified crop, labelled with the right card
                                                     (teacher / distill read cls/ as ImageFolder)
    OUT/cls/<split>/<card_id>/ov-<view_id>.jpg       a taught view's crop (edge.overlay.store); one
                                                     taught with a correction exported above is
                                                     not written twice
    OUT/unknown/fb-<feedback_id>.jpg                 detections that were no card (negatives)
    OUT/feedback.csv                                 one row per correction or view: where it went

Pointing --out at a `synth datasets` folder adds the corrections to it, so the next bundle learns
from them. Crops go through edge.recognize.rectify, the warp the device runs; a correction without a polygon
is a crop already and is resized. Records written before are skipped (the file exists).
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.feedback import FeedbackRecord, read_feedback
from edge.imageio import read_image_file
from edge.overlay.files import INDEX_NAME, read_index
from edge.recognize.rectify import order_corners, warp_card
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

CROP_H, CROP_W = 224, 160  # the embedder's portrait 63:88 crop (training.data.embedder_spec)


def crop_of(record: FeedbackRecord, folder: Path, height: int, width: int) -> ImageRGB:
    """The correction's card as an upright height x width crop."""
    image = read_image_file(folder / record.image, max_pixels=200_000_000)
    if record.polygon is None:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    corners = order_corners(np.asarray(record.polygon, dtype=np.float32))
    return warp_card(image, corners, height, width)


def export(
    feedback: Path, out: Path, *, split: str = "train", overlay: Path | None = None
) -> dict[str, int]:
    """Write every correction under `feedback` and every view taught in `overlay` into `out`;
    returns counts by kind."""
    counts = {"cards": 0, "not_a_card": 0, "taught": 0, "skipped": 0, "failed": 0}
    rows: list[dict[str, object]] = []
    records = read_feedback(feedback)
    for record in records:
        if record.not_a_card:
            dest = out / "unknown" / f"fb-{record.feedback_id}.jpg"
        else:
            assert record.card_id is not None
            dest = out / "cls" / split / record.card_id / f"fb-{record.feedback_id}.jpg"
        if dest.exists():
            counts["skipped"] += 1
            continue
        try:
            crop = crop_of(record, feedback / record.feedback_id, CROP_H, CROP_W)
        except EdgeError as e:
            logger.warning("feedback %s: %s", record.feedback_id, e)
            counts["failed"] += 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(dest), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {dest}")
        counts["not_a_card" if record.not_a_card else "cards"] += 1
        rows.append(
            {
                "feedback_id": record.feedback_id,
                "card_id": record.card_id or "",
                "not_a_card": int(record.not_a_card),
                "bundle_id": record.bundle_id or "",
                "file": dest.relative_to(out).as_posix(),
                "note": record.note or "",
            }
        )
    if overlay is not None:
        rows += _export_taught(overlay, out, split, {r.feedback_id for r in records}, counts)
    if rows:
        index = out / "feedback.csv"
        new = not index.exists()
        with index.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)
    return counts


def _export_taught(
    overlay: Path, out: Path, split: str, exported: set[str], counts: dict[str, int]
) -> list[dict[str, object]]:
    """The overlay's views as labelled crops (views taught with a correction that is in the
    feedback folder are that correction's crop already: skipped)."""
    index = overlay / INDEX_NAME
    if not index.is_file():
        return []
    try:
        entries, _ = read_index(index)
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("overlay %s unreadable, no taught views exported: %s", index, e)
        counts["failed"] += 1
        return []
    rows: list[dict[str, object]] = []
    for entry in entries:
        dest = out / "cls" / split / entry.card_id / f"ov-{entry.view_id}.jpg"
        if (entry.feedback_id and entry.feedback_id in exported) or dest.exists():
            counts["skipped"] += 1
            continue
        bgr = cv2.imread(str(overlay / "views" / f"{entry.view_id}.jpg"), cv2.IMREAD_COLOR)
        if bgr is None:
            logger.warning("taught view %s: crop unreadable", entry.view_id)
            counts["failed"] += 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        crop = cv2.resize(bgr, (CROP_W, CROP_H), interpolation=cv2.INTER_AREA)
        if not cv2.imwrite(str(dest), crop):
            raise OSError(f"cannot write {dest}")
        counts["taught"] += 1
        rows.append(
            {
                "feedback_id": entry.feedback_id or f"overlay:{entry.view_id}",
                "card_id": entry.card_id,
                "not_a_card": 0,
                "bundle_id": entry.bundle_id,
                "file": dest.relative_to(out).as_posix(),
                "note": f"taught view ({entry.source})",
            }
        )
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feedback", type=Path, required=True, help="a device's feedback/ folder")
    p.add_argument("--out", type=Path, required=True, help="dataset folder (e.g. data/synth)")
    p.add_argument("--split", default="train", help="cls/ split to add the crops to")
    p.add_argument(
        "--overlay",
        type=Path,
        help="a device's overlay/ folder of taught views (default: beside --feedback)",
    )


def main(args: argparse.Namespace) -> int:
    if not args.feedback.is_dir():
        print(f"error: {args.feedback} is not a folder")
        return 2
    overlay = args.overlay or args.feedback.resolve().parent / "overlay"
    counts = export(args.feedback, args.out, split=args.split, overlay=overlay)
    print(
        f"{counts['cards']} card crop(s) and {counts['taught']} taught view(s) -> "
        f"{args.out / 'cls' / args.split}, "
        f"{counts['not_a_card']} not-a-card -> {args.out / 'unknown'}, "
        f"{counts['skipped']} already there, {counts['failed']} unreadable"
    )
    return 1 if counts["failed"] else 0
