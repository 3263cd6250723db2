"""Card detector: ultralytics YOLO11n-OBB trained on the synthetic OBB dataset, exported to ONNX.

Built from `yolo11n-obb.yaml` (random init, offline) or from `--weights` for users who have
pretrained ones. Ultralytics keeps its own run folder (`<out>/ultralytics/`); this module mirrors
its per-epoch metrics into the project's run format (metrics.jsonl, logs.md) and copies
best.pt / last.pt to the run directory. The ONNX export is what edge.recognize.detect decodes:
(1, 4 + nc + 1, N) at the chosen input size.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import runs

os.environ.setdefault("YOLO_OFFLINE", "1")

logger = logging.getLogger(__name__)

ULTRA_DIR = "ultralytics"


@dataclass
class DetectorConfig:
    """Everything a detector run depends on; written to the run's config.yaml."""

    data: Path = Path("data/synth")  # synth output with obb/data.yaml
    out: Path = Path("runs/detector")
    model: str = "yolo11n-obb.yaml"
    weights: Path | None = None
    imgsz: int = 320
    epochs: int = 30
    batch: int = 16
    workers: int = 0
    device: str = ""  # "" = cuda:0 when present, else cpu
    patience: int = 100
    mosaic: float = 1.0
    close_mosaic: int = 5
    seed: int = 0
    resume: bool = False
    cache: str = ""  # "ram": decoded, resized images kept in memory (a CPU epoch is faster)
    mlflow: Path | None = None


def _starting_weights(cfg: DetectorConfig) -> Path:
    """`--weights` as a checkpoint: a .pt as is; a shipped detector's ONNX (a bundle's
    detector.onnx) rebuilt into one in the run folder, its classes matched by name to the data's
    (training/detector_warmstart.py)."""
    assert cfg.weights is not None
    if cfg.weights.suffix.lower() != ".onnx":
        return cfg.weights
    import yaml

    from training.detector_warmstart import checkpoint_from_onnx

    spec = yaml.safe_load(_data_yaml(cfg.data).read_text("utf-8"))
    raw = spec.get("names", {})
    names = dict(enumerate(raw)) if isinstance(raw, list) else {int(k): v for k, v in raw.items()}
    return checkpoint_from_onnx(cfg.weights, cfg.out / "warmstart.pt", names, cfg.model)


def _data_yaml(data: Path) -> Path:
    """Accept the synth root, its obb/ folder or the data.yaml itself."""
    for candidate in (data, data / "data.yaml", data / "obb" / "data.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no OBB data.yaml under {data}")


def _device(cfg: DetectorConfig) -> str:
    if cfg.device:
        return cfg.device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _epoch_logger(run: runs.RunDir) -> Any:
    """An ultralytics on_fit_epoch_end callback writing our metrics.jsonl / logs.md rows."""

    seen: set[int] = set()
    clock: dict[str, float] = {}  # when the previous epoch ended, in this process

    def on_fit_epoch_end(trainer: Any) -> None:
        # ultralytics fires this once more after the final validation; log each epoch once.
        if trainer.epoch in seen or trainer.epoch >= trainer.epochs:
            return
        seen.add(int(trainer.epoch))
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        # images seen (RunDir adds the wall clock): a learning curve across resumed sessions
        now = time.time()
        since = clock.get("last") or float(getattr(trainer, "train_time_start", now))
        clock["last"] = now
        row: dict[str, Any] = {
            "epoch": int(trainer.epoch),
            "images": (int(trainer.epoch) + 1) * len(trainer.train_loader.dataset),
            "epoch_s": round(now - since, 1),
        }
        for key, value in {**losses, **trainer.metrics}.items():
            name = key.replace("metrics/", "").replace("(B)", "").replace("/", "_")
            row[name] = round(float(value), 5)
        run.log_epoch(row)

    return on_fit_epoch_end


def train(cfg: DetectorConfig) -> Path:
    """Train YOLO11n-OBB; returns the run's best.pt."""
    from ultralytics import YOLO

    runs.seed_everything(cfg.seed)
    run = runs.RunDir(cfg.out, cfg, resume=cfg.resume, mlflow_store=cfg.mlflow)
    ultra = cfg.out / ULTRA_DIR
    last = ultra / "weights" / "last.pt"
    if cfg.resume and not last.exists() and (cfg.out / "last.pt").exists():
        last.parent.mkdir(parents=True, exist_ok=True)  # a run copied from another machine
        shutil.copy2(cfg.out / "last.pt", last)
    if cfg.resume and not last.exists():
        raise FileNotFoundError(
            f"--resume: no checkpoint in {cfg.out} (neither last.pt nor {ULTRA_DIR}/weights/"
            "last.pt); copy the packed run there first, or drop --resume to start over"
        )
    if cfg.resume:
        model = YOLO(str(last))
        model.add_callback("on_fit_epoch_end", _epoch_logger(run))
        # the checkpoint names the folders of the machine that wrote it: point it at this one's
        model.train(
            resume=str(last), data=str(_data_yaml(cfg.data).resolve()), device=_device(cfg),
            workers=cfg.workers, batch=cfg.batch, cache=cfg.cache or False,
            save_dir=str(ultra.resolve()),
        )  # fmt: skip
    else:
        # Fine-tuning the ultralytics way: the model built from the starting checkpoint, so
        # every layer whose shape the data keeps (all of them for the same classes) carries over.
        model = YOLO(cfg.model) if cfg.weights is None else YOLO(str(_starting_weights(cfg)))
        model.add_callback("on_fit_epoch_end", _epoch_logger(run))
        model.train(
            data=str(_data_yaml(cfg.data).resolve()),
            imgsz=cfg.imgsz,
            epochs=cfg.epochs,
            batch=cfg.batch,
            workers=cfg.workers,
            device=_device(cfg),
            patience=cfg.patience,
            mosaic=cfg.mosaic,
            close_mosaic=cfg.close_mosaic,
            seed=cfg.seed,
            cache=cfg.cache or False,
            deterministic=True,
            project=str(cfg.out.resolve()),
            name=ULTRA_DIR,
            exist_ok=True,
            plots=False,
            verbose=False,
            amp=False,
        )
    for name in ("best.pt", "last.pt"):
        src = ultra / "weights" / name
        if src.exists():
            shutil.copy2(src, cfg.out / name)
    run.close()
    return cfg.out / "best.pt"


PACKED = ("config.yaml", "metrics.jsonl", "logs.md", "curve.jsonl")


def pack(run: Path, out: Path) -> Path:
    """A run folder another machine (or the next session) resumes from, small enough to commit:
    last.pt with the optimizer's moments in bfloat16 (fp32's range, so Adam's tiny second moments
    do not flush to zero; torch casts them back on load), and the run's logs and curve."""
    import torch

    src = run / ULTRA_DIR / "weights" / "last.pt"
    if not src.exists():
        src = run / "last.pt"
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    opt = ckpt.get("optimizer")
    if opt is not None:
        for state in opt["state"].values():
            for key, value in state.items():
                if torch.is_tensor(value) and value.is_floating_point() and value.numel() > 1:
                    state[key] = value.to(torch.bfloat16)
    # the checkpoint names the folders of the machine that wrote it; resume names this one's
    holders = [ckpt.get("train_args")] + [
        getattr(ckpt.get(m), "args", None) for m in ("model", "ema")
    ]  # the models keep a copy of the arguments too
    for holder in holders:
        args = holder if isinstance(holder, dict) else getattr(holder, "__dict__", None)
        if not isinstance(args, dict):
            continue
        for key in ("data", "project", "save_dir", "model", "resume"):
            value = args.get(key)
            if isinstance(value, str) and Path(value).is_absolute():
                args[key] = runs.portable_path(Path(value))
    if isinstance(ckpt.get("git"), dict):
        ckpt["git"] = {k: v for k, v in ckpt["git"].items() if k != "root"}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out / "last.pt")
    for name in PACKED:
        if (run / name).exists():
            shutil.copy2(run / name, out / name)
    logger.info("packed %s (epoch %s) into %s", src, ckpt.get("epoch"), out)
    return out / "last.pt"


def parse_hw(text: str) -> tuple[int, int]:
    """ "256x448" (height x width) or "320" (square) -> (h, w), both multiples of 32."""
    parts = [int(v) for v in text.lower().split("x")]
    h, w = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    if len(parts) > 2 or h % 32 or w % 32 or h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: want HxW in multiples of 32, e.g. 256x448")
    return h, w


def export_onnx(weights: Path, out: Path, imgsz: int | tuple[int, int]) -> Path:
    """YOLO checkpoint -> ONNX (static 1 x 3 x H x W, opset 17) at `out`. A fully
    convolutional detector trained on square mosaics runs at any input of multiples of 32: a
    16:9 camera gets a 16:9-ish input (e.g. 256x448) instead of a square letterbox's grey bars."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    size = list(imgsz) if isinstance(imgsz, tuple) else imgsz
    produced = model.export(format="onnx", imgsz=size, opset=17, dynamic=False, simplify=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if Path(produced).resolve() != out.resolve():  # leave no stray .onnx beside the checkpoint
        shutil.move(produced, out)
    scrub_paths(out)
    logger.info("detector exported to %s at %s px", out, imgsz)
    return out


def scrub_paths(onnx_path: Path) -> None:
    """Drop the building machine's absolute paths from the ONNX metadata (ultralytics writes the
    dataset path into its description), so a shipped model names no machine's folders."""
    import re

    import onnx

    model = onnx.load(str(onnx_path))
    changed = False
    for prop in model.metadata_props:
        cleaned = re.sub(r"(?<![\w.])/(?:[^\s/]+/)+([^\s/]+)", r"\1", prop.value)
        if cleaned != prop.value:
            prop.value, changed = cleaned, True
    if changed:
        onnx.save(model, str(onnx_path))


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DetectorConfig()
    p.add_argument("--data", type=Path, default=None, help="synth output or obb/data.yaml")
    p.add_argument("--out", type=Path, default=None, help="run dir (SM_MODEL_DIR if set)")
    p.add_argument("--model", default=d.model, help="model yaml (random init)")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="starting weights: a YOLO11n-OBB .pt or a bundle's detector.onnx",
    )
    for name in ("imgsz", "epochs", "batch", "workers", "patience", "close_mosaic", "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    p.add_argument("--mosaic", type=float, default=d.mosaic)
    p.add_argument("--device", default=d.device, help="'' auto, cpu, 0, 0,1 (ultralytics DDP)")
    p.add_argument("--export", type=Path, default=None, help="also export best.pt to this ONNX")
    p.add_argument(
        "--export-hw", type=parse_hw, default=None,
        help="the ONNX input as HxW (e.g. 256x448 for a 16:9 camera); default imgsz square",
    )  # fmt: skip
    p.add_argument(
        "--pack", type=Path, default=None,
        help="do not train: write a small resumable copy of the run (--out) into this folder",
    )  # fmt: skip
    p.add_argument("--cache", default=d.cache, choices=("", "ram", "disk"), help="image cache")
    p.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    p.add_argument("--mlflow", type=Path, default=None, help="log to a local MLflow store")


def main(args: argparse.Namespace) -> int:
    cfg = runs.config_from_args(DetectorConfig, args)
    if args.pack is not None:
        print(f"wrote {pack(cfg.out, args.pack)}")
        return 0
    try:
        best = train(cfg)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.export is not None:
        export_onnx(best, args.export, args.export_hw or cfg.imgsz)
    return 0
