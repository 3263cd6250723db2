"""`cardedge bundle reindex`: a new catalogue becomes a bundle with the source bundle's models.

The source is the session's factory bundle (random-weight models, 6 cards, no reference
features); the new catalogue is 8 procedural cards from another seed with ids the source never
held. The command runs as the installed console script, as a shop would run it.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bundles.files import sha256_file, verify_bundle
from edge.bundles.hotswap import full_frame_box, self_test
from edge.bundles.manifest import load_manifest
from edge.bundles.reindex import resize_scan, tree_hash
from edge.config import RuntimeSettings
from edge.recognize.index import Catalogue
from edge.recognize.recognizer import Recognizer
from tests.serve_process import REPO, clean_env, console_script

N_CARDS = 8
SCAN_H = 400


def reindex_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`cardedge bundle reindex ARGS` as the installed console script."""
    return subprocess.run(
        [str(console_script("cardedge")), "bundle", "reindex", *args],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_catalogue(folder: Path, n: int = N_CARDS, seed: int = 17) -> dict[str, np.ndarray]:
    """cards.csv (card_id,name,set_id,set_name,number,rarity) + images/<card_id>.jpg of n new
    procedural cards (ids prefixed "new"); returns card_id -> RGB scan."""
    from training.synth.card_render import render_card
    from training.synth.catalogue import procedural_catalogue

    records = procedural_catalogue(
        n, seed, reprint_rate=0.0, near_duplicate_rate=0.0, id_prefix="new"
    )
    (folder / "images").mkdir(parents=True)
    scans: dict[str, np.ndarray] = {}
    with (folder / "cards.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["card_id", "name", "set_id", "set_name", "number", "rarity"])
        for r in records:
            writer.writerow([r.card_id, r.name, r.set_id, r.set_name, r.number, r.rarity])
            scans[r.card_id] = render_card(r, SCAN_H)
            bgr = cv2.cvtColor(scans[r.card_id], cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / "images" / f"{r.card_id}.jpg"), bgr)
    return scans


@pytest.fixture(scope="module")
def new_catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("catalogue") / "release-2"
    return folder, write_catalogue(folder)


@pytest.fixture(scope="module")
def reindexed(
    factory_bundle: Path,
    new_catalogue: tuple[Path, dict[str, np.ndarray]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The factory bundle reindexed on the new catalogue by the console script, once."""
    out = tmp_path_factory.mktemp("reindexed") / "release-2-bundle"
    result = reindex_cli(
        "--bundle", str(factory_bundle), "--catalogue", str(new_catalogue[0]), "--out", str(out)
    )
    return out, result


def test_reindex_writes_a_bundle_that_verifies_with_reference_features(
    reindexed: tuple[Path, subprocess.CompletedProcess[str]],
    new_catalogue: tuple[Path, dict[str, np.ndarray]],
) -> None:
    # given the command's run; then it succeeded and its summary says what it made
    out, result = reindexed
    assert result.returncode == 0, result.stderr
    assert f"reindexed {N_CARDS} cards ({2 * N_CARDS} vectors)" in result.stdout
    assert f"self-test: {N_CARDS}/{N_CARDS}" in result.stdout and str(out) in result.stdout
    # and the bundle verifies and lists its reference features
    manifest = verify_bundle(out)
    assert manifest.verification is not None and manifest.verification.cards == N_CARDS
    assert manifest.bundle_id.startswith("test-bundle-1-reindex-")
    assert manifest.index.count == 2 * N_CARDS and manifest.catalogue.card_count == N_CARDS
    # and detail images for the printings of one name whose scans verify as each other, and
    # for no others
    from edge.bundles.reference_features import cards_with_printings, same_art
    from edge.recognize.feature_file import ReferenceFeatures

    refs = ReferenceFeatures(out / manifest.verification.file)
    printed = cards_with_printings(new_catalogue[0])
    items = [(c, f) for c in refs.card_ids if (f := refs.get(c)) is not None]
    shared = same_art(items, printed, refs.spec)
    assert shared <= set(printed) and refs.details == len(shared)
    assert all((refs.detail(c) is not None) == (c in shared) for c in refs.card_ids)
    # and nothing is left beside it
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_reindex_keeps_the_models_and_thresholds_and_records_its_lineage(
    reindexed: tuple[Path, subprocess.CompletedProcess[str]],
    factory_bundle: Path,
    new_catalogue: tuple[Path, dict[str, np.ndarray]],
) -> None:
    out, _ = reindexed
    src = load_manifest(factory_bundle / "manifest.json")
    manifest = load_manifest(out / "manifest.json")
    for name in ("detector.onnx", "embedder.onnx"):
        assert sha256_file(out / name) == sha256_file(factory_bundle / name)
    assert manifest.thresholds == src.thresholds and manifest.embedder == src.embedder
    assert manifest.catalogue.name == "release-2"
    assert manifest.lineage["reindex"]["source_bundle_id"] == src.bundle_id
    assert manifest.lineage["catalogue_sha256"] == tree_hash(new_catalogue[0])


def test_reindexed_catalogue_holds_exactly_the_new_cards(
    reindexed: tuple[Path, subprocess.CompletedProcess[str]],
    new_catalogue: tuple[Path, dict[str, np.ndarray]],
) -> None:
    out, _ = reindexed
    catalogue = Catalogue(out / "catalogue.sqlite")
    try:
        assert set(catalogue.key_card_ids.tolist()) == set(new_catalogue[1])
        info = catalogue.get(next(iter(new_catalogue[1])))
        assert info is not None and info.name and info.set_id and info.number
    finally:
        catalogue.close()


def test_reindexed_bundle_passes_its_self_test_and_verifies_every_new_card(
    reindexed: tuple[Path, subprocess.CompletedProcess[str]],
    new_catalogue: tuple[Path, dict[str, np.ndarray]],
) -> None:
    # given the reindexed bundle loaded as a device loads it
    out, _ = reindexed
    recognizer = Recognizer.from_bundle(out, RuntimeSettings(backend="onnx"))
    try:
        # then its self-test scans come back as themselves
        cases = self_test(recognizer)
        assert cases and all(c.ok for c in cases), cases
        # and every new card, as a full-frame image, is named as itself and verified
        for card_id, scan in new_catalogue[1].items():
            [card], _ = recognizer.verdicts(scan, [full_frame_box(*scan.shape[:2])])
            assert card is not None and card.match.card_id == card_id
            assert card.match.confidence == "verified", card.match
    finally:
        recognizer.close()


def test_scans_smaller_than_the_feature_canvas_are_reindexed_with_a_warning(
    factory_bundle: Path, tmp_path: Path
) -> None:
    # given a catalogue whose scans are 224 px tall, under the 336 px feature canvas
    folder = tmp_path / "small-scans"
    write_catalogue(folder, n=4, seed=23)
    for path in (folder / "images").iterdir():
        img = cv2.imread(str(path))
        cv2.imwrite(str(path), cv2.resize(img, (160, 224), interpolation=cv2.INTER_AREA))
    # when reindexed
    result = reindex_cli(
        "--bundle", str(factory_bundle), "--catalogue", str(folder), "--out", str(tmp_path / "b")
    )
    # then the bundle is written, and the command says what such scans cannot tell apart
    assert result.returncode == 0, result.stderr
    assert "4 of 4 scans are under the 336 px" in result.stderr
    assert "336 px tall or more keep it" in result.stderr


def test_scans_are_resized_as_the_training_index_builder_resizes_them(
    new_catalogue: tuple[Path, dict[str, np.ndarray]], factory_bundle: Path
) -> None:
    # given a catalogue scan and the embedder's input size
    from training.data import read_rgb

    spec = load_manifest(factory_bundle / "manifest.json").embedder.input
    path = next((new_catalogue[0] / "images").iterdir())
    scan = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    # then reindex's resize gives exactly the pixels training indexed
    expected = read_rgb(path, (spec.height, spec.width))
    assert np.array_equal(resize_scan(scan, spec.height, spec.width), expected)


# --- refusals ---------------------------------------------------------------------------------


def _no_csv(folder: Path) -> None:
    (folder / "cards.csv").unlink()


def _row_without_id(folder: Path) -> None:
    with (folder / "cards.csv").open("a", encoding="utf-8") as f:
        f.write(",Nameless,s01,Set,999,common\n")


def _duplicate_id(folder: Path) -> None:
    lines = (folder / "cards.csv").read_text(encoding="utf-8").splitlines()
    (folder / "cards.csv").write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")


def _first_id(folder: Path) -> str:
    return (folder / "cards.csv").read_text(encoding="utf-8").splitlines()[1].split(",")[0]


def _missing_scan(folder: Path) -> None:
    (folder / "images" / f"{_first_id(folder)}.jpg").unlink()


def _corrupt_scan(folder: Path) -> None:
    (folder / "images" / f"{_first_id(folder)}.jpg").write_bytes(b"\xff\xd8 not a jpeg")


def _empty(folder: Path) -> None:
    (folder / "cards.csv").write_text("card_id,name,set_id,set_name,number,rarity\n")


BAD_CATALOGUES: dict[str, tuple[Callable[[Path], None], str]] = {
    "no cards.csv": (_no_csv, "cards.csv is missing"),
    "row without card_id": (_row_without_id, "a row has no card_id"),
    "duplicate card_id": (_duplicate_id, "appears twice"),
    "missing scan": (_missing_scan, "missing or unreadable"),
    "corrupt scan": (_corrupt_scan, "missing or unreadable"),
    "empty catalogue": (_empty, "has no cards"),
}


def _refused(result: subprocess.CompletedProcess[str], code: str, words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"error [{code}]" in result.stderr and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", sorted(BAD_CATALOGUES))
def test_a_bad_catalogue_is_refused_naming_the_problem(
    case: str,
    factory_bundle: Path,
    new_catalogue: tuple[Path, dict[str, np.ndarray]],
    tmp_path: Path,
) -> None:
    # given a copy of the catalogue with one defect
    folder = tmp_path / "catalogue"
    shutil.copytree(new_catalogue[0], folder)
    damage, words = BAD_CATALOGUES[case]
    damage(folder)
    out = tmp_path / "out" / "bundle"
    # when it is reindexed
    result = reindex_cli("--bundle", str(factory_bundle), "--catalogue", str(folder), "--out", str(out))  # fmt: skip
    # then the command names the problem, and leaves neither --out nor its staging folder
    _refused(result, "bad_image", words)
    if case in ("missing scan", "corrupt scan", "duplicate card_id"):
        assert _first_id(folder) in result.stderr
    assert not out.exists() and not any((tmp_path / "out").iterdir())


def test_a_source_that_is_not_a_valid_bundle_is_refused(
    bundle_copy: Path, new_catalogue: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    # given a bundle whose embedder was altered after it was hashed
    (bundle_copy / "embedder.onnx").write_bytes(b"tampered")
    out = tmp_path / "out"
    result = reindex_cli("--bundle", str(bundle_copy), "--catalogue", str(new_catalogue[0]), "--out", str(out))  # fmt: skip
    _refused(result, "bundle_size_mismatch", "embedder.onnx")
    assert not out.exists()
    # and a folder that is no bundle at all
    result = reindex_cli("--bundle", str(tmp_path), "--catalogue", str(new_catalogue[0]), "--out", str(out))  # fmt: skip
    _refused(result, "bundle_schema", "no manifest")


def test_an_existing_out_is_kept_unless_forced_and_a_bad_id_is_refused(
    factory_bundle: Path, new_catalogue: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    # given an --out that already holds a file
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["--bundle", str(factory_bundle), "--catalogue", str(new_catalogue[0]), "--out", str(out)]  # fmt: skip
    # then it is refused and left alone
    _refused(reindex_cli(*args), "bundle_output_exists", "not empty")
    assert (out / "keep.txt").read_text() == "mine"
    # and an id the manifest cannot hold, or the source's own, is refused
    _refused(reindex_cli(*args, "--force", "--bundle-id", "../x"), "bundle_schema", "'../x'")
    _refused(reindex_cli(*args, "--force", "--bundle-id", "test-bundle-1"), "bundle_conflict", "own id")  # fmt: skip
    # when forced with a valid id, the folder becomes the new bundle
    result = reindex_cli(*args, "--force", "--bundle-id", "release-2")
    assert result.returncode == 0, result.stderr
    assert verify_bundle(out).bundle_id == "release-2" and not (out / "keep.txt").exists()


def test_a_failing_self_test_is_refused_and_leaves_no_bundle(
    factory_bundle: Path, new_catalogue: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    # given a catalogue of two cards whose scans are the same image: neither can verify as itself
    folder = tmp_path / "twins"
    (folder / "images").mkdir(parents=True)
    lines = (new_catalogue[0] / "cards.csv").read_text(encoding="utf-8").splitlines()[:3]
    (folder / "cards.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    first = new_catalogue[0] / "images" / f"{lines[1].split(',')[0]}.jpg"
    for line in lines[1:]:
        shutil.copyfile(first, folder / "images" / f"{line.split(',')[0]}.jpg")
    out = tmp_path / "out"
    # when it is reindexed, then the self-test failure is reported and nothing is left behind
    result = reindex_cli("--bundle", str(factory_bundle), "--catalogue", str(folder), "--out", str(out))  # fmt: skip
    _refused(result, "bundle_selftest_failed", "failed its self-test on 2/2 scans")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["twins"]
