"""The learning curve of a long detector run: held-out recall against training hours and images.

`cardedge-train detector-curve --run DIR --scenes DIR [--hw 256x448]` exports the run's
current last.pt (its EMA weights, as ultralytics saves them each epoch), runs it through the
device's own detector on held-out scenes (training/evaluate_detection.py) and appends a point
to DIR/curve.jsonl; `--plot FILE.png` draws every point so far. Training hours come from the
run's metrics.jsonl (one row per epoch, with its wall clock), summed over resumed sessions by
counting only the gaps of a single epoch's length, so hours the run lay stopped are not counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CURVE_NAME = "curve.jsonl"
FIGURES = (
    ("recall_unoccluded_80px", "unoccluded, short side >= 80 px (bar 0.97)"),
    ("recall_unoccluded_40_80px", "unoccluded, 40-80 px (bar 0.85)"),
    ("recall_worst_family", "worst background family (bar 0.93)"),
    ("precision", "precision of boxes"),
    ("backs_detected", "card backs detected (bar 0.90)"),
)


def training_hours(metrics: list[dict[str, Any]], first_epoch_s: float = 0.0) -> list[float]:
    """Hours of training at the end of each logged epoch: the sum of the epochs' own lengths
    (`epoch_s`), so hours the run lay stopped between sessions do not count. An epoch logged
    without its length counts as the clock since the previous one when that is under three
    typical epochs (`first_epoch_s`, else the median length), else as a typical epoch."""
    known = [float(m["epoch_s"]) for m in metrics if m.get("epoch_s")]
    typical = first_epoch_s or (sorted(known)[len(known) // 2] if known else 0.0)
    hours, total, previous = [], 0.0, None
    for m in metrics:
        gap = float(m["time"]) - previous if previous is not None else None
        previous = float(m["time"])
        if m.get("epoch_s"):
            total += float(m["epoch_s"])
        elif gap is not None and typical and gap < 3 * typical:  # the clock between epochs
            total += gap
        else:  # the first epoch, or one after a stop: as long as a typical one
            total += typical
        hours.append(total / 3600)
    return hours


def _results_epoch_s(run: Path) -> float:
    """The first epoch's length from ultralytics' results.csv (its `time` column), or 0."""
    path = run / "ultralytics" / "results.csv"
    if not path.exists():
        return 0.0
    rows = [r.split(",") for r in path.read_text("utf-8").splitlines()]
    header = rows[0]
    if "time" not in header:
        return 0.0
    for r in rows[1:]:
        if r and r[0].strip() == "1":
            return float(r[header.index("time")])
    return 0.0


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def add_point(run: Path, scenes: Path, hw: tuple[int, int], threads: int = 0) -> dict[str, Any]:
    """Evaluate the run's latest checkpoint and append the point to its curve."""
    from training.detector import export_onnx
    from training.evaluate_detection import evaluate_onnx

    metrics = _metrics(run)
    if not metrics:
        raise FileNotFoundError(f"{run} has no epoch logged yet (metrics.jsonl)")
    last = run / "ultralytics" / "weights" / "last.pt"
    if not last.exists():
        last = run / "last.pt"
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(last, Path(tmp) / "detector.onnx", hw)
        report = evaluate_onnx(onnx, scenes, hw, threads=threads)
    point = {
        "epoch": int(metrics[-1]["epoch"]) + 1,
        "images": int(metrics[-1].get("images", 0)),
        "hours": round(training_hours(metrics, _results_epoch_s(run))[-1], 3),
        "input_hw": list(hw),
        **{k: report[k] for k, _ in FIGURES},
        "recall": report["recall"],
        "false_per_scene": report["false_per_scene"],
        "by_family": report["by_family"],
    }
    with (run / CURVE_NAME).open("a", encoding="utf-8") as f:
        f.write(json.dumps(point) + "\n")
    return point


def plot(run: Path, out: Path, baseline: dict[str, Any] | None = None) -> Path:
    """recall (etc.) against training hours, one line per figure; the previous detector's
    figures as dotted lines when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [json.loads(x) for x in (run / CURVE_NAME).read_text("utf-8").splitlines() if x]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    # hours from the run's log as it reads now (a point's own figure was its best guess then)
    clock = training_hours(_metrics(run), _results_epoch_s(run))
    hours = [clock[p["epoch"] - 1] if p["epoch"] <= len(clock) else p["hours"] for p in points]
    for (key, label), colour in zip(FIGURES, ("C0", "C1", "C2", "C3", "C4"), strict=True):
        ax.plot(hours, [p.get(key) for p in points], "o-", color=colour, label=label)
        # a detector without a back class finds backs only as card faces: no line to beat
        if baseline and baseline.get(key) is not None and key != "backs_detected":
            ax.axhline(baseline[key], color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("training hours (2-core CPU)")
    ax.set_ylabel("held-out figure")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Detector learning curve (dotted: the previous demo detector)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    from training.detector import parse_hw

    p.add_argument("--run", type=Path, required=True, help="the detector run folder")
    p.add_argument("--scenes", type=Path, default=None, help="held-out scenes: add a point")
    p.add_argument("--hw", type=parse_hw, default=(256, 448), help="input HxW (default 256x448)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--plot", type=Path, default=None, help="draw the curve into this PNG")
    p.add_argument(
        "--baseline", type=Path, default=None,
        help="a report.json (its detection section) or evaluate-detector JSON to draw beside",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    if args.scenes is not None:
        point = add_point(args.run, args.scenes, args.hw, args.threads)
        print(json.dumps(point))
    if args.plot is not None:
        baseline = None
        if args.baseline is not None:
            doc = json.loads(args.baseline.read_text("utf-8"))
            baseline = doc[0] if isinstance(doc, list) else doc.get("detection", doc)
        print(f"wrote {plot(args.run, args.plot, baseline)}")
    return 0
