"""Teach on the spot (edge.overlay.store): the shortlist merge, the snapshot, the store on disk, and the
demo bundle's Recognizer verifying against taught views, on the demo bundle itself."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.config import RuntimeSettings, Settings
from edge.feedback import UnknownCardError
from edge.live.runtime import Runtime
from edge.overlay.store import OverlayStore, OverlayViewNotFoundError, TeachNoFeaturesError
from edge.recognize.decide import TAUGHT_SPREAD_PHOTOMETRIC, Decision
from edge.recognize.features import Features
from edge.recognize.recognizer import Recognizer
from edge.recognize.taught import (
    OverlaySnapshot,
    PreparedView,
    TaughtCandidate,
    index_only,
    merge_taught,
)
from edge.recognize.verify import Verification
from edge.types import Candidate
from tests.overlay_photos import (
    CARD,
    DEMO,
    POSE_1,
    POSE_2,
    photo,
    scan,
    sleeve,
    thick_sleeve,
    variant,
)

pytestmark = pytest.mark.skipif(not (DEMO / "manifest.json").is_file(), reason="no demo bundle")


@pytest.fixture(scope="module")
def rec() -> Iterator[Recognizer]:
    r = Recognizer.from_bundle(DEMO, RuntimeSettings(onnx_threads=1))
    yield r
    r.close()


@pytest.fixture
def served(rec: Recognizer, tmp_path: Path) -> Iterator[tuple[Runtime, OverlayStore]]:
    """The demo recognizer in a runtime with an empty overlay under tmp_path/state."""
    runtime = Runtime(Settings(), rec)
    store = OverlayStore(tmp_path / "state", runtime.lease)
    runtime.attach_overlay(store)
    yield runtime, store
    rec.use_overlay(OverlaySnapshot.empty(rec.bundle_id))


def _named(rec: Recognizer, image: np.ndarray, card_id: str) -> bool:
    return any(c.match.card_id == card_id and c.match.known for c in rec.identify(image).cards)


def _teach_pose_1(rec: Recognizer, store: OverlayStore, card: np.ndarray, card_id: str) -> str:
    image = photo(card, POSE_1)
    [found] = rec.identify(image).cards
    return store.teach_from_frame(card_id, image, found.box.corners.tolist()).view_id


# --- merge and snapshot (pure) ---------------------------------------------------------------


def test_merge_takes_each_cards_better_score_and_keeps_its_index_score() -> None:
    # given the index's shortlist and the overlay's nearest cards
    index = [Candidate("a", 0.9), Candidate("b", 0.8), Candidate("c", 0.7)]
    taught = [Candidate("c", 0.95), Candidate("d", 0.85), Candidate("a", 0.5)]
    # when merged
    merged = merge_taught(index, taught)
    # then each card appears once with its better score, best first
    assert [(c.card_id, c.score) for c in merged] == [
        ("c", 0.95), ("a", 0.9), ("d", 0.85), ("b", 0.8),
    ]  # fmt: skip
    assert merged[0] == TaughtCandidate("c", 0.95, 0.7)
    assert merged[2] == TaughtCandidate("d", 0.85, None)


def test_index_only_gives_back_what_the_index_said() -> None:
    # given a merged shortlist
    index = [Candidate("a", 0.9), Candidate("b", 0.8), Candidate("c", 0.7)]
    merged = merge_taught(index, [Candidate("c", 0.95), Candidate("d", 0.85)])
    # then the embedding-only view of it is the index's, and a list without taught entries is
    # returned as it is
    assert list(index_only(merged)) == index
    assert index_only(index) is index


def _view(view_id: str, card_id: str, vector: list[float]) -> PreparedView:
    v = np.asarray(vector, np.float32)
    v /= np.linalg.norm(v)
    feats = Features(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    return PreparedView(
        view_id, card_id, np.stack([v, -v]), feats, np.zeros((112, 80, 3), np.uint8)
    )


def test_snapshot_scores_each_card_by_its_nearest_view() -> None:
    # given two views of card x and one of card y
    snap = OverlaySnapshot(
        "b",
        None,
        [_view("1", "x", [1, 0, 0]), _view("2", "y", [0, 1, 0]), _view("3", "x", [0, 0, 1])],
    )
    # when a vector closest to x's second view is looked up
    [hits] = snap.nearest(np.asarray([[0.1, 0.3, 0.9]], np.float32), k=2)
    # then x comes first with its best view's score, y second
    assert [h.card_id for h in hits] == ["x", "y"]
    assert hits[0].score == pytest.approx(0.9, abs=1e-6) and hits[1].score == pytest.approx(0.3)
    assert len(snap.views_of("x")) == 2 and snap.get("2") is not None and snap.get("9") is None
    assert OverlaySnapshot.empty().nearest(np.zeros((2, 3), np.float32), 3) == [[], []]


def test_recognizer_refuses_a_snapshot_prepared_for_another_bundle(rec: Recognizer) -> None:
    with pytest.raises(ValueError, match="prepared for"):
        rec.use_overlay(OverlaySnapshot.empty("another-bundle"))


# --- on the demo bundle ----------------------------------------------------------------------


def test_empty_overlay_leaves_every_verdict_as_it_was(
    rec: Recognizer, served: tuple[Runtime, OverlayStore]
) -> None:
    # given photos the demo bundle answers without an overlay
    images = [photo(sleeve(scan(CARD)), POSE_2, table_seed=1), photo(scan("s03-006"), POSE_1)]
    rec.use_overlay(OverlaySnapshot.empty(rec.bundle_id))
    before = [[c.match for c in rec.identify(i).cards] for i in images]
    # when an overlay with no views is attached
    served[0].attach_overlay(served[1])
    # then every answer is identical
    assert [[c.match for c in rec.identify(i).cards] for i in images] == before


def test_a_taught_view_names_the_next_sighting_of_its_card(
    rec: Recognizer, served: tuple[Runtime, OverlayStore]
) -> None:
    # given the card in a thick matte sleeve, which the bundle's sharp scan cannot verify at pose 2
    _, store = served
    card = thick_sleeve(scan(CARD))
    nxt = photo(card, POSE_2, table_seed=1)
    assert not _named(rec, nxt, CARD)
    # when one sighting at pose 1 is taught
    view_id = _teach_pose_1(rec, store, card, CARD)
    # then the next sighting, at another pose on another table, is verified as the card
    [found] = rec.identify(nxt).cards
    assert (found.match.card_id, found.match.confidence) == (CARD, "verified")
    assert found.match.reason == f"taught view {view_id}"
    assert [e.card_id for e in store.entries()] == [CARD] and len(rec.overlay) == 1


def test_a_taught_view_does_not_pull_another_card_into_it(
    rec: Recognizer, served: tuple[Runtime, OverlayStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a view taught from CARD with other art in its art window
    _, store = served
    _teach_pose_1(rec, store, variant(scan(CARD)), CARD)
    # when another card, not in view when taught, shows the same new art
    other = photo(variant(scan("s02-029")), POSE_2, table_seed=1)
    # then it is not named as the taught card
    assert not _named(rec, other, CARD)

    # and the taught view's evidence for it is judged by CARD's scan's colours too: they agree
    # far less than the taught crop's alone, which hold the same new art
    looks: list[tuple[Decision, Any, Any, Verification, Any]] = []
    measured = Decision.measured

    def spy(self: Decision, image: Any, warp: Any, v: Verification, box: Any, views: Any = None):
        if v.view and v.card_id == CARD and v.homography is not None:
            looks.append((self, image, warp, v, views))
        return measured(self, image, warp, v, box, views)

    with monkeypatch.context() as m:
        m.setattr(Decision, "measured", spy)
        rec.identify(other)
    assert looks, "the taught view was not verified against the other card"
    decision, image, warp, v, views = max(looks, key=lambda look: look[3].inliers)
    both = decision.coloured(image, warp, v, views).photometric
    with monkeypatch.context() as m:
        m.setattr("edge.recognize.decide.TAUGHT_COLOUR_BOTH", False)
        crop_only = decision.coloured(image, warp, v, views).photometric
    assert both < crop_only - 0.2, (both, crop_only)
    assert both < rec.manifest.thresholds.verify_min_photometric


def test_a_taught_view_keeps_a_colour_floor_at_the_spread_point(rec: Recognizer) -> None:
    # given a bundle whose spread point asks no colours of its scans (light that spoils them)
    assert rec.verify_stage is not None
    decision = rec.verify_stage.decision
    t = decision.thresholds.model_copy(update={"verify_spread_photometric": -1.0})
    judge = Decision(decision.refs, t, decision.verifier, decision.printings)
    # when evidence with inliers spread over the card but colours that disagree is judged
    spread = Verification(
        CARD, inliers=t.verify_spread_inliers, matches=2 * t.verify_spread_inliers,
        homography=np.eye(3), photometric=0.2, coverage=t.verify_spread_cells,
    )  # fmt: skip
    assert spread.inliers < t.verify_min_inliers or spread.photometric < t.verify_min_photometric
    # then it passes against the card's scan, and not against a taught view: a view's features
    # hold whatever lay on the card when it was taught, only its colours tie it to its card
    assert judge.passes(spread)
    assert not judge.passes(replace(spread, view="v1"))
    assert spread.photometric < TAUGHT_SPREAD_PHOTOMETRIC


def test_teaching_a_card_not_in_the_catalogue_is_refused(
    served: tuple[Runtime, OverlayStore],
) -> None:
    _, store = served
    with pytest.raises(UnknownCardError) as e:
        store.teach("no-such-card", scan(CARD))
    assert (e.value.code, e.value.http_status) == ("card_not_in_catalogue", 422)
    assert store.entries() == [] and not (store.root / "views").exists()


def test_teaching_a_polygon_without_features_is_refused(
    served: tuple[Runtime, OverlayStore],
) -> None:
    # given a frame whose polygon covers only a flat table
    _, store = served
    flat = np.full((480, 640, 3), 120, np.uint8)
    with pytest.raises(TeachNoFeaturesError) as e:
        store.teach_from_frame(CARD, flat, POSE_1)
    assert (e.value.code, e.value.http_status) == ("teach_no_features", 422)
    assert store.entries() == []


def test_a_corrupt_overlay_file_is_ignored_with_a_warning(
    rec: Recognizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given an overlay.json that is not JSON
    root = tmp_path / "state" / "overlay"
    root.mkdir(parents=True)
    (root / "overlay.json").write_text("{not json", encoding="utf-8")
    runtime = Runtime(Settings(), rec)
    store = OverlayStore(tmp_path / "state", runtime.lease)
    # when the service attaches it
    with caplog.at_level(logging.WARNING, logger="edge.overlay.store"):
        runtime.attach_overlay(store)
    # then it serves no views, says why, keeps the file aside, and teaching works again
    assert len(rec.overlay) == 0 and store.entries() == []
    assert "unreadable" in caplog.text
    assert list(root.glob("overlay.json.corrupt-*"))
    _teach_pose_1(rec, store, sleeve(scan(CARD)), CARD)
    assert len(store.entries()) == 1
    rec.use_overlay(OverlaySnapshot.empty(rec.bundle_id))


def test_views_survive_a_restart_and_a_corrupt_npz_is_rebuilt(
    rec: Recognizer, served: tuple[Runtime, OverlayStore], tmp_path: Path
) -> None:
    # given a taught view, and its derived data damaged on disk
    _, store = served
    card = sleeve(scan(CARD))
    view_id = _teach_pose_1(rec, store, card, CARD)
    (store.root / "views" / f"{view_id}.npz").write_bytes(b"garbage")
    # when a new process opens the state directory
    rec.use_overlay(OverlaySnapshot.empty(rec.bundle_id))
    runtime = Runtime(Settings(), rec)
    runtime.attach_overlay(OverlayStore(tmp_path / "state", runtime.lease))
    # then the view is served again (rebuilt from its crop) and still names the next sighting
    assert [v.view_id for v in rec.overlay.views] == [view_id]
    assert _named(rec, photo(card, POSE_2, table_seed=1), CARD)


def test_remove_one_then_clear(rec: Recognizer, served: tuple[Runtime, OverlayStore]) -> None:
    _, store = served
    card = sleeve(scan(CARD))
    first, second = (_teach_pose_1(rec, store, card, CARD) for _ in range(2))
    assert store.remove(first).view_id == first
    assert [v.view_id for v in rec.overlay.views] == [second]
    with pytest.raises(OverlayViewNotFoundError):
        store.remove(first)
    assert [e.view_id for e in store.clear()] == [second]
    assert len(rec.overlay) == 0 and store.entries() == []
    assert not list((store.root / "views").iterdir())


def test_identify_runs_while_views_are_taught_and_cleared(
    rec: Recognizer, served: tuple[Runtime, OverlayStore]
) -> None:
    # given identify calls in two threads
    _, store = served
    card = sleeve(scan(CARD))
    image = photo(card, POSE_2, table_seed=1)
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                rec.identify(image)
            except BaseException as e:  # any failure fails the test
                errors.append(e)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for t in threads:
        t.start()
    # when views are taught and cleared meanwhile
    try:
        for _ in range(3):
            _teach_pose_1(rec, store, card, CARD)
            store.clear()
    finally:
        stop.set()
        for t in threads:
            t.join()
    # then no call failed
    assert errors == []


def _derived(tmp_path: Path, bundle_id: str, *, rename: bool) -> Path:
    """The demo bundle under another id; `rename`: one card renamed (another catalogue)."""
    from edge.bundles.files import refresh_hashes, write_manifest
    from edge.bundles.manifest import load_manifest

    out = tmp_path / bundle_id
    shutil.copytree(DEMO, out)
    (out / "manifest.sig").unlink(missing_ok=True)
    if rename:
        con = sqlite3.connect(out / "catalogue.sqlite")
        with con:
            con.execute("UPDATE cards SET name = name || ' (renamed)' WHERE card_id = ?", (CARD,))
        con.close()
    manifest = load_manifest(out / "manifest.json").model_copy(update={"bundle_id": bundle_id})
    write_manifest(out, refresh_hashes(out, manifest))
    return out


def test_a_swap_keeps_views_for_the_same_catalogue_and_drops_them_for_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given the demo serving a taught view (its own recognizer: a swap closes the old one)
    settings = RuntimeSettings(onnx_threads=1)
    base = Recognizer.from_bundle(DEMO, settings)
    runtime = Runtime(Settings(), base)
    store = OverlayStore(tmp_path / "state", runtime.lease)
    runtime.attach_overlay(store)
    view_id = _teach_pose_1(base, store, sleeve(scan(CARD)), CARD)
    same = Recognizer.from_bundle(_derived(tmp_path, "demo-same", rename=False), settings)
    other = Recognizer.from_bundle(_derived(tmp_path, "demo-other", rename=True), settings)
    try:
        # when a bundle of the same catalogue becomes current (as hot swap does it)
        runtime.swap(same)
        # then the view is kept and prepared for it
        assert [v.view_id for v in same.overlay.views] == [view_id]
        npz = np.load(store.root / "views" / f"{view_id}.npz")
        assert str(npz["bundle_id"]) == "demo-same"
        # when a bundle of another catalogue becomes current
        with caplog.at_level(logging.WARNING, logger="edge.overlay.store"):
            runtime.swap(other)
        # then the overlay is dropped, kept aside, and says so
        assert len(other.overlay) == 0 and store.entries() == []
        assert "overlay dropped" in caplog.text
        [aside] = (tmp_path / "state" / "overlay-dropped").iterdir()
        doc = json.loads((aside / "overlay.json").read_text())
        assert [v["view_id"] for v in doc["views"]] == [view_id]
    finally:
        runtime.close()  # closes the current one; the swaps closed the others


def test_training_export_writes_taught_views_once(
    rec: Recognizer, served: tuple[Runtime, OverlayStore], tmp_path: Path
) -> None:
    # given a taught view that came with no correction, and one that came with a correction
    from training.feedback import export

    _, store = served
    card = sleeve(scan(CARD))
    image = photo(card, POSE_1)
    corners = rec.identify(image).cards[0].box.corners.tolist()
    alone = store.teach_from_frame(CARD, image, corners)
    store.teach_from_frame(CARD, image, corners, feedback_id="20260101T000000Z-abcdef01")
    feedback = tmp_path / "state" / "feedback"
    (feedback / "20260101T000000Z-abcdef01").mkdir(parents=True)
    # when exported for retraining (the correction itself lacks meta.json: not a record)
    counts = export(feedback, tmp_path / "data", overlay=store.root)
    # then both views go to cls/train/<card>/ at the embedder's crop size
    crops = {p.name: p for p in (tmp_path / "data" / "cls" / "train" / CARD).glob("ov-*.jpg")}
    assert counts["taught"] == 2 and len(crops) == 2 and f"ov-{alone.view_id}.jpg" in crops
    import cv2

    assert cv2.imread(str(crops[f"ov-{alone.view_id}.jpg"])).shape == (224, 160, 3)
    # and a second export writes nothing twice
    assert export(feedback, tmp_path / "data", overlay=store.root)["skipped"] == 2
