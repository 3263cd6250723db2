"""ScanLists: the service's scan lists, tying the store, the recorder and the writer together.

The runtime calls `observe` with every published scene (on the live loop's identify thread) and
`on_swap` after a bundle swap; the API starts, stops and corrects lists through the methods here.
A list left recording when the service stopped (or was killed) records again when it starts:
only `stop` ends a list. One list records at a time; starting a second is refused
(409 `list_already_recording`) until the first is stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edge.feedback import FeedbackRecord, FeedbackStore
from edge.lists.recorder import Recorder, RecorderConfig
from edge.lists.store import CardFields, Entry, ListStore, ScanList, utc_now
from edge.lists.writer import CardLookup, ListWriter, decode_jpeg
from edge.live.runtime import NotReadyError, Runtime
from edge.live.scene import SceneState
from edge.types import Frame, ImageRGB

logger = logging.getLogger(__name__)

STOP_FLUSH_S = 5.0


@dataclass(frozen=True, slots=True)
class Correction:
    """A person's change of an entry's card: the entry after, the card before, the feedback."""

    entry: Entry
    previous: CardFields
    feedback: FeedbackRecord | None  # None when the entry has no crop to keep


def catalogue_lookup(runtime: Runtime) -> CardLookup:
    """Card fields from the current bundle's catalogue (None when unknown or no bundle)."""

    def lookup(card_id: str) -> CardFields | None:
        try:
            with runtime.lease() as rec:
                info = rec.catalogue.get(card_id)
        except NotReadyError:
            return None
        if info is None:
            return None
        return CardFields(
            info.card_id, info.name, info.set_id, info.set_name, info.number, info.rarity
        )

    return lookup


class ScanLists:
    """Scan lists of one service; the writer thread runs from construction until `close`."""

    def __init__(
        self, state_dir: Path, lookup: CardLookup, config: RecorderConfig | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.store = ListStore(self.state_dir)
        self.lookup = lookup
        self.recorder = Recorder(config)
        self.writer = ListWriter(self.store, lookup)
        self.errors = 0
        current = self.store.recording()
        if current is not None:
            tail = self.store.entries(current.list_id)[-self.recorder.config.resume_entries :]
            self.recorder.begin(current.list_id, self.store.next_entry_id(), resume=tail)
            logger.info("scan list %d (%s) records again", current.list_id, current.name)

    # -- live loop side -----------------------------------------------------------------------
    def observe(self, frame: Frame, scene: SceneState) -> None:
        """Record the scene's new appearances; never raises into the live loop."""
        try:
            ops = self.recorder.observe(frame, scene)
            if ops:
                self.writer.submit(ops)
        except Exception:
            self.errors += 1
            logger.exception("scan lists: recording a scene failed")

    def on_swap(self) -> None:
        self.recorder.on_swap()

    # -- API side -----------------------------------------------------------------------------
    def start(self, name: str, note: str | None, bundle_id: str | None) -> ScanList:
        """Start recording a new list (409 while another one records)."""
        started = self.store.start(name, note, bundle_id)
        self.recorder.begin(started.list_id, self.store.next_entry_id())
        logger.info("scan list %d (%s) started", started.list_id, started.name)
        return started

    def stop(self, list_id: int) -> ScanList:
        """Stop recording; returns once what it recorded is written (or after STOP_FLUSH_S)."""
        self.store.get(list_id)
        if self.recorder.list_id == list_id:
            self.recorder.end()
        if not self.writer.flush(STOP_FLUSH_S):
            logger.warning("scan list %d: writer still busy when it stopped", list_id)
        stopped = self.store.stop(list_id)
        logger.info("scan list %d stopped with %d entries", list_id, stopped.entries)
        return stopped

    def flush(self, timeout: float = STOP_FLUSH_S) -> bool:
        return self.writer.flush(timeout)

    def crop(self, list_id: int, entry_id: int) -> ImageRGB | None:
        """An entry's crop, decoded (None when it was written without images)."""
        data = self.store.image(list_id, entry_id, "crop")
        return decode_jpeg(data) if data is not None else None

    def correct(
        self,
        list_id: int,
        entry_id: int,
        card: CardFields,
        feedback: FeedbackStore,
        bundle_id: str | None,
    ) -> Correction:
        """Change an entry to `card` (a checked catalogue card) and keep the correction, with
        the entry's crop, for retraining."""
        before = self.store.entry(list_id, entry_id)
        self.store.retag(entry_id, card, "corrected", 1.0, by_person=True)
        after = self.store.entry(list_id, entry_id)
        data = self.store.image(list_id, entry_id, "crop")
        record = None
        if data is not None:
            h, w = decode_jpeg(data).shape[:2]
            note = (
                f"scan list {list_id} entry {entry_id}: recorded as {before.card.card_id} "
                f"({before.confidence}) at {before.t}, corrected {utc_now()}"
            )
            record = feedback.add(
                data, "jpeg", width=w, height=h, bundle_id=bundle_id or before.bundle_id,
                card_id=card.card_id, not_a_card=False, polygon=None, note=note,
            )  # fmt: skip
        else:
            logger.warning("scan list %d entry %d has no crop: no feedback kept", list_id, entry_id)
        return Correction(after, before.card, record)

    def close(self) -> None:
        """Write what is queued and close the file; a recording list stays recording."""
        self.writer.close()
        self.store.close()


def attach_lists(runtime: Runtime, state_dir: Path) -> ScanLists:
    """Scan lists under `state_dir`, fed by `runtime`'s published scenes."""
    lists = ScanLists(state_dir, catalogue_lookup(runtime))
    runtime.lists = lists
    return lists
