"""Run directories, seeds, checkpoints and data-parallel helpers shared by every training command.

A run directory holds the resolved `config.yaml`, per-epoch `metrics.jsonl` and a human `logs.md`
table, `last.pt` (always) and `best.pt` (best so far), so a run can be resumed and audited (timm's
habit). The same scripts run under `torchrun` (gloo on CPU, nccl on GPUs) and as SageMaker
training jobs, which pass their folders in SM_MODEL_DIR / SM_CHANNEL_TRAIN / SM_CHANNEL_VAL.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import yaml

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
LOGS_NAME = "logs.md"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so a run with the same config repeats."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _plain(value: Any) -> Any:
    """Config values -> YAML-safe plain types (paths become strings, tuples lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict, ready for config.yaml and the bundle lineage."""
    raw = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    plain: dict[str, Any] = _plain(raw)
    return plain


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a data-parallel job (world_size 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistEnv:
    """Join the process group torchrun describes in the environment; a no-op when run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    env = DistEnv(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if env.distributed and not dist.is_initialized():
        chosen = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=chosen)
        logger.info("joined %s process group: rank %d of %d", chosen, env.rank, env.world_size)
    return env


def shutdown_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_mean(value: float, env: DistEnv) -> float:
    """Average a scalar over the ranks (the loss each rank saw on its shard)."""
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / env.world_size


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's value on every rank (e.g. the 'best so far' decision)."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sagemaker_paths() -> dict[str, Path]:
    """Folders a SageMaker training job passes in: model_dir, train, val (only those set)."""
    names = {"model_dir": "SM_MODEL_DIR", "train": "SM_CHANNEL_TRAIN", "val": "SM_CHANNEL_VAL"}
    return {key: Path(os.environ[var]) for key, var in names.items() if os.environ.get(var)}


ConfigT = TypeVar("ConfigT")


def portable_path(path: Path) -> str:
    """A path as a committed file may name it: relative to the working directory when it lies
    inside it, otherwise only its last component (no folder of the machine that wrote it)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def config_from_args(cls: type[ConfigT], args: argparse.Namespace) -> ConfigT:
    """A run config dataclass from parsed flags; `data` and `out` fall back to the SageMaker
    channel and model folders when set, then to the dataclass defaults."""
    sm = sagemaker_paths()
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["data"] = args.data or sm.get("train") or fields["data"].default
    values["out"] = args.out or sm.get("model_dir") or fields["out"].default
    return cls(**values)


class MlflowLogger:
    """Optional MLflow logging to a local store (`--mlflow DIR`); imports mlflow only when asked."""

    def __init__(self, store: Path, experiment: str, params: Mapping[str, Any]) -> None:
        try:
            import mlflow
        except ImportError as e:
            raise RuntimeError(
                "--mlflow needs the mlflow package: pip install mlflow (it is not in [train])"
            ) from e
        self._mlflow = mlflow
        mlflow.set_tracking_uri(store.resolve().as_uri())
        mlflow.set_experiment(experiment)
        mlflow.start_run()
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        self._mlflow.log_metrics(numeric, step=step)

    def close(self) -> None:
        self._mlflow.end_run()


class RunDir:
    """One training run on disk: config, metrics, human log table and checkpoints.

    Only the main rank writes; other ranks get a RunDir whose writers do nothing, so training
    loops need no `if rank == 0` around every log call.
    """

    def __init__(
        self,
        path: Path,
        config: Any,
        *,
        resume: bool = False,
        env: DistEnv | None = None,
        mlflow_store: Path | None = None,
    ) -> None:
        self.path = path
        self.env = env or DistEnv()
        self.config = config_dict(config)
        self.writes = self.env.is_main
        self._mlflow: MlflowLogger | None = None
        if not self.writes:
            return
        path.mkdir(parents=True, exist_ok=True)
        if not resume:
            for name in (METRICS_NAME, LOGS_NAME):
                (path / name).unlink(missing_ok=True)
        if resume and (path / CONFIG_NAME).exists():
            self.config = _resumed(path / CONFIG_NAME, self.config)
        (path / CONFIG_NAME).write_text(yaml.safe_dump(self.config, sort_keys=True), "utf-8")
        if mlflow_store is not None:
            self._mlflow = MlflowLogger(mlflow_store, path.name, self.config)

    @property
    def last_path(self) -> Path:
        return self.path / LAST_NAME

    @property
    def best_path(self) -> Path:
        return self.path / BEST_NAME

    def log_epoch(self, metrics: Mapping[str, Any]) -> None:
        """Append one epoch's metrics to metrics.jsonl and a row to logs.md."""
        if not self.writes:
            return
        row = {"time": round(time.time(), 3), **metrics}
        with (self.path / METRICS_NAME).open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=False) + "\n")
        logs = self.path / LOGS_NAME
        keys = [k for k in metrics if k != "time"]
        if not logs.exists():
            header = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
            logs.write_text(f"# {self.path.name}\n\n" + header, encoding="utf-8")
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in (metrics[k] for k in keys)]
        with logs.open("a", encoding="utf-8") as f:
            f.write("| " + " | ".join(cells) + " |\n")
        logger.info("%s", " ".join(f"{k}={c}" for k, c in zip(keys, cells, strict=True)))
        if self._mlflow is not None:
            step = int(metrics.get("epoch", 0))
            self._mlflow.log(metrics, step=step)

    def metrics(self) -> list[dict[str, Any]]:
        """Every epoch logged so far."""
        path = self.path / METRICS_NAME
        if not path.exists():
            return []
        lines = path.read_text("utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def save(self, state: Mapping[str, Any], *, best: bool) -> None:
        """Write last.pt atomically, and best.pt too when this epoch is the best so far."""
        if not self.writes:
            return
        _atomic_save(dict(state), self.last_path)
        if best:
            _atomic_save(dict(state), self.best_path)

    def load_last(self) -> dict[str, Any] | None:
        """The last checkpoint to resume from, or None when there is none."""
        if not self.last_path.exists():
            return None
        state: dict[str, Any] = torch.load(self.last_path, map_location="cpu", weights_only=False)
        logger.info("resuming from %s (epoch %s)", self.last_path, state.get("epoch"))
        return state

    def close(self) -> None:
        if self._mlflow is not None:
            self._mlflow.close()


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    """Save via a temporary file and rename, so an interrupted save never leaves a torn file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@contextmanager
def timed(label: str, sink: dict[str, float] | None = None) -> Iterator[None]:
    """Log (and optionally record) how long a block took, in seconds."""
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        if sink is not None:
            sink[label] = round(elapsed, 2)
        logger.info("%s took %.1f s", label, elapsed)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by RunDir.save (trusted: our own files)."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def make_loader(
    dataset: torch.utils.data.Dataset[Any],
    *,
    batch_size: int,
    env: DistEnv,
    epoch: int,
    seed: int,
    collate: Any,
    shuffle: bool = True,
    workers: int = 0,
) -> torch.utils.data.DataLoader[Any]:
    """A loader that shards across ranks (DistributedSampler) and reshuffles per epoch by seed."""
    sampler: torch.utils.data.Sampler[int]
    if env.distributed:
        dsampler: torch.utils.data.DistributedSampler[Any] = torch.utils.data.DistributedSampler(
            dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed
        )
        dsampler.set_epoch(epoch)
        sampler = dsampler
    elif shuffle:
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        sampler = torch.utils.data.RandomSampler(dataset, generator=gen)  # type: ignore[arg-type]
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)  # type: ignore[arg-type]
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        drop_last=False,
    )


def wrap_ddp(model: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    """DistributedDataParallel around the model when distributed (CPU/gloo or one GPU per rank)."""
    if not env.distributed:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under a DDP wrapper (for checkpoints and evaluation)."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, torch.nn.Module)
    return inner


def _resumed(path: Path, again: dict[str, Any]) -> dict[str, Any]:
    """A resumed run keeps the config it started with (its starting weights, its data), and
    notes what each resume was given that differs, so the lineage names the whole run."""
    first: dict[str, Any] = yaml.safe_load(path.read_text("utf-8")) or {}
    resumes = [*first.pop("resumed_with", []), {
        k: v for k, v in again.items() if k != "resume" and first.get(k) != v
    }]  # fmt: skip
    return {**first, "resumed_with": resumes}
