"""Request and response models of /v1/lists (scan lists, edge.lists)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.lists.export import card_counts
from edge.lists.store import MAX_NAME_CHARS, MAX_NOTE_CHARS, Entry, ScanList


class ListIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="What the list is.")
    note: str | None = Field(None, max_length=MAX_NOTE_CHARS, description="Free text.")


class EntryPatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    card_id: str = Field(min_length=1, max_length=200, description="The right card (catalogue).")
    teach: bool = Field(
        False, description="Also add the entry's crop to the local overlay (teach on the spot)."
    )


class ListOut(BaseModel):
    list_id: int
    name: str
    note: str | None
    created: str = Field(description="When it started (ISO-8601 UTC).")
    stopped: str | None = Field(description="When it stopped; null while recording.")
    recording: bool
    bundle_id: str | None = Field(description="The bundle current when it started.")
    entry_count: int = Field(description="Entries (card appearances) recorded.")
    card_count: int = Field(description="Distinct cards among them.")


class ListsOut(BaseModel):
    count: int
    recording: int | None = Field(description="The id of the list recording now, if any.")
    lists: list[ListOut]


class CardCountOut(BaseModel):
    card_id: str
    name: str
    set_id: str
    set_name: str
    number: str
    rarity: str
    quantity: int = Field(description="How many times the card appeared.")
    tiers: dict[str, int] = Field(description="Entries per confidence tier.")


class EntryOut(BaseModel):
    entry_id: int
    t: str = Field(description="When the card was identified (ISO-8601 UTC).")
    card_id: str
    name: str
    set_name: str
    number: str
    confidence: str = Field(description="verified, probable, or corrected (by a person).")
    score: float
    frame_id: int | None = Field(description="The live frame it was identified in.")
    polygon: list[list[float]] | None = Field(description="4 x [x, y] px in that frame.")
    bundle_id: str | None
    corrected: bool
    thumb: str | None = Field(description="URL of its thumbnail JPEG; null without one.")


class ListDetailOut(ListOut):
    cards: list[CardCountOut] = Field(description="Per card, in order of first sighting.")
    entries: list[EntryOut] = Field(description="Every entry, in the order recorded.")


class CorrectionOut(BaseModel):
    entry: EntryOut
    previous_card_id: str
    feedback_id: str | None = Field(description="The correction kept for retraining.")
    taught: dict[str, object] | None = Field(
        None, description="What the overlay reports when teach was asked for."
    )


def list_out(s: ScanList) -> ListOut:
    return ListOut(
        list_id=s.list_id,
        name=s.name,
        note=s.note,
        created=s.created,
        stopped=s.stopped,
        recording=s.recording,
        bundle_id=s.bundle_id,
        entry_count=s.entries,
        card_count=s.cards,
    )


def entry_out(e: Entry) -> EntryOut:
    thumb = f"/v1/lists/{e.list_id}/entries/{e.entry_id}/thumb.jpg" if e.has_thumb else None
    return EntryOut(
        entry_id=e.entry_id,
        t=e.t,
        card_id=e.card.card_id,
        name=e.card.name,
        set_name=e.card.set_name,
        number=e.card.number,
        confidence=e.confidence,
        score=e.score,
        frame_id=e.frame_id,
        polygon=e.polygon,
        bundle_id=e.bundle_id,
        corrected=e.corrected,
        thumb=thumb,
    )


def detail_out(s: ScanList, entries: list[Entry]) -> ListDetailOut:
    counts = [
        CardCountOut(
            card_id=c.card.card_id,
            name=c.card.name,
            set_id=c.card.set_id,
            set_name=c.card.set_name,
            number=c.card.number,
            rarity=c.card.rarity,
            quantity=c.quantity,
            tiers=c.tiers,
        )
        for c in card_counts(entries)
    ]
    head = list_out(s).model_dump() | {"entry_count": len(entries), "card_count": len(counts)}
    return ListDetailOut(
        **head,
        cards=counts,
        entries=[entry_out(e) for e in entries],
    )
