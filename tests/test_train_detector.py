"""YOLO11n-OBB for one epoch on a handful of synthetic scenes, its ONNX export, and an end-to-end
evaluation of a bundle built from it through the device Recognizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("ultralytics")
torch = pytest.importorskip("torch")

from training import bundle_build, detector, distill, evaluate, export, index_build, teacher  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]


def _obb_dataset(root: Path, n: int = 6, size: int = 160) -> Path:
    """A handful of scenes: one random-textured card pasted at a random angle on noise."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            img = (rng.integers(0, 128, (size, size, 3))).astype(np.uint8)
            card = rng.integers(128, 256, (44, 32, 3)).astype(np.uint8)
            m = cv2.getRotationMatrix2D((16, 22), float(rng.uniform(0, 360)), 1.5)
            m[:, 2] += rng.uniform(40, 100, 2) - [16, 22]
            cv2.warpAffine(card, m, (size, size), dst=img, borderMode=cv2.BORDER_TRANSPARENT)
            quad = (m[:, :2] @ np.array([[0, 0], [32, 0], [32, 44], [0, 44]], float).T).T + m[:, 2]
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), img)
            label = "0 " + " ".join(f"{v / size:.5f}" for v in quad.reshape(-1))
            (root / "labels" / split / f"{i}.txt").write_text(label + "\n")
    yaml_text = f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: card\n"
    (root / "data.yaml").write_text(yaml_text)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    world_mod = pytest.importorskip("training.synth.world")
    return world_mod.tiny_world(tmp_path_factory.mktemp("tiny"), n_cards=8, n_scenes=6, seed=0)


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    cfg = detector.DetectorConfig(
        data=_obb_dataset(tmp_path_factory.mktemp("obb")), out=tmp_path_factory.mktemp("runs") / "detector", imgsz=160,
        epochs=1, batch=4, device="cpu",
    )  # fmt: skip
    return detector.train(cfg)


def test_one_epoch_writes_run_files_and_checkpoints(yolo_run: Path) -> None:
    # given one finished epoch
    run = yolo_run.parent
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # then our run format mirrors ultralytics' epoch and both checkpoints exist
    assert [r["epoch"] for r in rows] == [0]
    assert "train_box_loss" in rows[0]
    assert (run / "best.pt").exists() and (run / "last.pt").exists()
    assert (run / "config.yaml").exists()


def test_export_gives_the_raw_obb_head_the_runtime_decodes(yolo_run: Path) -> None:
    import onnxruntime as ort

    # given the exported detector
    path = detector.export_onnx(yolo_run, yolo_run.parent / "det.onnx", 160)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # when run on one letterboxed image
    out = session.run(None, {"images": np.zeros((1, 3, 160, 160), np.float32)})[0]
    # then it is (1, 4 + 1 class + 1 angle, anchors over strides 8/16/32)
    assert out.shape == (1, 6, (20 * 20) + (10 * 10) + (5 * 5))
    # and the export leaves nothing beside the checkpoint (a packed run would carry it)
    assert not yolo_run.with_suffix(".onnx").exists()


def test_evaluate_runs_the_recognizer_over_held_out_scenes(
    world: Any, yolo_run: Path, tmp_path: Path
) -> None:
    # given a bundle from tiny teacher/student runs and the one-epoch detector
    data = Path(world.root)
    runs_dir = tmp_path / "runs"
    t_best = teacher.train(teacher.TeacherConfig(
        data=data, out=runs_dir / "teacher", hidden_size=32, layers=2, heads=2,
        intermediate_size=64, height=64, width=48, embed_dim=16, phase1_epochs=0,
        phase2_epochs=1, batch_size=16, max_val=16))  # fmt: skip
    s_best = distill.train(distill.DistillConfig(
        data=data, teacher=t_best, out=runs_dir / "distill", arch="test_efficientnet",
        height=64, width=48, epochs=1, batch_size=16, max_val=16))  # fmt: skip
    emb = export.export_embedder(s_best, runs_dir / "embedder.onnx")
    index_build.run(s_best, data, runs_dir / "index", target_far=0.5)
    det = detector.export_onnx(yolo_run, runs_dir / "detector.onnx", 160)
    bundle_build.build(bundle_build.BundleInputs(
        out=tmp_path / "bundle", detector_onnx=det, embedder_onnx=emb.path,
        index_dir=runs_dir / "index", catalogue_dir=Path(world.catalogue), bundle_id="tiny",
        thresholds=bundle_build.thresholds_from(runs_dir / "index", 0.01, 0.7)))  # fmt: skip
    # when evaluated
    report = evaluate.evaluate(
        tmp_path / "bundle", Path(world.test_scenes), Path(world.catalogue), threads=1
    )
    evaluate.write_report(report, tmp_path / "report")
    # then every ground-truth card face was counted for identification, every back in the
    # detection section, and the report files exist
    truth = [
        c
        for p in Path(world.test_scenes).glob("*.json")
        for c in json.loads(p.read_text())["cards"]
    ]
    backs = sum(bool(c.get("face_down")) for c in truth)
    assert report["n_cards"] == len(truth) - backs
    assert report["detection"]["n_backs"] == backs
    assert report["detection"]["n_faces"] == len(truth) - backs
    assert set(report["targets"]) == set(evaluate.TARGETS)
    assert (tmp_path / "report" / "report.json").exists()
    assert "pHash baseline" in (tmp_path / "report" / "report.md").read_text()


def test_pack_keeps_a_resumable_run_small_and_free_of_machine_folders(tmp_path: Path) -> None:
    import torch

    # given a run whose last.pt holds Adam moments and the writing machine's folders
    run = tmp_path / "run"
    (run / "ultralytics" / "weights").mkdir(parents=True)
    moments = {
        "exp_avg": torch.randn(64),
        "exp_avg_sq": torch.rand(64) * 1e-12,
        "step": torch.tensor(3.0),
    }
    ckpt = {
        "epoch": 3,
        "optimizer": {"state": {0: moments}, "param_groups": []},
        "train_args": {"data": "/somewhere/else/data.yaml", "imgsz": 448},
        "git": {"root": "/somewhere/else", "commit": "abc"},
    }
    torch.save(ckpt, run / "ultralytics" / "weights" / "last.pt")
    (run / "metrics.jsonl").write_text('{"epoch": 3}\n')
    # when packed
    packed = torch.load(detector.pack(run, tmp_path / "packed"), weights_only=False)
    # then the moments are bfloat16 (tiny second moments survive), the step is untouched, and
    # no absolute folder of the writing machine is left
    state = packed["optimizer"]["state"][0]
    assert state["exp_avg"].dtype == torch.bfloat16 and state["exp_avg_sq"].min() > 0
    assert state["step"].dtype == torch.float32
    assert packed["train_args"]["data"] == "data.yaml" and "root" not in packed["git"]
    assert (tmp_path / "packed" / "metrics.jsonl").exists()


def test_every_file_pack_writes_is_committable_under_models_detector_run(tmp_path: Path) -> None:
    import shutil
    import subprocess

    # given a packed run (a checkpoint the next session must be able to resume from)
    run = tmp_path / "run"
    (run / "ultralytics" / "weights").mkdir(parents=True)
    torch.save({"epoch": 1, "train_args": {}}, run / "ultralytics" / "weights" / "last.pt")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    packed = detector.pack(run, tmp_path / "packed").parent
    repo = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    # then git ignores none of its files where the README says to commit them
    names = sorted(p.name for p in packed.iterdir())
    assert "last.pt" in names
    ignored = subprocess.run(
        ["git", "check-ignore", *(f"models/detector-run/{n}" for n in names)],
        cwd=repo, capture_output=True, text=True,
    )  # fmt: skip
    assert ignored.stdout == "", f"git ignores {ignored.stdout.split()}"


def test_resume_without_a_checkpoint_refuses_instead_of_starting_over(tmp_path: Path) -> None:
    # given a run folder with metrics from an earlier run but no checkpoint
    out = tmp_path / "detector"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 4}\n')
    cfg = detector.DetectorConfig(data=_obb_dataset(tmp_path / "obb"), out=out, resume=True)
    # when resumed, then it says what is missing rather than training epoch 1 again
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        detector.train(cfg)


def test_a_shipped_detector_onnx_warm_starts_a_run_with_a_new_class(
    yolo_run: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from training.detector_warmstart import WarmStartError, checkpoint_from_onnx

    # given a one-class (card) detector as a bundle ships it: ONNX only
    shipped = detector.export_onnx(yolo_run, tmp_path / "shipped.onnx", 160)
    # when rebuilt into a checkpoint for a card + back run, and that exported again
    pt = checkpoint_from_onnx(shipped, tmp_path / "warm.pt", {0: "card", 1: "back"})
    again = detector.export_onnx(pt, tmp_path / "again.onnx", 160)
    x = np.random.default_rng(1).random((1, 3, 160, 160), dtype=np.float32)
    old = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(str(again), providers=["CPUExecutionProvider"])
    a, b = old.run(None, {"images": x})[0], new.run(None, {"images": x})[0]
    # then boxes, card scores and angles are the shipped detector's; back is a new output row
    assert b.shape == (1, 7, a.shape[2])
    np.testing.assert_allclose(b[:, [0, 1, 2, 3, 4, 6]], a[:, [0, 1, 2, 3, 4, 5]], atol=2e-3)
    # and a detector of another architecture is refused by name, not loaded half-way
    with pytest.raises(WarmStartError):
        checkpoint_from_onnx(shipped, tmp_path / "s.pt", {0: "card"}, "yolo11s-obb.yaml")
