"""Run directories: resolved config, metrics.jsonl, logs.md, checkpoints, resume, SageMaker env."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from training import runs  # noqa: E402

pytestmark = pytest.mark.train


@dataclass
class _Cfg:
    data: Path = Path("data")
    lr: float = 0.1
    sizes: tuple[int, int] = (2, 3)


def test_config_yaml_holds_the_resolved_config(tmp_path: Path) -> None:
    # given a config with a path and a tuple
    cfg = _Cfg(data=tmp_path / "d")
    # when a run directory is opened
    runs.RunDir(tmp_path / "run", cfg)
    # then config.yaml holds plain values
    loaded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert loaded == {"data": str(tmp_path / "d"), "lr": 0.1, "sizes": [2, 3]}


def test_log_epoch_appends_jsonl_and_a_markdown_row(tmp_path: Path) -> None:
    # given a run
    run = runs.RunDir(tmp_path / "run", _Cfg())
    # when two epochs are logged
    run.log_epoch({"epoch": 0, "loss": 1.5, "top1": 0.25})
    run.log_epoch({"epoch": 1, "loss": 0.5, "top1": 0.75})
    # then metrics.jsonl has both rows and logs.md a header plus two rows
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["top1"] for r in rows] == [0.25, 0.75]
    table = (tmp_path / "run" / "logs.md").read_text().splitlines()
    assert "| epoch | loss | top1 |" in table
    assert table[-1] == "| 1 | 0.5000 | 0.7500 |"


def test_a_time_in_the_metrics_does_not_shift_the_markdown_columns(tmp_path: Path) -> None:
    # given a run whose epoch metrics carry their own clock (as a resumed run's first row did)
    run = runs.RunDir(tmp_path / "run", _Cfg())
    # when logged
    run.log_epoch({"time": 123.0, "epoch": 0, "loss": 1.5})
    # then the row has a cell per header column, each under its own name
    table = (tmp_path / "run" / "logs.md").read_text().splitlines()
    assert "| epoch | loss |" in table and table[-1] == "| 0 | 1.5000 |"


def test_a_fresh_run_forgets_old_metrics_but_a_resumed_one_keeps_them(tmp_path: Path) -> None:
    # given a run with one logged epoch
    runs.RunDir(tmp_path / "run", _Cfg()).log_epoch({"epoch": 0, "loss": 1.0})
    # when reopened with resume, then without
    resumed = runs.RunDir(tmp_path / "run", _Cfg(), resume=True)
    kept = len(resumed.metrics())
    fresh = runs.RunDir(tmp_path / "run", _Cfg(), resume=False)
    # then resume kept the row and a fresh run started empty
    assert kept == 1
    assert fresh.metrics() == []


def test_a_resumed_run_keeps_the_config_it_started_with(tmp_path: Path) -> None:
    # given a run started at one learning rate
    runs.RunDir(tmp_path / "run", _Cfg(lr=0.1))
    # when resumed twice, the second time at another learning rate
    runs.RunDir(tmp_path / "run", _Cfg(lr=0.1), resume=True)
    resumed = runs.RunDir(tmp_path / "run", _Cfg(lr=0.01), resume=True)
    # then its config is the first one, with what each resume changed beside it
    loaded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert loaded["lr"] == 0.1 and loaded["resumed_with"] == [{}, {"lr": 0.01}]
    assert resumed.config == loaded


def test_save_writes_last_always_and_best_only_when_best(tmp_path: Path) -> None:
    # given a run
    run = runs.RunDir(tmp_path / "run", _Cfg())
    # when epoch 0 is best and epoch 1 is not
    run.save({"epoch": 0, "w": torch.ones(2)}, best=True)
    run.save({"epoch": 1, "w": torch.zeros(2)}, best=False)
    # then last.pt is epoch 1 and best.pt is epoch 0
    last = run.load_last()
    assert last is not None and last["epoch"] == 1
    assert runs.load_checkpoint(run.best_path)["epoch"] == 0


def test_non_main_ranks_write_nothing(tmp_path: Path) -> None:
    # given a run opened on rank 1 of 2
    run = runs.RunDir(tmp_path / "run", _Cfg(), env=runs.DistEnv(rank=1, world_size=2))
    # when it logs and saves
    run.log_epoch({"epoch": 0})
    run.save({"epoch": 0}, best=True)
    # then no file exists
    assert not (tmp_path / "run").exists()


def test_sagemaker_paths_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given SageMaker's variables for the model dir and the train channel only
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(tmp_path / "train"))
    monkeypatch.delenv("SM_CHANNEL_VAL", raising=False)
    # when read
    paths = runs.sagemaker_paths()
    # then both are there and val is absent
    assert paths == {"model_dir": tmp_path / "model", "train": tmp_path / "train"}


def test_init_distributed_without_torchrun_is_a_single_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given no torchrun variables
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    # when initialised
    env = runs.init_distributed()
    # then this process is the main and only rank
    assert (env.rank, env.world_size, env.is_main, env.distributed) == (0, 1, True, False)


def test_seed_everything_repeats_random_draws() -> None:
    # given the same seed twice
    runs.seed_everything(7)
    a = torch.rand(3)
    runs.seed_everything(7)
    b = torch.rand(3)
    # then the draws repeat
    assert torch.equal(a, b)


def test_config_from_args_takes_sagemaker_folders_when_flags_are_absent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given a SageMaker job's folders and no --data/--out flags
    import argparse

    from training import teacher

    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(tmp_path / "train"))
    parser = argparse.ArgumentParser()
    teacher.add_arguments(parser)
    # when the run config is built
    cfg = runs.config_from_args(teacher.TeacherConfig, parser.parse_args([]))
    # then the job's folders are used; explicit flags still win
    assert (cfg.data, cfg.out) == (tmp_path / "train", tmp_path / "model")
    flagged = runs.config_from_args(
        teacher.TeacherConfig, parser.parse_args(["--data", "d", "--out", "o"])
    )
    assert (flagged.data, flagged.out) == (Path("d"), Path("o"))
