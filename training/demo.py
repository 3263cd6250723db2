"""`cardedge-train demo-bundle`: regenerate the demo bundle from nothing, end to end.

The same stages as the `cardedge-train` commands, in the order `make demo-bundle` runs them:

    synth -> teacher -> distill  (detector alongside, in a second process)
          -> index -> export -> bundle -> calibrate -> evaluate

Sized to finish on a 2-core CPU: a small from-scratch DINOv3 teacher, a small timm student at a
small crop size and YOLO11n-OBB at a small input. The catalogue (cards.csv + JPEG scans) is
written to the reference folder; the evaluation report is written beside the bundle. Each
stage's time lands in the report under its command's name.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training import runs

if TYPE_CHECKING:
    from training.synth.catalogue import CardRecord

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Sizes of every stage of the demo build (defaults fit the 60-minute CPU budget)."""

    out: Path = Path("models/demo")
    reference: Path = Path("reference_db/demo")
    work: Path = Path("runs/demo")
    n_cards: int = 320
    n_unknown: int = 60
    scan_height: int = 224  # 320 scans at 224 px, JPEG q95: 6.0 MB (budget 10 MB)
    n_train_scenes: int = 800
    n_val_scenes: int = 40
    n_test_scenes: int = 120
    crops_per_card: int = 12
    height: int = 112
    width: int = 80
    teacher_hidden: int = 192
    teacher_layers: int = 4
    teacher_phase1: int = 1
    teacher_phase2: int = 16
    # From-scratch backbones do not converge with ArcFace's s=64, m=0.5 on a CPU budget; a
    # cosine-softmax start with a small margin warmed up does (measured: see the report).
    arc_scale: float = 16.0
    arc_margin: float = 0.2
    margin_warmup: int = 3
    augment: float = 0.3  # extra jitter on top of the synthetic crops' own variety
    student: str = "resnet10t"
    distill_epochs: int = 10
    det_imgsz: int = 320
    det_epochs: int = 20
    det_export_hw: str = ""  # "HxW" of the shipped detector input; "" = det_imgsz square
    det_cache: str = ""  # "ram" keeps decoded training images in memory
    det_resume: bool = False  # continue the detector run in `work` from its last.pt
    background_dir: Path | None = None  # real backgrounds (make backgrounds); None: procedural
    batch: int = 64
    target_far: float = 0.02
    verify_scenes: int = 600  # fresh scenes for the verification thresholds
    threads: int = 1
    seed: int = 0
    bundle_id: str = "demo"


def synthesise(cfg: DemoConfig, data: Path) -> None:
    """The synthetic world (SYNTH's `build_world`) and the reference catalogue folder."""
    from training.synth.world import WorldSpec, build_world

    world = build_world(
        data,
        WorldSpec(
            n_cards=cfg.n_cards, n_unknown=cfg.n_unknown, obb_train=cfg.n_train_scenes,
            obb_val=cfg.n_val_scenes, cls_train=cfg.crops_per_card, cls_val=2,
            test_scenes=cfg.n_test_scenes, calib=64, seed=cfg.seed,
            background_dir=cfg.background_dir,
        ),
    )  # fmt: skip
    write_reference(world.records, data / "catalogue", cfg.reference, cfg.scan_height)


def write_reference(records: Sequence[CardRecord], catalogue: Path, out: Path, height: int) -> None:
    """The committed catalogue folder: the world's catalogue images (what the bundle's reference
    features are extracted from) scaled down to `height`, so the folder stays small. Scaled, not
    rendered again at that height: the renderer lays text and ornaments out per pixel size, so a
    224 px render is another picture of the card, and a scene or a deck made from the folder
    would show cards whose small print the bundle's references do not have."""
    from training.synth.card_render import render_card
    from training.synth.catalogue import write_catalogue_dir

    scans = {
        r.card_id: render_card(replace(r, image_path=catalogue / "images" / f"{r.card_id}.jpg"), height)
        for r in records
    }  # fmt: skip
    write_catalogue_dir(out, records, scans)


def start_detector(cfg: DemoConfig, data: Path) -> subprocess.Popen[bytes]:
    """Train (and export) the detector in a child process so it overlaps the embedder stages."""
    cmd = [
        sys.executable, "-m", "training.cli", "detector", "--data", str(data),
        "--out", str(cfg.work / "detector"), "--imgsz", str(cfg.det_imgsz),
        "--epochs", str(cfg.det_epochs), "--seed", str(cfg.seed),
        "--export", str(cfg.work / "detector.onnx"),
    ]  # fmt: skip
    if cfg.det_export_hw:
        cmd += ["--export-hw", cfg.det_export_hw]
    if cfg.det_cache:
        cmd += ["--cache", cfg.det_cache]
    if cfg.det_resume:
        cmd.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "YOLO_OFFLINE": "1"}
    log = (cfg.work / "detector.log").open("wb")
    logger.info("detector training started in the background (log: %s)", cfg.work / "detector.log")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def train_embedders(cfg: DemoConfig, data: Path) -> Path:
    """Teacher then student; returns the student's best.pt."""
    from training import distill, teacher

    t_best = teacher.train(
        teacher.TeacherConfig(
            data=data, out=cfg.work / "teacher", hidden_size=cfg.teacher_hidden,
            layers=cfg.teacher_layers, heads=max(1, cfg.teacher_hidden // 64),
            intermediate_size=4 * cfg.teacher_hidden, height=cfg.height, width=cfg.width,
            phase1_epochs=cfg.teacher_phase1, phase2_epochs=cfg.teacher_phase2,
            arc_scale=cfg.arc_scale, arc_margin=cfg.arc_margin,
            margin_warmup_epochs=cfg.margin_warmup, augment=cfg.augment, batch_size=cfg.batch,
            seed=cfg.seed,
        )
    )  # fmt: skip
    return distill.train(
        distill.DistillConfig(
            data=data, teacher=t_best, out=cfg.work / "distill", arch=cfg.student,
            height=cfg.height, width=cfg.width, epochs=cfg.distill_epochs,
            augment=cfg.augment, batch_size=cfg.batch, seed=cfg.seed,
        )
    )  # fmt: skip


def index_and_export(cfg: DemoConfig, data: Path, student: Path) -> tuple[Path, Path]:
    """`index` then `export`: the catalogue embedded by the student, and the student's ONNX;
    returns the index folder and the embedder's ONNX."""
    from training import export, index_build

    index_dir = cfg.work / "index"
    index_build.run(student, data, index_dir, target_far=cfg.target_far)
    emb = export.export_embedder(student, cfg.work / "embedder.onnx", data / "cls" / "val")
    return index_dir, emb.path


def bundle(cfg: DemoConfig, data: Path, index_dir: Path, embedder: Path) -> None:
    """`bundle`: the models, index, reference features and lineage in one bundle."""
    from training import bundle_build

    bundle_build.build(
        bundle_build.BundleInputs(
            out=cfg.out, detector_onnx=cfg.work / "detector.onnx", embedder_onnx=embedder,
            index_dir=index_dir, catalogue_dir=cfg.reference, name="demo",
            bundle_id=cfg.bundle_id, thresholds=bundle_build.thresholds_from(index_dir, 0.25, 0.7),
            runs={"teacher": cfg.work / "teacher", "student": cfg.work / "distill",
                  "detector": cfg.work / "detector"},
            data=data, features_catalogue=data / "catalogue",
        )
    )  # fmt: skip


def calibrate(cfg: DemoConfig, data: Path) -> None:
    """`calibrate`: the bundle's thresholds from its own boxes in fresh scenes."""
    from training import calibrate_scenes

    calibrate_scenes.run(
        cfg.out, data / "catalogue", data / "unknown", target_far=cfg.target_far,
        seed=cfg.seed + 7, verify_scenes=cfg.verify_scenes,
    )  # fmt: skip


def report_dir(out: Path) -> Path:
    """Where the evaluation report of a bundle goes: beside it, never inside it (the installer
    refuses files the manifest does not list)."""
    return out.parent / f"{out.name}-evaluation"


def run(cfg: DemoConfig) -> dict[str, Any]:
    """The whole build; stage timings land in the report."""
    from training import evaluate

    timings: dict[str, float] = {}
    cfg.work.mkdir(parents=True, exist_ok=True)
    data = cfg.work / "data"
    t0 = time.perf_counter()
    with runs.timed("synth", timings):
        synthesise(cfg, data)
    with runs.timed("detector+teacher+distill", timings):
        detector = start_detector(cfg, data)
        try:
            with runs.timed("teacher+distill", timings):
                student = train_embedders(cfg, data)
        finally:
            rc = detector.wait()
        if rc:
            raise RuntimeError(f"detector training failed ({rc}); see {cfg.work / 'detector.log'}")
    with runs.timed("index+export", timings):
        index_dir, embedder = index_and_export(cfg, data, student)
    with runs.timed("bundle", timings):
        bundle(cfg, data, index_dir, embedder)
    with runs.timed("calibrate", timings):
        calibrate(cfg, data)
    with runs.timed("evaluate", timings):
        report = evaluate.evaluate(
            cfg.out, data / "test_scenes", cfg.reference, threads=cfg.threads
        )
    timings["total"] = round(time.perf_counter() - t0, 1)
    config = runs.config_dict(cfg)
    for key in ("out", "reference", "work"):  # the report is committed: no folders of a machine
        config[key] = runs.portable_path(getattr(cfg, key))
    if cfg.background_dir is not None:
        config["background_dir"] = runs.portable_path(cfg.background_dir)
    report["build"] = {"timings_s": timings, "config": config}
    evaluate.write_report(report, report_dir(cfg.out))
    return report


# `make demo-bundle-full`: the detector of the committed demo bundle. Real backgrounds, 4,000
# scenes, trained at 448 on square mosaics and shipped at 256x448 (a 16:9 frame at 0.35 scale, at
# 1.12x the pixels of the quick path's 320x320 letterbox, which shows it at 0.25), 60 epochs.
# About 28 minutes an epoch on this 2-core CPU (so about a day; minutes on a GPU); it resumes
# from its last.pt when interrupted (run the same command again).
FULL = {
    "n_train_scenes": 4000,
    "n_val_scenes": 200,
    "det_imgsz": 448,
    "det_epochs": 60,
    "det_export_hw": "256x448",
    "det_cache": "ram",
    "det_resume": True,
    "background_dir": Path("data/backgrounds"),
    "work": Path("runs/demo-full"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    for name, value in asdict(d).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, Path) or name == "background_dir":
            p.add_argument(flag, type=Path, default=value)
        elif isinstance(value, bool):
            p.add_argument(flag, action="store_true", default=value)
        else:
            p.add_argument(flag, type=type(value), default=value)
    p.add_argument(
        "--full", action="store_true",
        help="the full path: real backgrounds, 4,000 scenes, the long resumable detector run",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k in DemoConfig.__dataclass_fields__}
    if getattr(args, "full", False):
        defaults = asdict(DemoConfig())
        # the full preset, except where a flag was given explicitly
        values |= {k: v for k, v in FULL.items() if values.get(k) == defaults[k]}
    cfg = DemoConfig(**values)
    import torch

    torch.set_num_threads(cfg.threads)
    report = run(cfg)
    print(json.dumps(report["targets"], indent=2))
    print(json.dumps(report["build"]["timings_s"], indent=2))
    return 0
