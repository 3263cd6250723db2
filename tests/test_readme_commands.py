"""Every command the README names, run as the installed console script (`.venv/bin/cardedge`,
`.venv/bin/cardedge-train`) on tiny inputs: exit codes, output and error codes as a user sees them.

`test_readme_names_only_commands_run_here` fails when the README gains a command that no test here
runs (or that a module elsewhere does not run as a process: `serve` and `bundle push` are in
test_serve_process.py / test_serve_bundles.py, `bundle reindex` in test_reindex.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.serve_process import REPO, clean_env, console_script

pytestmark = pytest.mark.slow

DEMO = REPO / "models" / "demo"
SCAN = DEMO / "selftest" / "s01-001.jpg"
FAKES = REPO / "tests" / "fakes"

# Commands run as processes by this module and by the serve tests.
RUN_HERE = {
    "cardedge identify",
    "cardedge config",
    "cardedge bench",
    "cardedge doctor",
    "cardedge bundle verify",
    "cardedge bundle install",
    "cardedge bundle list",
    "cardedge bundle activate",
    "cardedge bundle rollback",
    "cardedge bundle gc",
    "cardedge bundle keygen",
    "cardedge bundle sign",
    "cardedge-train synth",
    "cardedge-train feedback",
    "cardedge-train calib",
    "cardedge-train compile-hef",
    "cardedge-train evaluate",
    "cardedge-train calibrate",
    "cardedge-train bundle",
    "cardedge-train evaluate-detector",
    "cardedge-train detector-curve",
    "cardedge-train swap-detector",
}
RUN_BY_SERVE_TESTS = {"cardedge serve", "cardedge bundle push"}
# tests/test_reindex.py; tests/test_lists_serve.py (lists, lists show, lists export)
RUN_BY_OTHER_MODULES = {"cardedge bundle reindex", "cardedge lists"}
# Training stages whose smallest real run takes minutes of torch on CPU; each has in-process
# tests on tiny models (tests/test_train_*.py) and `make demo-bundle` runs them all.
NOT_RUN_AS_PROCESS = {
    "cardedge-train teacher",
    "cardedge-train distill",
    "cardedge-train detector",
    "cardedge-train index",
    "cardedge-train export",
}


def run(*args: str, ok: tuple[int, ...] = (0,), timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run an installed console script; assert its exit code is one of `ok`."""
    script, *rest = args
    result = subprocess.run(
        [str(console_script(script)), *rest],
        cwd=REPO,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode in ok, (
        f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def readme_commands() -> set[str]:
    """`cardedge X [Y]` and `cardedge-train X` as the README names them (sub-subcommands for bundle,
    a|b|c alternatives expanded)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found: set[str] = set()
    for script, rest in re.findall(r"\b(cardedge(?:-train)?) ([a-z][a-z|/ -]*[a-z])", text):
        words = rest.replace(" / ", "|").split()
        if script == "cardedge" and words[0] == "bundle" and len(words) > 1:
            found |= {f"cardedge bundle {w}" for w in words[1].split("|")}
        else:
            found |= {f"{script} {w}" for w in words[0].split("|") if w}
    return found


def test_readme_names_only_commands_run_here() -> None:
    named = readme_commands()
    unknown = named - RUN_HERE - RUN_BY_SERVE_TESTS - RUN_BY_OTHER_MODULES - NOT_RUN_AS_PROCESS
    assert not unknown, f"README commands no test runs as a process: {sorted(unknown)}"
    assert "cardedge identify" in named and "cardedge bundle gc" in named  # the parser works


def test_identify_json(tmp_path: Path) -> None:
    result = run("cardedge", "identify", str(SCAN), "--bundle", str(DEMO), "--json")
    line = json.loads(result.stdout.splitlines()[0])
    assert line["bundle_id"] == "demo" and "timings_ms" in line and isinstance(line["cards"], list)


def test_identify_of_an_unreadable_file_prints_its_code_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    result = run("cardedge", "identify", str(bad), "--bundle", str(DEMO), "--json", ok=(1,))
    assert json.loads(result.stdout)["error"]["code"] == "bad_image"


def test_identify_validates_the_hailo_section(tmp_path: Path) -> None:
    # given a config whose hailo section is invalid
    config = tmp_path / "c.toml"
    config.write_text("[hailo]\ntimeout_ms = 0\n")
    # then the command refuses it, naming the setting (tests/test_cli.py checks it is passed on)
    result = run("cardedge", "identify", str(SCAN), "--bundle", str(DEMO), "--config", str(config), ok=(2,))  # fmt: skip
    assert "hailo.timeout_ms" in result.stderr and "config_invalid" in result.stderr


def test_config_check(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[server]\nport = 9000\n")
    bad.write_text("[server]\nport = 99999\nprot = 1\n")
    assert run("cardedge", "config", "check", str(good)).stdout.strip() == "ok"
    out = run("cardedge", "config", "check", str(bad), ok=(1,)).stdout
    assert "server.port" in out and "server.prot" in out


def test_a_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    result = run("cardedge", "serve", "--bundle", str(DEMO), "--port", "70000", "--state-dir", str(tmp_path), ok=(2,))  # fmt: skip
    assert "--port" in result.stderr and "config_invalid" in result.stderr
    result = run("cardedge", "serve", "--port", "nine", ok=(2,))
    assert "--port" in result.stderr  # argparse: invalid int value


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    result = run("cardedge", "bundle", "list", "--state-dir", str(tmp_path), ok=(2,), CARDEDGE_BUNDLES__KEEP="x")  # fmt: skip
    assert "CARDEDGE_BUNDLES__KEEP" in result.stderr


def test_bench(tmp_path: Path) -> None:
    result = run("cardedge", "bench", "--bundle", str(DEMO), "--frames", "2", "--threads", "1", "--json")  # fmt: skip
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures  # one JSON line of figures


def test_bench_live(tmp_path: Path) -> None:
    # the bar (>= 0.9 of the forward bound) may be missed on a loaded CI machine: exit 0 or 1
    result = run("cardedge", "bench", "--live", "--bundle", str(DEMO), "--source", "synthetic:reference_db/demo?fast", "--seconds", "2", ok=(0, 1))  # fmt: skip
    report = json.loads(result.stdout)
    assert report["bundle_id"] == "demo" and "bar_met" in report


def test_doctor(tmp_path: Path) -> None:
    # no Hailo here: HailoRT is a warning or failure with a hint; the JSON lists every check
    result = run("cardedge", "doctor", "--bundle", str(DEMO), "--state-dir", str(tmp_path), "--json", ok=(0, 1))  # fmt: skip
    checks = {f["check"] for f in json.loads(result.stdout)}
    assert {"disk", "clock", "camera"} <= checks


def test_bundle_store_commands(tmp_path: Path) -> None:
    from tests.malformed_bundles import rebrand

    state = ["--state-dir", str(tmp_path / "state")]
    other = rebrand(DEMO, tmp_path / "demo-2", "demo-2")
    assert "ok: bundle demo" in run("cardedge", "bundle", "verify", str(DEMO)).stdout
    assert "installed demo" in run("cardedge", "bundle", "install", str(DEMO), *state).stdout
    run("cardedge", "bundle", "install", str(other), "--no-activate", *state)
    listed = json.loads(run("cardedge", "bundle", "list", "--json", *state).stdout)
    assert {b["bundle_id"]: b["current"] for b in listed} == {"demo": True, "demo-2": False}
    assert "current: demo-2" in run("cardedge", "bundle", "activate", "demo-2", *state).stdout
    assert "current: demo" in run("cardedge", "bundle", "rollback", *state).stdout
    assert "removed: nothing" in run("cardedge", "bundle", "gc", "--keep", "1", *state).stdout
    # a failure prints its stable code and hint, exit 2
    result = run("cardedge", "bundle", "activate", "ghost", *state, ok=(2,))
    assert "error [bundle_not_found]" in result.stderr and "hint:" in result.stderr


def test_bundle_keygen_sign_and_verify_with_the_key(tmp_path: Path) -> None:
    from tests.malformed_bundles import rebrand

    bundle = rebrand(DEMO, tmp_path / "signed", "signed")
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    run("cardedge", "bundle", "keygen", "--private", str(key), "--public", str(pub))
    run("cardedge", "bundle", "sign", str(bundle), "--key", str(key))
    run("cardedge", "bundle", "verify", str(bundle), "--public-key", str(pub))
    result = run("cardedge", "bundle", "verify", str(DEMO), "--public-key", str(pub), ok=(2,))
    assert "error [bundle_unsigned]" in result.stderr


def _write_feedback(root: Path) -> None:
    from edge.feedback import FeedbackStore

    store = FeedbackStore(root)
    image = np.full((300, 400, 3), 90, np.uint8)
    ok, jpg = cv2.imencode(".jpg", image)
    assert ok
    store.add(jpg.tobytes(), "jpeg", width=400, height=300, bundle_id="demo", card_id="s01-001",
              not_a_card=False, polygon=[[50, 20], [250, 20], [250, 290], [50, 290]], note=None)  # fmt: skip
    store.add(SCAN.read_bytes(), "jpeg", width=1, height=1, bundle_id="demo", card_id=None,
              not_a_card=True, polygon=None, note="a coaster")  # fmt: skip


def test_train_feedback_exports_crops_into_the_dataset_layout(tmp_path: Path) -> None:
    # given a device's feedback folder (one card correction with a polygon, one not-a-card crop)
    _write_feedback(tmp_path / "state")
    out = tmp_path / "data"
    # when exported with the shipped command
    result = run("cardedge-train", "feedback", "--feedback", str(tmp_path / "state" / "feedback"), "--out", str(out))  # fmt: skip
    # then the card crop sits in cls/train/<card_id>/ at the embedder's crop size, the other in
    # unknown/, each listed in feedback.csv
    crops = list((out / "cls" / "train" / "s01-001").glob("fb-*.jpg"))
    assert len(crops) == 1 and cv2.imread(str(crops[0])).shape == (224, 160, 3)
    assert len(list((out / "unknown").glob("fb-*.jpg"))) == 1
    assert len((out / "feedback.csv").read_text().splitlines()) == 3
    assert "1 card crop(s)" in result.stdout
    # and a second export adds nothing twice
    assert "2 already there" in run("cardedge-train", "feedback", "--feedback", str(tmp_path / "state" / "feedback"), "--out", str(out)).stdout  # fmt: skip


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "world"
    run("cardedge-train", "synth", "datasets", "--out", str(out), "--n-cards", "4", "--n-unknown", "2",
        "--obb-train", "2", "--obb-val", "1", "--cls-train", "1", "--cls-val", "1",
        "--test-scenes", "2", "--calib", "2")  # fmt: skip
    return out


@pytest.mark.train
def test_train_synth_datasets(tiny_world: Path) -> None:
    for folder in ("catalogue", "unknown", "obb", "cls", "test_scenes", "calib"):
        assert (tiny_world / folder).is_dir(), folder


@pytest.mark.train
def test_train_evaluate(tiny_world: Path, tmp_path: Path) -> None:
    run("cardedge-train", "evaluate", "--bundle", str(DEMO), "--scenes", str(tiny_world / "test_scenes"),
        "--catalogue", str(tiny_world / "catalogue"), "--out", str(tmp_path / "report"), "--threads", "1")  # fmt: skip
    assert any((tmp_path / "report").iterdir())


@pytest.mark.train
def test_train_calibrate_writes_the_verification_thresholds(
    tiny_world: Path, tmp_path: Path
) -> None:
    # given a copy of the demo bundle, its catalogue and a few cards outside it
    bundle = tmp_path / "demo"
    shutil.copytree(DEMO, bundle)
    # when calibrated on a few fresh scenes
    run("cardedge-train", "calibrate", "--bundle", str(bundle), "--catalogue", str(REPO / "reference_db" / "demo"),
        "--unknown", str(tiny_world / "unknown"), "--scenes", "16", "--verify-scenes", "16")  # fmt: skip
    # then the manifest holds thresholds chosen on them, and the bundle still verifies
    from edge.bundles.files import verify_bundle

    t = verify_bundle(bundle).thresholds
    assert 10 <= t.verify_min_inliers <= 60 and -1 <= t.verify_min_photometric <= 1
    assert 0 <= t.background_conf <= 1


@pytest.mark.train
def test_train_calib_refuses_a_set_below_the_minimum(tiny_world: Path, tmp_path: Path) -> None:
    # a real calibration set needs >= 1024 images per model (minutes to synthesise); the command
    # is run for its refusal, which names the minimum
    result = run("cardedge-train", "calib", "--bundle", str(DEMO), "--out", str(tmp_path / "calib"),
                 "--embedder-images", str(tiny_world / "cls" / "train"), "--count", "4", ok=(2,))  # fmt: skip
    assert "1024" in result.stdout


@pytest.mark.train
def test_train_compile_hef_with_the_fake_compiler(tmp_path: Path, factory_bundle: Path) -> None:
    # given a copy of the factory bundle and a small calibration set (as `calib` writes them)
    import shutil

    from edge.bundles.manifest import load_manifest

    bundle = tmp_path / "bundle"
    shutil.copytree(factory_bundle, bundle)
    calib = tmp_path / "calib"
    calib.mkdir()
    manifest = load_manifest(bundle / "manifest.json")
    rng = np.random.default_rng(0)
    for role in ("detector", "embedder"):
        spec = getattr(manifest, role).input
        np.save(calib / f"{role}.npy", rng.integers(0, 256, (4, spec.height, spec.width, 3)).astype(np.float32))  # fmt: skip
    # when compiled by the shipped command against the fake Dataflow Compiler
    result = run("cardedge-train", "compile-hef", "--bundle", str(bundle), "--calib", str(calib),
                 "--arch", "hailo8l", PYTHONPATH=str(FAKES))  # fmt: skip
    # then both HEFs are recorded in the manifest
    assert "re-sign" in result.stdout
    compiled = load_manifest(bundle / "manifest.json")
    assert compiled.detector.hef is not None and compiled.embedder.hef is not None


def _bundle_inputs(factory: Path, root: Path) -> dict[str, Path]:
    """What `cardedge-train bundle` assembles, from the session's test bundle: the two ONNX
    models (the embedder with its export sidecar), an index folder and the catalogue scans."""
    from edge.bundles.manifest import load_manifest
    from edge.recognize.index import load_index
    from tests.bundle_factory import _card_images

    manifest = load_manifest(factory / "manifest.json")
    models, index, catalogue = root / "models", root / "index", root / "catalogue"
    for folder in (models, index, catalogue / "images"):
        folder.mkdir(parents=True)
    shutil.copy2(factory / "detector.onnx", models / "detector.onnx")
    shutil.copy2(factory / "embedder.onnx", models / "embedder.onnx")
    emb = manifest.embedder
    side = {
        "input_spec": emb.input.model_dump(),
        "arch": emb.arch,
        "embedding_dim": emb.embedding_dim,
    }
    (models / "embedder.json").write_text(json.dumps(side))
    for name in ("index.usearch", "catalogue.sqlite"):
        shutil.copy2(factory / name, index / name)
    usearch = load_index(factory / "index.usearch", manifest.index.dim, manifest.index.dtype)
    np.save(
        index / "embeddings.npy",
        np.asarray(usearch.get(np.arange(len(usearch), dtype=np.uint64)), np.float32),
    )
    t = manifest.thresholds
    (index / "calibration.json").write_text(
        json.dumps({"unknown_score": t.unknown_score, "unknown_margin": t.unknown_margin})
    )
    cards, images = _card_images(manifest.catalogue.card_count, 0)  # the factory's own cards
    rows = ["card_id,name,set_id,set_name,number,rarity"]
    for card, image in zip(cards, images, strict=True):
        cv2.imwrite(
            str(catalogue / "images" / f"{card.card_id}.jpg"),
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
        )
        rows.append(
            f"{card.card_id},{card.name},{card.set_id},{card.set_name},{card.number},{card.rarity}"
        )
    (catalogue / "cards.csv").write_text("\n".join(rows) + "\n")
    return {"models": models, "index": index, "catalogue": catalogue}


@pytest.mark.train
def test_train_bundle_signed_with_reference_features(tmp_path: Path, factory_bundle: Path) -> None:
    # given trained models, an index folder, the catalogue's scans and a signing key
    inp = _bundle_inputs(factory_bundle, tmp_path)
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    run("cardedge", "bundle", "keygen", "--private", str(key), "--public", str(pub))
    out = tmp_path / "bundle"
    # when assembled and signed by the shipped command
    result = run("cardedge-train", "bundle", "--out", str(out), "--detector", str(inp["models"] / "detector.onnx"),
                 "--embedder", str(inp["models"] / "embedder.onnx"), "--index", str(inp["index"]),
                 "--catalogue", str(inp["catalogue"]), "--name", "test", "--bundle-id", "assembled-1",
                 "--sign", str(key))  # fmt: skip
    # then it prints its id, verifies with the public key, and carries every card's features
    assert result.stdout.strip().splitlines()[-1] == "assembled-1"
    run("cardedge", "bundle", "verify", str(out), "--public-key", str(pub))
    from edge.bundles.files import verify_bundle

    manifest = verify_bundle(out)
    assert (
        manifest.verification is not None
        and manifest.verification.cards == manifest.catalogue.card_count
    )


@pytest.mark.train
def test_train_synth_backgrounds_gathers_families(tmp_path: Path) -> None:
    from tests.test_synth_table import fake_packages

    fake_packages(tmp_path / "root")
    result = run("cardedge-train", "synth", "backgrounds", "--out", str(tmp_path / "bg"),
                 "--root", str(tmp_path / "root"))  # fmt: skip
    assert "4 backgrounds" in result.stdout
    assert {p.name for p in (tmp_path / "bg").iterdir()} == {"plasma", "mate", "gnome", "nexuiz"}


@pytest.mark.train
def test_train_evaluate_detector_reports_the_detection_figures(
    tiny_world: Path, tmp_path: Path
) -> None:
    # the demo detector at its own input (its classes read from the model): a JSON report with
    # the detection figures, card backs among them
    out = tmp_path / "det.json"
    result = run("cardedge-train", "evaluate-detector", "--onnx", str(DEMO / "detector.onnx"),
                 "--scenes", str(tiny_world / "test_scenes"), "--threads", "1",
                 "--out", str(out))  # fmt: skip
    [report] = json.loads(out.read_text())
    assert report["input_hw"] == [256, 448] and "by_short_side_px" in report
    assert "256x448: recall" in result.stdout and "backs_detected" in report
    # and a class count the model does not have is named, not a traceback
    wrong = run("cardedge-train", "evaluate-detector", "--onnx", str(DEMO / "detector.onnx"),
                "--scenes", str(tiny_world / "test_scenes"), "--num-classes", "1", ok=(2,))  # fmt: skip
    assert "outputs 2 classes" in wrong.stdout


@pytest.mark.train
def test_train_detector_curve_plots_a_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [{"time": 1000.0 * (i + 1), "epoch": i, "epoch_s": 1000.0} for i in range(3)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    points = [{"epoch": i + 1, "hours": 0.0, "recall_unoccluded_80px": 0.3 * i, "precision": 0.5}
              for i in range(3)]  # fmt: skip
    (run_dir / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    run(
        "cardedge-train", "detector-curve", "--run", str(run_dir), "--plot", str(tmp_path / "c.png")
    )
    assert cv2.imread(str(tmp_path / "c.png")) is not None


@pytest.mark.train
def test_train_swap_detector_gives_a_recalibrated_bundle(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "swapped"
    result = run("cardedge-train", "swap-detector", "--bundle", str(DEMO), "--detector",
                 str(DEMO / "detector.onnx"), "--out", str(out), "--bundle-id", "demo-swapped",
                 "--catalogue", str(REPO / "reference_db" / "demo"), "--unknown",
                 str(tiny_world / "unknown"), "--scenes", "12", "--verify-scenes", "12")  # fmt: skip
    from edge.bundles.files import verify_bundle

    manifest = verify_bundle(out)
    assert manifest.bundle_id == "demo-swapped" and "demo-swapped" in result.stdout
    assert manifest.detector.class_names == ("card", "back")
    assert manifest.thresholds.back_conf is not None  # backs calibrated on their own
    assert manifest.lineage["detector_swapped_from"] == "demo"
    # a folder that exists is refused, the source untouched
    run("cardedge-train", "swap-detector", "--bundle", str(DEMO), "--detector",
        str(DEMO / "detector.onnx"), "--out", str(out), "--bundle-id", "x", "--catalogue",
        str(REPO / "reference_db" / "demo"), "--unknown", str(tiny_world / "unknown"), ok=(2,))  # fmt: skip
