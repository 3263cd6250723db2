"""Scan lists without a server: appearance counting (placed twice counts twice, staying counts
once, flicker and tracker corrections do not add entries), the store's one-recording rule and
durability across a restart, and the export formats."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from edge.lists.errors import ListRecordingError
from edge.lists.export import FORMATS, UnknownFormatError, export
from edge.lists.recorder import Insert, Recorder, Retag
from edge.lists.service import ScanLists
from edge.lists.store import CardFields, ListStore
from edge.live.scene import SceneCard, SceneState
from edge.types import Frame

CARDS = {
    "c1": CardFields("c1", "Zepzurefin", "s01", "Crystal Depths", "001/204", "holo_rare"),
    "c2": CardFields("c2", 'Flabébé "Blue", Jr.', "s02", "Ébène, Set", "002/204", "common"),
    "c3": CardFields("c3", "Volnaripup", "s01", "Crystal Depths", "003/204", "common"),
}
IMAGE = np.full((480, 640, 3), 90, np.uint8)


def card(
    track_id: int,
    card_id: str | None,
    x: float = 100,
    y: float = 100,
    *,
    tier: str = "verified",
    identified: bool = True,
) -> SceneCard:
    w, h = 126, 176
    polygon = ((x, y), (x + w, y), (x + w, y + h), (x, y + h))
    known = card_id is not None and tier != "unknown"
    return SceneCard(
        track_id, card_id, None, None, None, 0.9, known, identified, 0.9, polygon, tier
    )


class Film:
    """Feeds scenes to a recorder as the live loop would, frame after frame."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.frame_id = 0
        self.ops: list[Insert | Retag] = []

    def show(self, *cards: SceneCard, frames: int = 1) -> None:
        for _ in range(frames):
            self.frame_id += 1
            frame = Frame(IMAGE, self.frame_id, float(self.frame_id), "test")
            scene = SceneState("demo", self.frame_id, 0.0, 640, 480, tuple(cards))
            self.ops += self.recorder.observe(frame, scene)

    def inserts(self) -> list[str]:
        return [op.entry.card.card_id for op in self.ops if isinstance(op, Insert)]


@pytest.fixture
def film() -> Film:
    recorder = Recorder()
    recorder.begin(list_id=1, next_entry_id=1)
    return Film(recorder)


def test_a_card_that_stays_in_view_counts_once(film: Film) -> None:
    film.show(card(1, "c1"), frames=200)
    assert film.inserts() == ["c1"]


def test_placed_removed_and_placed_again_counts_twice(film: Film) -> None:
    film.show(card(1, "c1"), frames=10)
    film.show(frames=40)  # taken away
    film.show(card(2, "c1"), frames=10)
    assert film.inserts() == ["c1", "c1"]


def test_a_card_in_view_when_the_list_starts_counts_once() -> None:
    recorder = Recorder()
    f = Film(recorder)
    f.show(card(1, "c1"), frames=5)  # no list yet
    assert f.inserts() == []
    recorder.begin(list_id=1, next_entry_id=1)
    f.show(card(1, "c1"), frames=30)
    assert f.inserts() == ["c1"]


def test_a_track_lost_for_a_few_frames_and_reacquired_in_place_is_one_entry(film: Film) -> None:
    film.show(card(1, "c1"), frames=10)
    film.show(frames=2)  # the tracker lost it
    film.show(card(2, "c1", x=104, y=98), frames=10)  # a new track, same card, same place
    assert film.inserts() == ["c1"]


def test_a_duplicate_box_over_a_tracked_card_is_not_a_second_card(film: Film) -> None:
    film.show(card(1, "c1"), frames=5)
    film.show(card(1, "c1"), card(2, "c1", x=108), frames=5)
    assert film.inserts() == ["c1"]


def test_two_copies_side_by_side_count_twice(film: Film) -> None:
    film.show(card(1, "c1", x=50), card(2, "c1", x=400), frames=20)
    assert film.inserts() == ["c1", "c1"]


def test_another_card_laid_where_one_was_taken_away_is_counted(film: Film) -> None:
    film.show(card(1, "c1"), frames=10)
    film.show(frames=2)
    film.show(card(2, "c2"), frames=10)
    assert film.inserts() == ["c1", "c2"]


def test_a_tracker_correction_retags_the_entry(film: Film) -> None:
    film.show(card(1, "c1", tier="probable"), frames=3)
    film.show(card(1, "c2", tier="verified"), frames=10)
    assert film.inserts() == ["c1"]
    retags = [op for op in film.ops if isinstance(op, Retag)]
    assert [(r.card_id, r.confidence) for r in retags] == [("c2", "verified")]


def test_an_upgrade_to_verified_retags_the_tier(film: Film) -> None:
    film.show(card(1, "c1", tier="probable"), frames=3)
    film.show(card(1, "c1", tier="verified"), frames=3)
    retags = [op for op in film.ops if isinstance(op, Retag)]
    assert [(r.card_id, r.confidence) for r in retags] == [("c1", "verified")]


def test_unknown_and_unsettled_cards_are_not_recorded_until_identified(film: Film) -> None:
    film.show(card(1, None, tier="unknown"), frames=5)
    film.show(card(1, "c1", identified=False), frames=5)
    assert film.inserts() == []
    film.show(card(1, "c1"), frames=5)
    assert film.inserts() == ["c1"]


def test_nothing_is_recorded_after_the_list_ends(film: Film) -> None:
    film.recorder.end()
    film.show(card(1, "c1"), frames=5)
    assert film.ops == []


def test_a_bundle_swap_does_not_count_the_cards_in_view_again(film: Film) -> None:
    film.show(card(1, "c1"), frames=5)
    film.recorder.on_swap()
    film.show(frames=20)  # the new bundle warms up; the tracker starts afresh
    film.show(card(7, "c1"), frames=5)
    assert film.inserts() == ["c1"]


# -- the service: store, writer, restart ---------------------------------------------------------


def lookup(card_id: str) -> CardFields | None:
    return CARDS.get(card_id)


def feed(lists: ScanLists, scenes: list[tuple[SceneCard, ...]], start: int = 1) -> None:
    for i, cards in enumerate(scenes, start):
        frame = Frame(IMAGE, i, float(i), "test")
        lists.observe(frame, SceneState("demo", i, 0.0, 640, 480, cards))


def test_one_list_records_at_a_time(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    first = store.start("binder 1", None, "demo")
    with pytest.raises(ListRecordingError) as err:
        store.start("binder 2", None, "demo")
    assert err.value.http_status == 409 and f"list {first.list_id}" in err.value.message
    store.stop(first.list_id)
    assert store.start("binder 2", None, "demo").recording


def test_entries_are_written_with_their_thumbnails_and_counts(tmp_path: Path) -> None:
    lists = ScanLists(tmp_path, lookup)
    scan = lists.start("box", "from the attic", "demo")
    feed(lists, [(card(1, "c1"),)] * 5 + [()] * 30 + [(card(2, "c1"), card(3, "c2", x=400))] * 5)
    lists.stop(scan.list_id)
    entries = lists.store.entries(scan.list_id)
    assert [e.card.card_id for e in entries] == ["c1", "c1", "c2"]
    assert entries[2].card == CARDS["c2"] and entries[0].frame_id == 1
    assert all(e.has_thumb for e in entries)
    thumb = lists.store.image(scan.list_id, entries[0].entry_id, "thumb")
    assert thumb is not None and thumb[:2] == b"\xff\xd8"
    counts = {c.card_id: n for c, n in lists.store.counts(scan.list_id)}
    assert counts == {"c1": 2, "c2": 1}
    lists.close()


def test_a_person_correction_is_not_overridden_by_the_tracker(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    lists = ScanLists(tmp_path, lookup)
    scan = lists.start("box", None, "demo")
    feed(lists, [(card(1, "c1"),)] * 3)
    assert lists.flush()
    entry = store.entries(scan.list_id)[0]
    store.retag(entry.entry_id, CARDS["c3"], "corrected", 1.0, by_person=True)
    feed(lists, [(card(1, "c2"),)] * 3, start=4)  # the tracker changes its mind afterwards
    lists.stop(scan.list_id)
    after = store.entry(scan.list_id, entry.entry_id)
    assert after.card.card_id == "c3" and after.corrected
    lists.close()


def test_a_restart_keeps_every_entry_and_the_list_recording(tmp_path: Path) -> None:
    # given a list recording two cards, the service stopping without stopping the list
    lists = ScanLists(tmp_path, lookup)
    scan = lists.start("box", None, "demo")
    feed(lists, [(card(1, "c1"), card(2, "c2", x=400))] * 5)
    lists.close()
    # when it starts again, with c1 still lying in view (a new tracker: track ids from 1 again)
    again = ScanLists(tmp_path, lookup)
    assert again.recorder.list_id == scan.list_id
    feed(again, [(card(1, "c1", x=102), card(2, "c3", x=250, y=250))] * 5)
    again.stop(scan.list_id)
    # then nothing was lost, c1 is not counted twice, and the new card is
    ids = [e.card.card_id for e in again.store.entries(scan.list_id)]
    assert ids == ["c1", "c2", "c3"]
    again.close()


def test_deleted_entry_ids_are_never_reused(tmp_path: Path) -> None:
    lists = ScanLists(tmp_path, lookup)
    scan = lists.start("box", None, "demo")
    feed(lists, [(card(1, "c1"),)] * 3)
    lists.stop(scan.list_id)
    last = lists.store.entries(scan.list_id)[-1].entry_id
    lists.store.delete_entry(scan.list_id, last)
    assert lists.store.next_entry_id() == last + 1
    lists.close()


def test_entries_beyond_the_writer_backlog_are_written_without_images(tmp_path: Path) -> None:
    lists = ScanLists(tmp_path, lookup)
    lists.writer.max_pending = 0  # every entry is "behind" a backlog
    scan = lists.start("box", None, "demo")
    feed(lists, [(card(1, "c1"),)] * 3)
    lists.stop(scan.list_id)
    (entry,) = lists.store.entries(scan.list_id)
    assert entry.card.card_id == "c1" and not entry.has_thumb
    lists.close()


# -- export --------------------------------------------------------------------------------------


@pytest.fixture
def recorded(tmp_path: Path) -> ScanLists:
    lists = ScanLists(tmp_path, lookup)
    scan = lists.start('Binder: é, "2"', "note, with comma", "demo")
    feed(lists, [(card(1, "c2"),)] * 3 + [()] * 30 + [(card(2, "c2"), card(3, "c1", x=400))] * 3)
    lists.stop(scan.list_id)
    return lists


def rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_tcgplayer_export_has_the_app_columns_and_a_quantity_per_card(recorded: ScanLists) -> None:
    scan = recorded.store.all()[0]
    out = export(scan, recorded.store.entries(scan.list_id), "tcgplayer")
    assert not out.data.startswith(b"\xef\xbb\xbf") and b"\r\n" in out.data
    table = rows(out.data)
    assert list(table[0])[:6] == [
        "Quantity",
        "Name",
        "Simple Name",
        "Set",
        "Card Number",
        "Set Code",
    ]
    assert [(r["Name"], r["Quantity"]) for r in table] == [
        ('Flabébé "Blue", Jr.', "2"),
        ("Zepzurefin", "1"),
    ]
    assert table[0]["Set"] == "Ébène, Set" and table[1]["Rarity"] == "Holo Rare"


def test_collectr_export_names_the_portfolio_and_condition(recorded: ScanLists) -> None:
    scan = recorded.store.all()[0]
    table = rows(export(scan, recorded.store.entries(scan.list_id), "collectr").data)
    assert table[0]["Portfolio Name"] == 'Binder: é, "2"' and table[0]["Quantity"] == "2"
    assert table[0]["Card Condition"] == "Near Mint" and table[0]["Product Name"].startswith("Flab")
    assert table[1]["Notes"] == "note, with comma"


def test_plain_csv_and_json_agree(recorded: ScanLists) -> None:
    scan = recorded.store.all()[0]
    entries = recorded.store.entries(scan.list_id)
    plain = export(scan, entries, "csv")
    assert plain.data.startswith(b"\xef\xbb\xbf")
    quantities = {r["card_id"]: int(r["quantity"]) for r in rows(plain.data)}
    doc = json.loads(export(scan, entries, "json").data)
    assert quantities == {c["card_id"]: c["quantity"] for c in doc["cards"]} == {"c2": 2, "c1": 1}
    assert len(doc["entries"]) == 3 and doc["name"] == 'Binder: é, "2"'


def test_an_unknown_format_names_the_formats(recorded: ScanLists) -> None:
    scan = recorded.store.all()[0]
    with pytest.raises(UnknownFormatError) as err:
        export(scan, [], "xlsx")
    assert err.value.http_status == 400 and all(f in (err.value.hint or "") for f in FORMATS)


def test_file_names_are_ascii(recorded: ScanLists) -> None:
    scan = recorded.store.all()[0]
    name = export(scan, [], "tcgplayer").filename
    assert name == f"list-{scan.list_id}-binder-2.tcgplayer.csv" and name.isascii()


def test_a_box_on_part_of_a_tracked_card_is_not_a_second_card(film: Film) -> None:
    # given a large card tracked, and a second, smaller box of the same card inside it
    big = SceneCard(1, "c1", None, None, None, 0.9, True, True, 0.9, ((100, 100), (400, 100), (400, 520), (100, 520)), "verified")  # fmt: skip
    film.show(big, frames=3)
    film.show(big, card(2, "c1", x=250, y=300), frames=5)
    assert film.inserts() == ["c1"]
