"""Teacher: a DINOv3 ViT backbone + projection head trained with ArcFace on card identities.

Phase 1 trains the head and ArcFace with the backbone frozen (right for pretrained weights);
phase 2 unfreezes the last N blocks at a lower learning rate. Users with the published weights
pass `--backbone facebook/dinov3-vitl16-pretrain-lvd1689m` (or a local copy); without them a small
`DINOv3ViTConfig` is trained from scratch, which gives a far weaker teacher than the real one.
Validation is nearest-neighbour retrieval of held-out crops against the catalogue scans.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from edge.bundles.manifest import InputSpec
from training import runs
from training.data import crop_dataset, embedder_spec, make_collate, retrieval_eval

logger = logging.getLogger(__name__)


@dataclass
class TeacherConfig:
    """Everything a teacher run depends on; written to the run's config.yaml."""

    data: Path = Path("data/synth")  # synth output: cls/{train,val}, catalogue/
    out: Path = Path("runs/teacher")
    backbone: str | None = None  # HF id or local dir of pretrained DINOv3 weights
    hidden_size: int = 192
    layers: int = 4
    heads: int = 3
    intermediate_size: int = 768
    patch_size: int = 16
    height: int = 224
    width: int = 160
    embed_dim: int = 768
    dropout: float = 0.1
    arc_margin: float = 0.5
    arc_scale: float = 64.0
    margin_warmup_epochs: int = 0  # margin ramps linearly from 0 to arc_margin over these epochs
    phase1_epochs: int = 1
    phase2_epochs: int = 4
    unfreeze_blocks: int = -1  # -1: the whole backbone (from-scratch runs need it)
    lr: float = 1e-3
    backbone_lr: float = 3e-4
    weight_decay: float = 0.05
    batch_size: int = 64
    augment: float = 1.0
    max_val: int = 2000
    seed: int = 0
    resume: bool = False
    mlflow: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ArcFace(nn.Module):
    """Additive angular margin logits (Deng et al. 2019): s * cos(theta + m) on the true class."""

    def __init__(self, dim: int, classes: int, margin: float = 0.5, scale: float = 64.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale
        self.set_margin(margin)

    def set_margin(self, margin: float) -> None:
        """Change the angular margin (warm-up from 0 helps from-scratch backbones converge)."""
        self.margin = margin
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)  # beyond it cos(theta + m) stops being monotonic
        self.mm = math.sin(math.pi - margin) * margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - cos * cos)
        phi = cos * self.cos_m - sin * self.sin_m
        phi = torch.where(cos > self.th, phi, cos - self.mm)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.scale * (onehot * phi + (1.0 - onehot) * cos)


class TeacherModel(nn.Module):
    """DINOv3 ViT -> CLS token -> projection head (hidden -> 768, GELU, dropout) -> embedding."""

    def __init__(self, backbone: DINOv3ViTModel, embed_dim: int = 768, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        hidden = int(backbone.config.hidden_size)
        self.head = nn.Sequential(
            nn.Linear(hidden, embed_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(embed_dim, embed_dim),
        )
        self.embed_dim = embed_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixel_values=pixel_values)
        cls: torch.Tensor = out.pooler_output
        result: torch.Tensor = self.head(cls)
        return result

    def blocks(self) -> list[nn.Module]:
        return list(self.backbone.model.layer)


def build_backbone(cfg: TeacherConfig) -> DINOv3ViTModel:
    """Pretrained DINOv3 when `backbone` is given, else a small config trained from scratch."""
    if cfg.backbone:
        logger.info("loading pretrained DINOv3 backbone %s", cfg.backbone)
        model: DINOv3ViTModel = DINOv3ViTModel.from_pretrained(cfg.backbone)
        return model
    config = DINOv3ViTConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate_size,
        patch_size=cfg.patch_size,
        image_size=max(cfg.height, cfg.width),
        num_register_tokens=0,
    )
    return DINOv3ViTModel(config)


def teacher_spec(cfg: TeacherConfig) -> InputSpec:
    """The teacher's own input spec (DINOv3 uses ImageNet mean/std)."""
    return embedder_spec(cfg.height, cfg.width)


def set_trainable(model: TeacherModel, phase: int, unfreeze_blocks: int) -> None:
    """Phase 1: backbone frozen. Phase 2: the last N blocks (all when N < 0) and the final norm."""
    for p in model.backbone.parameters():
        p.requires_grad = False
    if phase == 2:
        if unfreeze_blocks < 0:
            # mask_token only serves masked-image pretraining: it never gets a gradient here,
            # and DDP refuses trainable parameters that receive none.
            for name, p in model.backbone.named_parameters():
                p.requires_grad = "mask_token" not in name
        else:
            blocks = model.blocks()
            for block in blocks[len(blocks) - unfreeze_blocks :]:
                for p in block.parameters():
                    p.requires_grad = True
            for p in model.backbone.norm.parameters():
                p.requires_grad = True


def make_optimizer(
    model: TeacherModel, arcface: ArcFace, cfg: TeacherConfig
) -> torch.optim.Optimizer:
    groups: list[dict[str, Any]] = [
        {"params": list(model.head.parameters()) + list(arcface.parameters()), "lr": cfg.lr}
    ]
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.backbone_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def load_teacher(path: Path) -> tuple[TeacherModel, InputSpec]:
    """A trained teacher (eval mode) and its input spec from a checkpoint written by `train`."""
    state = runs.load_checkpoint(path)
    backbone = DINOv3ViTModel(DINOv3ViTConfig(**state["backbone_config"]))
    model = TeacherModel(backbone, state["embed_dim"], 0.0)
    model.load_state_dict(state["model"])
    model.eval()
    return model, InputSpec(**state["input_spec"])


def train(cfg: TeacherConfig) -> Path:
    """Train the teacher; returns the path of best.pt."""
    env = runs.init_distributed()
    runs.seed_everything(cfg.seed + env.rank)
    run = runs.RunDir(cfg.out, cfg, resume=cfg.resume, env=env, mlflow_store=cfg.mlflow)
    spec = teacher_spec(cfg)
    train_set = crop_dataset(
        cfg.data / "cls" / "train",
        (spec.height, spec.width),
        augment_strength=cfg.augment,
        seed=cfg.seed,
    )
    model = TeacherModel(build_backbone(cfg), cfg.embed_dim, cfg.dropout)
    arcface = ArcFace(cfg.embed_dim, len(train_set.classes), cfg.arc_margin, cfg.arc_scale)
    start, best, opt_state, opt_phase = 0, -1.0, None, 0
    state = run.load_last() if cfg.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        arcface.load_state_dict(state["arcface"])
        start, best = state["epoch"] + 1, state["best_top1"]
        opt_state, opt_phase = state["optimizer"], state["phase"]
    total = cfg.phase1_epochs + cfg.phase2_epochs
    collate = make_collate([spec])
    optimizer: torch.optim.Optimizer | None = None
    phase_now = 0
    for epoch in range(start, total):
        phase = 1 if epoch < cfg.phase1_epochs else 2
        if phase != phase_now:
            set_trainable(model, phase, cfg.unfreeze_blocks)
            optimizer = make_optimizer(model, arcface, cfg)
            if opt_state is not None and opt_phase == phase:
                optimizer.load_state_dict(opt_state)
            phase_now = phase
        assert optimizer is not None
        arcface.set_margin(_margin_at(epoch, cfg))
        loss = _train_epoch(model, arcface, optimizer, train_set, collate, cfg, env, epoch)
        metrics = (
            retrieval_eval(model, cfg.data, spec, cfg.max_val)
            if env.is_main
            else {"top1": 0.0, "top5": 0.0}
        )
        metrics = runs.broadcast_object(metrics, env)
        is_best = metrics["top1"] > best
        best = max(best, metrics["top1"])
        run.log_epoch({"epoch": epoch, "phase": phase, "loss": loss, **metrics, "best_top1": best})
        run.save(
            _checkpoint(
                model, arcface, optimizer, epoch, phase, best, spec, train_set.classes, cfg
            ),
            best=is_best,
        )
    runs.barrier(env)
    run.close()
    return run.best_path


def _margin_at(epoch: int, cfg: TeacherConfig) -> float:
    if cfg.margin_warmup_epochs <= 0:
        return cfg.arc_margin
    return cfg.arc_margin * min(1.0, epoch / cfg.margin_warmup_epochs)


def _train_epoch(
    model: TeacherModel,
    arcface: ArcFace,
    optimizer: torch.optim.Optimizer,
    dataset: Any,
    collate: Any,
    cfg: TeacherConfig,
    env: runs.DistEnv,
    epoch: int,
) -> float:
    """One pass over the (sharded) training crops; returns the mean loss over every rank."""
    dataset.set_epoch(epoch)
    net = runs.wrap_ddp(_TeacherWithArc(model, arcface), env)
    loader = runs.make_loader(
        dataset, batch_size=cfg.batch_size, env=env, epoch=epoch, seed=cfg.seed, collate=collate
    )
    model.train()
    total, count = 0.0, 0
    for (x,), labels, _ in tqdm(
        loader, desc=f"teacher {epoch}", disable=not env.is_main, leave=False
    ):
        loss = net(x, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.item()) * len(labels)
        count += len(labels)
    return runs.all_reduce_mean(total / max(count, 1), env)


class _TeacherWithArc(nn.Module):
    """Model + ArcFace as one module so DDP can wrap a single forward."""

    def __init__(self, model: TeacherModel, arcface: ArcFace) -> None:
        super().__init__()
        self.model = model
        self.arcface = arcface

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.arcface(self.model(x), labels), labels)


def _checkpoint(
    model: TeacherModel,
    arcface: ArcFace,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    phase: int,
    best: float,
    spec: InputSpec,
    classes: list[str],
    cfg: TeacherConfig,
) -> dict[str, Any]:
    return {
        "kind": "teacher",
        "epoch": epoch,
        "phase": phase,
        "best_top1": best,
        "model": model.state_dict(),
        "arcface": arcface.state_dict(),
        "optimizer": optimizer.state_dict(),
        "backbone_config": model.backbone.config.to_dict(),
        "embed_dim": model.embed_dim,
        "input_spec": spec.model_dump(),
        "classes": classes,
        "config": runs.config_dict(cfg),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TeacherConfig()
    p.add_argument("--data", type=Path, default=None, help="synth output (SM_CHANNEL_TRAIN if set)")
    p.add_argument("--out", type=Path, default=None, help="run dir (SM_MODEL_DIR if set)")
    p.add_argument("--backbone", default=None, help="pretrained DINOv3 id or folder")
    for name in (
        "hidden_size",
        "layers",
        "heads",
        "intermediate_size",
        "height",
        "width",
        "embed_dim",
        "phase1_epochs",
        "phase2_epochs",
        "margin_warmup_epochs",
        "unfreeze_blocks",
        "batch_size",
        "max_val",
        "seed",
    ):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in (
        "dropout",
        "arc_margin",
        "arc_scale",
        "lr",
        "backbone_lr",
        "weight_decay",
        "augment",
    ):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    p.add_argument("--mlflow", type=Path, default=None, help="log to a local MLflow store")


def main(args: argparse.Namespace) -> int:
    best = train(runs.config_from_args(TeacherConfig, args))
    logger.info("teacher best checkpoint: %s", best)
    return 0
