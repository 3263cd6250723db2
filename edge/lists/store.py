"""Scan lists on disk: one SQLite file, `<state_dir>/lists.sqlite`, shared by the service (which
writes) and `cardedge lists` (which reads).

WAL journal with synchronous=FULL: every committed entry survives the process being killed (and
a power cut), and readers never block the writer. At most one list records at a time; a partial
unique index makes that a property of the file, not of one process's memory. Entries carry the
card's catalogue fields as recorded, so a list exports the same after a bundle swap, and without
loading any bundle.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.lists.errors import EntryNotFoundError, ListError, ListNotFoundError, ListRecordingError

logger = logging.getLogger(__name__)

LISTS_FILE = "lists.sqlite"
SCHEMA_VERSION = 1
MAX_NAME_CHARS = 200
MAX_NOTE_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    list_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    note TEXT,
    created TEXT NOT NULL,
    stopped TEXT,
    bundle_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_recording ON lists ((stopped IS NULL)) WHERE stopped IS NULL;
CREATE TABLE IF NOT EXISTS entries (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
    list_id INTEGER NOT NULL REFERENCES lists (list_id) ON DELETE CASCADE,
    t TEXT NOT NULL,
    card_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    set_id TEXT NOT NULL DEFAULT '',
    set_name TEXT NOT NULL DEFAULT '',
    number TEXT NOT NULL DEFAULT '',
    rarity TEXT NOT NULL DEFAULT '',
    confidence TEXT NOT NULL,
    score REAL NOT NULL DEFAULT 0,
    frame_id INTEGER,
    track_id INTEGER,
    polygon TEXT,
    bundle_id TEXT,
    corrected INTEGER NOT NULL DEFAULT 0,
    thumb BLOB,
    crop BLOB
);
CREATE INDEX IF NOT EXISTS entries_by_list ON entries (list_id, entry_id);
"""


def utc_now(t: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds."""
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class CardFields:
    """The catalogue fields an entry keeps (so exports need no bundle)."""

    card_id: str
    name: str = ""
    set_id: str = ""
    set_name: str = ""
    number: str = ""
    rarity: str = ""


@dataclass(frozen=True, slots=True)
class ScanList:
    list_id: int
    name: str
    note: str | None
    created: str  # ISO-8601 UTC
    stopped: str | None  # None while recording
    bundle_id: str | None  # current when it started
    entries: int = 0
    cards: int = 0  # distinct card ids

    @property
    def recording(self) -> bool:
        return self.stopped is None


@dataclass(frozen=True, slots=True)
class Entry:
    """One appearance of a card while a list recorded."""

    entry_id: int
    list_id: int
    t: str  # ISO-8601 UTC, when it was identified
    card: CardFields
    confidence: str  # verified / probable
    score: float
    frame_id: int | None
    track_id: int | None
    polygon: list[list[float]] | None  # 4 x [x, y] px in the frame
    bundle_id: str | None
    corrected: bool  # a person changed its card
    has_thumb: bool


@dataclass(frozen=True, slots=True)
class NewEntry:
    """What the recorder hands the writer: everything but the images."""

    entry_id: int
    list_id: int
    t: str
    card: CardFields
    confidence: str
    score: float
    frame_id: int
    track_id: int
    polygon: list[list[float]]
    bundle_id: str | None


_ENTRY_COLS = (
    "entry_id, list_id, t, card_id, name, set_id, set_name, number, rarity, confidence, score, "
    "frame_id, track_id, polygon, bundle_id, corrected, thumb IS NOT NULL"
)
_LIST_COLS = (
    "l.list_id, l.name, l.note, l.created, l.stopped, l.bundle_id, "
    "(SELECT count(*) FROM entries e WHERE e.list_id = l.list_id), "
    "(SELECT count(DISTINCT card_id) FROM entries e WHERE e.list_id = l.list_id)"
)


def _entry(row: tuple[Any, ...]) -> Entry:
    polygon = json.loads(str(row[13])) if row[13] else None
    return Entry(
        entry_id=int(row[0]),
        list_id=int(row[1]),
        t=str(row[2]),
        card=CardFields(*(str(v) for v in row[3:9])),
        confidence=str(row[9]),
        score=float(row[10]),
        frame_id=None if row[11] is None else int(row[11]),
        track_id=None if row[12] is None else int(row[12]),
        polygon=polygon,
        bundle_id=None if row[14] is None else str(row[14]),
        corrected=bool(row[15]),
        has_thumb=bool(row[16]),
    )


def _scan_list(row: tuple[Any, ...]) -> ScanList:
    return ScanList(
        list_id=int(row[0]),
        name=str(row[1]),
        note=None if row[2] is None else str(row[2]),
        created=str(row[3]),
        stopped=None if row[4] is None else str(row[4]),
        bundle_id=None if row[5] is None else str(row[5]),
        entries=int(row[6]),
        cards=int(row[7]),
    )


class ListStore:
    """The lists file: one connection shared by the service's threads under a lock."""

    def __init__(self, state_dir: Path, *, read_only: bool = False) -> None:
        self.path = Path(state_dir) / LISTS_FILE
        self._lock = threading.Lock()
        if read_only:
            if not self.path.is_file():
                raise ListNotFoundError(
                    f"no scan lists under {state_dir}", "start one with POST /v1/lists"
                )
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._con = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.executescript(_SCHEMA)
            self._con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._con.execute("PRAGMA foreign_keys=ON")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._con:
            yield self._con

    # -- lists --------------------------------------------------------------------------------
    def start(self, name: str, note: str | None, bundle_id: str | None) -> ScanList:
        """A new recording list; ListRecordingError while another one records."""
        name, note = name.strip(), (note or "").strip() or None
        if not name or len(name) > MAX_NAME_CHARS:
            raise ListError(f"a list needs a name of 1 to {MAX_NAME_CHARS} characters")
        if note is not None and len(note) > MAX_NOTE_CHARS:
            raise ListError(f"note is longer than {MAX_NOTE_CHARS} characters")
        try:
            with self._tx() as con:
                cur = con.execute(
                    "INSERT INTO lists (name, note, created, bundle_id) VALUES (?, ?, ?, ?)",
                    (name, note, utc_now(), bundle_id),
                )
                list_id = int(cur.lastrowid or 0)
        except sqlite3.IntegrityError as e:
            current = self.recording()
            which = f"list {current.list_id} ({current.name!r})" if current else "another list"
            raise ListRecordingError(
                f"{which} is recording; only one list records at a time",
                f"stop it first: POST /v1/lists/{current.list_id if current else 'ID'}/stop",
            ) from e
        return self.get(list_id)

    def stop(self, list_id: int) -> ScanList:
        """Stop a recording list (stopping a stopped one is a no-op that returns it)."""
        with self._tx() as con:
            con.execute(
                "UPDATE lists SET stopped = ? WHERE list_id = ? AND stopped IS NULL",
                (utc_now(), list_id),
            )
        return self.get(list_id)

    def get(self, list_id: int) -> ScanList:
        with self._lock:
            row = self._con.execute(
                f"SELECT {_LIST_COLS} FROM lists l WHERE l.list_id = ?", (list_id,)
            ).fetchone()
        if row is None:
            raise ListNotFoundError(f"no scan list {list_id}", "GET /v1/lists names them")
        return _scan_list(row)

    def all(self) -> list[ScanList]:
        """Every list, newest first."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT {_LIST_COLS} FROM lists l ORDER BY l.list_id DESC"
            ).fetchall()
        return [_scan_list(r) for r in rows]

    def recording(self) -> ScanList | None:
        with self._lock:
            row = self._con.execute(
                f"SELECT {_LIST_COLS} FROM lists l WHERE l.stopped IS NULL"
            ).fetchone()
        return _scan_list(row) if row else None

    # -- entries ------------------------------------------------------------------------------
    def next_entry_id(self) -> int:
        """The first id never used by an entry (deleted ones included)."""
        with self._lock:
            row = self._con.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'entries'), 0),"
                " coalesce((SELECT max(entry_id) FROM entries), 0))"
            ).fetchone()
        return int(row[0]) + 1

    def add_entries(self, items: Sequence[tuple[NewEntry, bytes | None, bytes | None]]) -> None:
        """Insert entries (with thumbnail and crop JPEGs) in one transaction."""
        rows = [
            (
                e.entry_id,
                e.list_id,
                e.t,
                e.card.card_id,
                e.card.name,
                e.card.set_id,
                e.card.set_name,
                e.card.number,
                e.card.rarity,
                e.confidence,
                e.score,
                e.frame_id,
                e.track_id,
                json.dumps(e.polygon),
                e.bundle_id,
                thumb,
                crop,
            )
            for e, thumb, crop in items
        ]
        with self._tx() as con:
            con.executemany(
                "INSERT OR IGNORE INTO entries (entry_id, list_id, t, card_id, name, set_id, "
                "set_name, number, rarity, confidence, score, frame_id, track_id, polygon, "
                "bundle_id, thumb, crop) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )

    def retag(
        self, entry_id: int, card: CardFields, confidence: str, score: float, *, by_person: bool
    ) -> bool:
        """Change an entry's card. The tracker's corrections never override a person's."""
        guard = "" if by_person else " AND corrected = 0"
        with self._tx() as con:
            cur = con.execute(
                "UPDATE entries SET card_id = ?, name = ?, set_id = ?, set_name = ?, number = ?, "
                f"rarity = ?, confidence = ?, score = ?, corrected = max(corrected, ?) "
                f"WHERE entry_id = ?{guard}",
                (
                    card.card_id,
                    card.name,
                    card.set_id,
                    card.set_name,
                    card.number,
                    card.rarity,
                    confidence,
                    score,
                    int(by_person),
                    entry_id,
                ),
            )
        return cur.rowcount > 0

    def entries(self, list_id: int) -> list[Entry]:
        """A list's entries in the order they were recorded."""
        self.get(list_id)
        with self._lock:
            rows = self._con.execute(
                f"SELECT {_ENTRY_COLS} FROM entries WHERE list_id = ? ORDER BY entry_id",
                (list_id,),
            ).fetchall()
        return [_entry(r) for r in rows]

    def entry(self, list_id: int, entry_id: int) -> Entry:
        self.get(list_id)
        with self._lock:
            row = self._con.execute(
                f"SELECT {_ENTRY_COLS} FROM entries WHERE list_id = ? AND entry_id = ?",
                (list_id, entry_id),
            ).fetchone()
        if row is None:
            raise EntryNotFoundError(f"list {list_id} has no entry {entry_id}")
        return _entry(row)

    def image(self, list_id: int, entry_id: int, kind: str) -> bytes | None:
        """An entry's thumbnail or crop JPEG (None when it was never written)."""
        column = {"thumb": "thumb", "crop": "crop"}[kind]
        self.entry(list_id, entry_id)
        with self._lock:
            row = self._con.execute(
                f"SELECT {column} FROM entries WHERE entry_id = ?", (entry_id,)
            ).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def delete_entry(self, list_id: int, entry_id: int) -> None:
        self.entry(list_id, entry_id)
        with self._tx() as con:
            con.execute(
                "DELETE FROM entries WHERE list_id = ? AND entry_id = ?", (list_id, entry_id)
            )

    def counts(self, list_id: int) -> list[tuple[CardFields, int]]:
        """(card, quantity) per card id, in the order each card was first recorded."""
        self.get(list_id)
        with self._lock:
            rows = self._con.execute(
                "SELECT card_id, name, set_id, set_name, number, rarity, count(*) FROM entries "
                "WHERE list_id = ? GROUP BY card_id ORDER BY min(entry_id)",
                (list_id,),
            ).fetchall()
        return [(CardFields(*(str(v) for v in r[:6])), int(r[6])) for r in rows]
