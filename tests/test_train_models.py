"""Tiny end-to-end runs of the embedder stages: teacher, distillation, export parity, index, bundle,
resume after an interruption and a 2-process gloo run. Seconds each on a CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("timm")

from edge.bundles.files import verify_bundle  # noqa: E402
from edge.bundles.manifest import Thresholds  # noqa: E402
from training import bundle_build, distill, export, index_build, runs, teacher  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]

H, W = 64, 48  # tiny portrait crops
N_CARDS = 4


def _card(rng: np.random.Generator) -> np.ndarray:
    img = np.full((88, 64, 3), rng.integers(0, 255, 3), np.uint8)
    for _ in range(5):
        centre = (int(rng.integers(0, 64)), int(rng.integers(0, 88)))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(img, centre, int(rng.integers(6, 25)), colour, -1)
    return img


def _write_catalogue(
    folder: Path, prefix: str, n: int, rng: np.random.Generator
) -> list[np.ndarray]:
    (folder / "images").mkdir(parents=True)
    cards = []
    with (folder / "cards.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["card_id", "name", "set_id", "set_name", "number", "rarity"])
        for i in range(n):
            img = _card(rng)
            cv2.imwrite(str(folder / "images" / f"{prefix}{i}.jpg"), img[..., ::-1])
            w.writerow([f"{prefix}{i}", f"Card {i}", "s1", "Set", f"{i:03d}", "common"])
            cards.append(img)
    return cards


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """catalogue/, unknown/ and cls/{train,val}/<card_id>/ of noisy views of each card."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    cards = _write_catalogue(root / "catalogue", "c", N_CARDS, rng)
    _write_catalogue(root / "unknown", "u", 2, rng)
    for split, k in (("train", 6), ("val", 2)):
        for i, img in enumerate(cards):
            folder = root / "cls" / split / f"c{i}"
            folder.mkdir(parents=True)
            for j in range(k):
                noisy = img.astype(np.float32) * rng.uniform(0.8, 1.1) + rng.normal(0, 6, img.shape)
                cv2.imwrite(str(folder / f"{j}.jpg"), np.clip(noisy, 0, 255).astype(np.uint8))
    return root


def _teacher_cfg(world: Path, out: Path, **kw: object) -> teacher.TeacherConfig:
    base: dict[str, object] = dict(
        data=world,
        out=out,
        hidden_size=32,
        layers=2,
        heads=2,
        intermediate_size=64,
        height=H,
        width=W,
        embed_dim=32,
        phase1_epochs=1,
        phase2_epochs=1,
        unfreeze_blocks=1,
        batch_size=8,
        max_val=16,
    )
    base.update(kw)
    return teacher.TeacherConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def teacher_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return teacher.train(_teacher_cfg(world, tmp_path_factory.mktemp("runs") / "teacher"))


@pytest.fixture(scope="module")
def student_run(world: Path, teacher_run: Path) -> Path:
    cfg = distill.DistillConfig(
        data=world,
        teacher=teacher_run,
        out=teacher_run.parent.parent / "distill",
        arch="test_efficientnet",
        height=H,
        width=W,
        epochs=2,
        batch_size=8,
        max_val=16,
    )
    return distill.train(cfg)


@pytest.fixture(scope="module")
def exported(student_run: Path, world: Path) -> export.ExportResult:
    return export.export_embedder(
        student_run, student_run.parent / "embedder.onnx", world / "cls" / "val"
    )


def test_teacher_run_logs_both_phases_and_keeps_a_best_checkpoint(teacher_run: Path) -> None:
    # given a finished two-phase teacher run
    rows = [json.loads(x) for x in (teacher_run.parent / "metrics.jsonl").read_text().splitlines()]
    # then each epoch was validated by retrieval and best.pt holds the best top-1
    assert [(r["epoch"], r["phase"]) for r in rows] == [(0, 1), (1, 2)]
    best = runs.load_checkpoint(teacher_run)
    assert best["best_top1"] == max(r["top1"] for r in rows)


def test_phase_one_freezes_the_backbone_and_phase_two_opens_the_last_blocks() -> None:
    # given a tiny teacher
    cfg = teacher.TeacherConfig(
        hidden_size=32, layers=2, heads=2, intermediate_size=64, embed_dim=16
    )
    model = teacher.TeacherModel(teacher.build_backbone(cfg), 16)
    # when set to phase 1, then phase 2 with one block open
    teacher.set_trainable(model, 1, 1)
    phase1 = [p.requires_grad for p in model.backbone.parameters()]
    teacher.set_trainable(model, 2, 1)
    blocks = model.blocks()
    # then phase 1 trains no backbone weight; phase 2 trains the last block but not the first
    assert not any(phase1)
    assert all(p.requires_grad for p in blocks[-1].parameters())
    assert not any(p.requires_grad for p in blocks[0].parameters())


def test_arcface_penalises_the_true_class_by_the_margin() -> None:
    # given a 2-d ArcFace head and an embedding 0.3 rad from class 0 and 0.3 rad from class 1
    head = teacher.ArcFace(2, 2, margin=0.5, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [np.cos(0.6), np.sin(0.6)]]))
    emb = torch.tensor([[np.cos(0.3), np.sin(0.3)]], dtype=torch.float32)
    # when logits are computed for label 0
    logits = head(emb, torch.tensor([0]))
    # then the true class gets s * cos(0.3 + 0.5) and the other class plain s * cos(0.3)
    assert logits[0, 0].item() == pytest.approx(10.0 * np.cos(0.8), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(10.0 * np.cos(0.3), abs=1e-4)


def test_distillation_pulls_the_student_toward_the_teacher(student_run: Path) -> None:
    # given a finished distillation
    rows = [json.loads(x) for x in (student_run.parent / "metrics.jsonl").read_text().splitlines()]
    # then the distillation loss fell and the teacher cache was written
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (student_run.parent / "teacher_cache.rank0.pt").exists()


def test_distill_loss_is_zero_for_proportional_embeddings() -> None:
    # given student embeddings that are a scaled copy of the teacher's
    t = torch.randn(4, 8)
    # when the loss is computed
    loss = distill.distill_loss(3.0 * t, t)
    # then it is (numerically) zero: only directions matter
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_export_matches_torch_and_records_the_input_spec(exported: export.ExportResult) -> None:
    # given the export of the tiny student
    side = json.loads(exported.path.with_suffix(".json").read_text())
    # then parity holds over 64 images and the sidecar names the spec the model consumes
    assert exported.parity_images == 64
    assert exported.min_cosine >= export.PARITY_MIN_COSINE
    assert (side["input_spec"]["height"], side["input_spec"]["width"]) == (H, W)


def test_export_accepts_any_batch_size(exported: export.ExportResult) -> None:
    import onnxruntime as ort

    # given the exported graph
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    # when run with batches of 1 and 5
    outs = [
        session.run(["embedding"], {"images": np.zeros((n, 3, H, W), np.float32)})[0]
        for n in (1, 5)
    ]
    # then each returns one embedding per input
    assert [o.shape for o in outs] == [(1, 32), (5, 32)]


@pytest.fixture(scope="module")
def index_dir(student_run: Path, world: Path) -> Path:
    out = student_run.parent.parent / "index"
    index_build.run(student_run, world, out, target_far=0.5)
    return out


def test_index_holds_both_views_of_every_card(index_dir: Path) -> None:
    # given the built index
    vectors = np.load(index_dir / "embeddings.npy")
    rows = bundle_build._row_card_ids(index_dir)
    # then each card appears twice (upright, rot180) with unit vectors
    assert vectors.shape == (2 * N_CARDS, 32)
    assert rows == [f"c{i}" for i in range(N_CARDS) for _ in range(2)]
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_bundle_verifies_and_carries_lineage(
    tmp_path: Path, index_dir: Path, exported: export.ExportResult, world: Path
) -> None:
    # given a detector graph (any ONNX with an image input is enough to assemble a bundle)
    detector_onnx = tmp_path / "det.onnx"
    conv = torch.nn.Conv2d(3, 6, 1)
    torch.onnx.export(
        conv,
        (torch.zeros(1, 3, 32, 32),),
        str(detector_onnx),
        input_names=["images"],
        output_names=["output0"],
        dynamo=False,
    )
    # when a bundle is built
    manifest = bundle_build.build(
        bundle_build.BundleInputs(
            out=tmp_path / "bundle",
            detector_onnx=detector_onnx,
            embedder_onnx=exported.path,
            index_dir=index_dir,
            catalogue_dir=world / "catalogue",
            bundle_id="tiny-1",
            thresholds=Thresholds(unknown_score=0.1, unknown_margin=0.0),
            runs={"student": exported.path.parent},
            data=world,
        )
    )
    # then the device verifier accepts it and the manifest describes models and lineage
    assert verify_bundle(tmp_path / "bundle").bundle_id == "tiny-1"
    assert manifest.embedder.input.height == H and manifest.detector.input.height == 32
    assert manifest.index.count == 2 * N_CARDS and manifest.catalogue.card_count == N_CARDS
    assert len(manifest.lineage["runs"]["student"]["checkpoint_sha256"]) == 64
    assert len(manifest.lineage["dataset_sha256"]) == 64
    assert manifest.selftest and all((tmp_path / "bundle" / k).exists() for k in manifest.selftest)


def test_teacher_resumes_after_an_interruption(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a run killed during its second epoch
    cfg = _teacher_cfg(world, tmp_path / "t", phase1_epochs=1, phase2_epochs=2)
    real = teacher._train_epoch
    calls = {"n": 0}

    def dying(*args: object, **kw: object) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(teacher, "_train_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        teacher.train(cfg)
    monkeypatch.setattr(teacher, "_train_epoch", real)
    # when resumed
    cfg.resume = True
    teacher.train(cfg)
    # then epoch 0 ran once and the run continued with epochs 1 and 2
    rows = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]


def test_two_process_gloo_run_trains_one_model(world: Path, tmp_path: Path) -> None:
    # given torchrun with two CPU processes on gloo
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "training.cli",
        "teacher",
        "--data",
        str(world),
        "--out",
        str(out),
        "--hidden-size",
        "32",
        "--layers",
        "2",
        "--heads",
        "2",
        "--intermediate-size",
        "64",
        "--height",
        str(H),
        "--width",
        str(W),
        "--embed-dim",
        "16",
        "--phase1-epochs",
        "0",
        "--phase2-epochs",
        "1",
        "--batch-size",
        "4",
        "--max-val",
        "8",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # when it runs
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    # then it succeeds and only rank 0 wrote one metrics row
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1
    assert (out / "best.pt").exists()


def test_sign_hook_writes_a_signature_the_device_accepts(
    tmp_path: Path, index_dir: Path, exported: export.ExportResult, world: Path
) -> None:
    from edge.bundles.signing import generate_keypair, load_public_keys, verify_signature

    # given a key pair and a detector graph
    fingerprint = generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    detector_onnx = tmp_path / "det.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 6, 1), (torch.zeros(1, 3, 32, 32),), str(detector_onnx),
                      input_names=["images"], output_names=["output0"], dynamo=False)  # fmt: skip
    # when a bundle is built with --sign
    bundle_build.build(bundle_build.BundleInputs(
        out=tmp_path / "b", detector_onnx=detector_onnx, embedder_onnx=exported.path,
        index_dir=index_dir, catalogue_dir=world / "catalogue", bundle_id="signed",
        sign_key=tmp_path / "k.pem"))  # fmt: skip
    # then manifest.sig verifies against the public key
    keys = load_public_keys([tmp_path / "k.pub"])
    assert verify_signature(tmp_path / "b", keys) == fingerprint
