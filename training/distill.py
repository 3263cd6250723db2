"""Student distillation: a timm network learns to reproduce the teacher's card embeddings.

The student (ConvNeXt-Tiny by default, EfficientNet-Lite0 as the Hailo-friendly option, any timm
name) gets a linear projection to the teacher's dimension. Loss: MSE plus (1 - cosine) between the
L2-normalised student and teacher embeddings. Each batch is preprocessed twice by
`edge.recognize.embed.preprocess`, once per model's own input spec, so the teacher sees inputs normalised
the way it was trained. An optional cache keeps the teacher's output per (image, augmentation
variant), so the teacher runs once per pair. The best checkpoint is chosen by retrieval top-1.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from edge.bundles.manifest import InputSpec
from training import runs
from training.data import crop_dataset, embedder_spec, make_collate, retrieval_eval
from training.teacher import load_teacher

logger = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    """Everything a distillation run depends on; written to the run's config.yaml."""

    data: Path = Path("data/synth")
    teacher: Path = Path("runs/teacher/best.pt")
    out: Path = Path("runs/distill")
    arch: str = "convnext_tiny"
    height: int = 224
    width: int = 160
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    augment: float = 1.0
    variants: int = 4
    mse_weight: float = 1.0
    cos_weight: float = 1.0
    cache: bool = True
    max_val: int = 2000
    seed: int = 0
    resume: bool = False
    mlflow: Path | None = None


class StudentModel(nn.Module):
    """timm backbone (global-pooled features) -> linear projection to the teacher's dimension."""

    def __init__(self, arch: str, embed_dim: int) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = timm.create_model(arch, pretrained=False, num_classes=0)
        # Pooled feature width; timm nets with a conv head (MobileNetV3) expose it separately.
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.proj = nn.Linear(int(width), embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(self.backbone(x))
        return out


def load_student(path: Path) -> tuple[StudentModel, InputSpec]:
    """A trained student (eval mode) and its input spec from a checkpoint written by `train`."""
    state = runs.load_checkpoint(path)
    model = StudentModel(state["arch"], state["embed_dim"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, InputSpec(**state["input_spec"])


def distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, mse_weight: float = 1.0, cos_weight: float = 1.0
) -> torch.Tensor:
    """MSE + (1 - cosine) between L2-normalised embeddings (scale-free, like the runtime's)."""
    s = F.normalize(student, dim=1)
    t = F.normalize(teacher, dim=1)
    mse = F.mse_loss(s, t, reduction="sum") / s.shape[0]
    cos = (1.0 - (s * t).sum(dim=1)).mean()
    return mse_weight * mse + cos_weight * cos


class TeacherCache:
    """Teacher embeddings keyed by (sample index, augmentation variant); optional on-disk copy."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.store: dict[tuple[int, int], torch.Tensor] = {}
        if path is not None and path.exists():
            self.store = torch.load(path, map_location="cpu", weights_only=False)
            logger.info("teacher cache: %d embeddings from %s", len(self.store), path)

    @torch.no_grad()
    def get(
        self, teacher: nn.Module, x: torch.Tensor, indices: torch.Tensor, variant: int
    ) -> torch.Tensor:
        keys = [(int(i), variant) for i in indices]
        missing = [j for j, k in enumerate(keys) if k not in self.store]
        if missing:
            fresh = teacher(x[missing])
            for j, emb in zip(missing, fresh, strict=True):
                self.store[keys[j]] = emb.clone()
        return torch.stack([self.store[k] for k in keys])

    def save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            torch.save(self.store, tmp)
            tmp.replace(self.path)


def train(cfg: DistillConfig) -> Path:
    """Distil the student; returns the path of best.pt."""
    env = runs.init_distributed()
    runs.seed_everything(cfg.seed + env.rank)
    run = runs.RunDir(cfg.out, cfg, resume=cfg.resume, env=env, mlflow_store=cfg.mlflow)
    teacher, t_spec = load_teacher(cfg.teacher)
    for p in teacher.parameters():
        p.requires_grad = False
    spec = embedder_spec(cfg.height, cfg.width)
    dataset = crop_dataset(
        cfg.data / "cls" / "train",
        (cfg.height, cfg.width),
        augment_strength=cfg.augment,
        variants=cfg.variants,
        seed=cfg.seed,
    )
    student = StudentModel(cfg.arch, teacher.embed_dim)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    start, best = 0, -1.0
    state = run.load_last() if cfg.resume else None
    if state is not None:
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best = state["epoch"] + 1, state["best_top1"]
    cache_path = cfg.out / f"teacher_cache.rank{env.rank}.pt" if cfg.cache else None
    cache = TeacherCache(cache_path) if cfg.cache else None
    collate = make_collate([spec, t_spec])
    for epoch in range(start, cfg.epochs):
        loss = _train_epoch(student, teacher, cache, optimizer, dataset, collate, cfg, env, epoch)
        sched.step()
        metrics = retrieval_eval(student, cfg.data, spec, cfg.max_val) if env.is_main else {}
        metrics = runs.broadcast_object(metrics, env)
        is_best = metrics["top1"] > best
        best = max(best, metrics["top1"])
        run.log_epoch({"epoch": epoch, "loss": loss, **metrics, "best_top1": best})
        run.save(_checkpoint(student, optimizer, sched, epoch, best, spec, cfg), best=is_best)
        if cache is not None:
            cache.save()
    runs.barrier(env)
    run.close()
    return run.best_path


def _train_epoch(
    student: StudentModel,
    teacher: nn.Module,
    cache: TeacherCache | None,
    optimizer: torch.optim.Optimizer,
    dataset: Any,
    collate: Any,
    cfg: DistillConfig,
    env: runs.DistEnv,
    epoch: int,
) -> float:
    """One pass over the (sharded) crops; returns the mean loss over every rank."""
    dataset.set_epoch(epoch)
    net = runs.wrap_ddp(student, env)
    loader = runs.make_loader(
        dataset, batch_size=cfg.batch_size, env=env, epoch=epoch, seed=cfg.seed, collate=collate
    )
    student.train()
    total, count = 0.0, 0
    for (xs, xt), _, idx in tqdm(
        loader, desc=f"distill {epoch}", disable=not env.is_main, leave=False
    ):
        with torch.no_grad():
            target = cache.get(teacher, xt, idx, dataset.variant) if cache else teacher(xt)
        loss = distill_loss(net(xs), target, cfg.mse_weight, cfg.cos_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.item()) * len(idx)
        count += len(idx)
    return runs.all_reduce_mean(total / max(count, 1), env)


def _checkpoint(
    student: StudentModel,
    optimizer: torch.optim.Optimizer,
    sched: Any,
    epoch: int,
    best: float,
    spec: InputSpec,
    cfg: DistillConfig,
) -> dict[str, Any]:
    return {
        "kind": "student",
        "epoch": epoch,
        "best_top1": best,
        "arch": student.arch,
        "embed_dim": student.embed_dim,
        "model": student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": sched.state_dict(),
        "input_spec": spec.model_dump(),
        "config": runs.config_dict(cfg),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DistillConfig()
    p.add_argument("--data", type=Path, default=None, help="synth output (SM_CHANNEL_TRAIN if set)")
    p.add_argument("--teacher", type=Path, default=d.teacher, help="teacher best.pt")
    p.add_argument("--out", type=Path, default=None, help="run dir (SM_MODEL_DIR if set)")
    p.add_argument(
        "--arch", default=d.arch, help="any timm model name (efficientnet_lite0 for Hailo)"
    )
    for name in ("height", "width", "epochs", "batch_size", "variants", "max_val", "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "weight_decay", "augment", "mse_weight", "cos_weight"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--no-cache", dest="cache", action="store_false", help="no teacher cache")
    p.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    p.add_argument("--mlflow", type=Path, default=None, help="log to a local MLflow store")


def main(args: argparse.Namespace) -> int:
    best = train(runs.config_from_args(DistillConfig, args))
    logger.info("student best checkpoint: %s", best)
    return 0
