"""`cardedge bench`: per-stage latency of a bundle over many frames, and the host-overhead ratios.

Frames are a folder of images (`--images`) or, by default, synthetic 1280x720 scenes with four
of the bundle's selftest cards pasted through random perspective warps (a small local compositor:
edge must not depend on training/). Reported, from the same run:
  host_ms_median      identify time outside the two models' forward calls
  forward_ms_median   detector + embedder forward time
  host_over_forward   host / forward (medians)
  identify_over_forward  whole identify latency / forward (medians)
  verify_ms_per_card_median  verification (features, shortlist homographies, colour check) per
                      card, and verify_per_card_over_detector_forward beside the same run's
                      detector forward; host_ms_excluding_verify_median: the host work besides it
  prepost_vs_ultralytics  our detector pre+post time / ultralytics' own (YOLO(detector.onnx)
                      .predict on the same frames, result.speed preprocess + postprocess);
                      omitted with a note when ultralytics is not importable (as on a Pi).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import Settings, load_with_flags
from edge.imageio import read_image_file
from edge.recognize.recognizer import Recognizer
from edge.state import resolve_bundle
from edge.types import ImageRGB, StageTimings

logger = logging.getLogger(__name__)

FRAME_HW = (720, 1280)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _background(rng: np.random.Generator, h: int, w: int) -> ImageRGB:
    """A smooth coloured table-top with mild noise."""
    corners = rng.integers(30, 200, (2, 2, 3)).astype(np.float32)
    bg = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)
    bg += rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def _paste(
    frame: ImageRGB,
    card: ImageRGB,
    centre: tuple[float, float],
    height: float,
    rng: np.random.Generator,
) -> None:
    """Warp `card` into `frame` as a rotated, slightly perspective quadrilateral."""
    ch, cw = card.shape[:2]
    w = height * cw / ch
    angle = np.deg2rad(rng.uniform(-30, 30) + (180 if rng.random() < 0.25 else 0))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    quad = np.array(
        [[-w / 2, -height / 2], [w / 2, -height / 2], [w / 2, height / 2], [-w / 2, height / 2]]
    )
    quad = quad * rng.uniform(0.92, 1.0, (4, 1)) @ rot.T + centre
    src = np.array([[0, 0], [cw - 1, 0], [cw - 1, ch - 1], [0, ch - 1]], np.float32)
    m = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    size = (frame.shape[1], frame.shape[0])
    warped = cv2.warpPerspective(card, m, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((ch, cw), 255, np.uint8), m, size, flags=cv2.INTER_NEAREST)
    frame[mask > 0] = warped[mask > 0]


def compose_scene(
    cards: Sequence[ImageRGB], rng: np.random.Generator, *, per_frame: int = 4
) -> tuple[ImageRGB, list[int]]:
    """One 1280x720 scene with `per_frame` cards, one per grid cell; returns the frame and which
    card (index into `cards`) sits in each cell."""
    h, w = FRAME_HW
    cols = 2 if per_frame > 1 else 1
    rows = int(np.ceil(per_frame / cols))
    frame = _background(rng, h, w)
    chosen = []
    for i in range(per_frame):
        cx = (i % cols + 0.5) * w / cols + rng.uniform(-30, 30)
        cy = (i // cols + 0.5) * h / rows + rng.uniform(-15, 15)
        k = int(rng.integers(len(cards)))
        _paste(frame, cards[k], (cx, cy), h / rows * rng.uniform(0.75, 0.9), rng)
        chosen.append(k)
    return frame, chosen


def synthetic_frames(
    cards: Sequence[ImageRGB], n: int, *, per_frame: int = 4, seed: int = 0
) -> list[ImageRGB]:
    """n seeded 1280x720 scenes with `per_frame` cards each."""
    rng = np.random.default_rng(seed)
    return [compose_scene(cards, rng, per_frame=per_frame)[0] for _ in range(n)]


def load_frames(
    rec: Recognizer, images: Path | None, n_distinct: int, max_pixels: int
) -> list[ImageRGB]:
    """Frames from a folder, or synthetic scenes from the bundle's selftest scans."""
    if images is not None:
        paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SystemExit(f"no images in {images}")
        return [read_image_file(p, max_pixels=max_pixels) for p in paths]
    cards = [
        read_image_file(rec.bundle_dir / name, max_pixels=max_pixels)
        for name in rec.manifest.selftest
    ]
    if not cards:
        raise SystemExit(
            "the bundle has no selftest images to compose frames from; pass --images DIR"
        )
    return synthetic_frames(cards, n_distinct)


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "median": round(float(np.median(arr)), 3),
        "p90": round(float(np.percentile(arr, 90)), 3),
    }


def measure_identify(
    rec: Recognizer, frames: Sequence[ImageRGB], n: int
) -> list[tuple[StageTimings, int]]:
    """n identify calls cycling over the frames (after one warm-up pass): timings and card counts."""
    for frame in frames[: min(3, len(frames))]:
        rec.identify(frame)
    out = []
    for i in range(n):
        result = rec.identify(frames[i % len(frames)])
        out.append((result.timings, len(result.cards)))
    return out


def _ours_prepost_ms(rec: Recognizer, frame: ImageRGB) -> float:
    """Our detector's preprocess + postprocess milliseconds for one frame (forward excluded)."""
    det = rec.detector
    t0 = time.perf_counter()
    tensor, info = det.preprocess(frame)
    t1 = time.perf_counter()
    raw = det.forward(tensor)
    t2 = time.perf_counter()
    det.postprocess(raw, info, (frame.shape[0], frame.shape[1]))
    t3 = time.perf_counter()
    return (t1 - t0 + t3 - t2) * 1000.0


def _ultralytics_predictor(rec: Recognizer) -> Any | None:
    """A callable frame -> ultralytics' preprocess + postprocess ms, or None without ultralytics."""
    if importlib.util.find_spec("ultralytics") is None:
        return None
    ultralytics: Any = importlib.import_module("ultralytics")  # heavy (torch): only here
    spec, th = rec.manifest.detector, rec.manifest.thresholds
    model = ultralytics.YOLO(str(rec.bundle_dir / spec.file), task="obb")
    kwargs: dict[str, Any] = {
        "imgsz": (spec.input.height, spec.input.width),
        "conf": th.det_conf,
        "iou": th.det_iou,
        "max_det": th.max_det,
        "verbose": False,
        "device": "cpu",
    }

    def prepost_ms(frame: ImageRGB) -> float:
        speed = model.predict(np.ascontiguousarray(frame[:, :, ::-1]), **kwargs)[0].speed
        return float(speed["preprocess"]) + float(speed["postprocess"])

    return prepost_ms


def measure_prepost(
    rec: Recognizer, frames: Sequence[ImageRGB], n: int
) -> tuple[list[float], list[float] | None]:
    """Detector pre+post ms, ours and ultralytics' (None without it), interleaved frame by frame
    over the same frames so that load on a shared machine hits both alike."""
    theirs_fn = _ultralytics_predictor(rec)
    for frame in frames[:3]:  # warm-up
        _ours_prepost_ms(rec, frame)
        if theirs_fn is not None:
            theirs_fn(frame)
    ours: list[float] = []
    theirs: list[float] = []
    for i in range(n):
        frame = frames[i % len(frames)]
        ours.append(_ours_prepost_ms(rec, frame))
        if theirs_fn is not None:
            theirs.append(theirs_fn(frame))
    return ours, (theirs if theirs_fn is not None else None)


def _stage_stats(timings: Sequence[StageTimings]) -> dict[str, dict[str, float]]:
    """Median and p90 per stage, plus the host part of detect and embed (stage minus forward)."""
    series = {
        name: [getattr(t, name) for t in timings]
        for name in ("detect", "rectify", "embed", "search", "verify", "total")
    }
    series["detect_forward"] = [t.detect_forward for t in timings]
    series["detect_host"] = [t.detect - t.detect_forward for t in timings]
    series["embed_forward"] = [t.embed_forward for t in timings]
    series["embed_host"] = [t.embed - t.embed_forward for t in timings]
    return {name: _stats(values) for name, values in series.items()}


def _verify_figures(runs: Sequence[tuple[StageTimings, int]]) -> dict[str, Any]:
    """Verification per card beside the detector's forward, and the host work other than it."""
    timings = [t for t, _ in runs]
    det_forward = float(np.median([t.detect_forward for t in timings]))
    host_other = [t.total - t.detect_forward - t.embed_forward - t.verify for t in timings]
    per_card = [t.verify / n for t, n in runs if n]
    out: dict[str, Any] = {
        "host_ms_excluding_verify_median": round(float(np.median(host_other)), 3)
    }
    if per_card:
        med = float(np.median(per_card))
        out["verify_ms_per_card_median"] = round(med, 3)
        out["verify_per_card_over_detector_forward"] = round(med / det_forward, 4)
    return out


def run_bench(rec: Recognizer, frames: Sequence[ImageRGB], n: int) -> dict[str, Any]:
    """Every figure of the report, as one JSON-able dict."""
    runs = measure_identify(rec, frames, n)
    timings = [t for t, _ in runs]
    forward = [t.detect_forward + t.embed_forward for t in timings]
    host = [t.total - f for t, f in zip(timings, forward, strict=True)]
    total = [t.total for t in timings]
    report: dict[str, Any] = {
        "bundle_id": rec.bundle_id,
        "frames": n,
        "frame_size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
        "cards_per_frame_median": float(np.median([c for _, c in runs])),
        "stages_ms": _stage_stats(timings),
        "host_ms_median": round(float(np.median(host)), 3),
        "host_ms_p90": round(float(np.percentile(host, 90)), 3),
        "forward_ms_median": round(float(np.median(forward)), 3),
        "host_over_forward": round(float(np.median(host) / np.median(forward)), 4),
        "identify_over_forward": round(float(np.median(total) / np.median(forward)), 4),
        "backends": rec.backends,
    }
    report.update(_verify_figures(runs))
    ours, theirs = measure_prepost(rec, frames, n)
    report["detector_prepost_ms_median"] = round(float(np.median(ours)), 3)
    if theirs is None:
        report["prepost_vs_ultralytics"] = None
        report["note"] = "ultralytics not installed: prepost_vs_ultralytics omitted"
    else:
        report["ultralytics_prepost_ms_median"] = round(float(np.median(theirs)), 3)
        report["prepost_vs_ultralytics"] = round(float(np.median(ours) / np.median(theirs)), 4)
    return report


def format_report(report: dict[str, Any]) -> str:
    """A human table of the report."""
    lines = [
        f"bundle {report['bundle_id']}: {report['frames']} frames of "
        f"{report['frame_size'][0]}x{report['frame_size'][1]}, "
        f"median {report['cards_per_frame_median']:g} cards/frame",
        f"{'stage':<16}{'median ms':>12}{'p90 ms':>10}",
    ]
    for name, s in report["stages_ms"].items():
        lines.append(f"{name:<16}{s['median']:>12.3f}{s['p90']:>10.3f}")
    for key in (
        "host_ms_median",
        "forward_ms_median",
        "host_over_forward",
        "identify_over_forward",
        "host_ms_excluding_verify_median",
        "verify_ms_per_card_median",
        "verify_per_card_over_detector_forward",
        "detector_prepost_ms_median",
        "ultralytics_prepost_ms_median",
        "prepost_vs_ultralytics",
    ):
        if report.get(key) is not None:
            lines.append(f"{key:<30}{report[key]}")
    if "note" in report:
        lines.append(f"note: {report['note']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench subcommand's options."""
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: from the config)")
    parser.add_argument(
        "--images", type=Path, help="folder of frames (default: synthetic 1280x720, 4 cards)"
    )
    parser.add_argument(
        "--frames", type=int, default=50, help="identify calls to time (default 50)"
    )
    parser.add_argument(
        "--threads", type=int, help="ONNX Runtime threads (default: from the config)"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--config", type=Path, help="config file (TOML or YAML)")
    parser.add_argument(
        "--live",
        action="store_true",
        help="measure the live loop instead: fps vs 1 / (detector + embeds x embedder forward)",
    )
    parser.add_argument(
        "--source", help="with --live: frame source URI (default: synthetic:?fast on the bundle)"
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="with --live: measured run length"
    )


def main(args: argparse.Namespace, bundle: Path, settings: Settings) -> int:
    """Load the bundle (with the configured runtime and hailo sections), build frames, run, print."""
    runtime = settings.runtime
    if args.threads is not None:
        runtime = runtime.model_copy(update={"onnx_threads": args.threads})
    rec = Recognizer.from_bundle(bundle, runtime, hailo=settings.hailo)
    try:
        frames = load_frames(rec, args.images, min(args.frames, 16), settings.limits.max_pixels)
        report = run_bench(rec, frames, max(1, args.frames))
    finally:
        rec.close()
    print(format_report(report))
    if args.json:
        print(json.dumps(report, separators=(",", ":")))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Per-stage latency and host-overhead ratios of a bundle (see edge.cli.bench)."""
    if args.live:
        from edge.cli.serve import run_bench_live

        return run_bench_live(args)
    settings = load_with_flags(args.config, {"--bundle": (("runtime", "bundle"), args.bundle)})
    return main(args, resolve_bundle(settings, args.bundle), settings)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench`."""
    p = subparsers.add_parser("bench", help="per-stage latency of a bundle")
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
