"""A scan list as a file, one row (or object) per card with its quantity.

Formats (the README maps every column):

- `tcgplayer`: the TCGplayer app's collection CSV (Quantity, Name, Simple Name, Set, Card Number,
  Set Code, External ID, Printing, Condition, Language, Rarity, Product ID, SKU, Price, Price
  Each), the layout the app exports and imports.
- `collectr`: Collectr's portfolio CSV (Portfolio Name, Category, Set, Product Name, Card Number,
  Rarity, Variance, Grade, Card Condition, Average Cost Paid, Quantity, Market Price, Price
  Override, Watchlist, Date Added, Notes).
- `csv`: plain columns named as the API names them (card_id, name, set_id, ..., quantity, tiers).
- `json`: the list, its per-card quantities and every entry.

CSV is UTF-8 with CRLF line ends and RFC 4180 quoting; the plain `csv` starts with a byte-order
mark so spreadsheet programs read é as é, the tools' layouts do not (their importers match the
first header name exactly). What the device cannot know (condition, printing, language, prices) is filled
with the tools' defaults for a raw card as scanned: Near Mint, Normal, English, blank prices.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.errors import EdgeError
from edge.lists.store import CardFields, Entry, ScanList

CONDITION = "Near Mint"
PRINTING = "Normal"
LANGUAGE = "English"
CATEGORY = "Pokemon"


class UnknownFormatError(EdgeError):
    code = "unknown_export_format"
    http_status = 400


@dataclass(frozen=True, slots=True)
class CardCount:
    card: CardFields
    quantity: int
    tiers: dict[str, int]  # confidence tier -> how many of the entries


@dataclass(frozen=True, slots=True)
class Exported:
    data: bytes
    media_type: str
    filename: str


def card_counts(entries: list[Entry]) -> list[CardCount]:
    """Per card id, in the order each card was first recorded."""
    cards: dict[str, CardFields] = {}
    quantity: dict[str, int] = {}
    tiers: dict[str, dict[str, int]] = {}
    for e in entries:
        cid = e.card.card_id
        cards.setdefault(cid, e.card)
        quantity[cid] = quantity.get(cid, 0) + 1
        t = tiers.setdefault(cid, {})
        t[e.confidence] = t.get(e.confidence, 0) + 1
    return [CardCount(cards[c], quantity[c], tiers[c]) for c in cards]


def _rarity(r: str) -> str:
    """'holo_rare' -> 'Holo Rare' (the tools spell rarities as words)."""
    return " ".join(w.capitalize() for w in r.replace("_", " ").split())


def _date(iso: str) -> str:
    return iso[:10]


def _tcgplayer(scan: ScanList, counts: list[CardCount]) -> list[list[str]]:
    head = [
        "Quantity", "Name", "Simple Name", "Set", "Card Number", "Set Code", "External ID",
        "Printing", "Condition", "Language", "Rarity", "Product ID", "SKU", "Price", "Price Each",
    ]  # fmt: skip
    rows = [head]
    for c in counts:
        f = c.card
        rows.append([
            str(c.quantity), f.name, f.name, f.set_name, f.number, f.set_id.upper(), "",
            PRINTING, CONDITION, LANGUAGE, _rarity(f.rarity), "", "", "", "",
        ])  # fmt: skip
    return rows


def _collectr(scan: ScanList, counts: list[CardCount]) -> list[list[str]]:
    head = [
        "Portfolio Name", "Category", "Set", "Product Name", "Card Number", "Rarity", "Variance",
        "Grade", "Card Condition", "Average Cost Paid", "Quantity", "Market Price",
        "Price Override", "Watchlist", "Date Added", "Notes",
    ]  # fmt: skip
    rows = [head]
    for c in counts:
        f = c.card
        rows.append([
            scan.name, CATEGORY, f.set_name, f.name, f.number, _rarity(f.rarity), PRINTING,
            "Ungraded", CONDITION, "", str(c.quantity), "", "", "false", _date(scan.created),
            scan.note or "",
        ])  # fmt: skip
    return rows


def _plain(scan: ScanList, counts: list[CardCount]) -> list[list[str]]:
    rows = [[
        "card_id", "name", "set_id", "set_name", "number", "rarity", "quantity", "verified",
        "probable", "corrected",
    ]]  # fmt: skip
    for c in counts:
        f = c.card
        rows.append([
            f.card_id, f.name, f.set_id, f.set_name, f.number, f.rarity, str(c.quantity),
            *(str(c.tiers.get(t, 0)) for t in ("verified", "probable", "corrected")),
        ])  # fmt: skip
    return rows


def _csv_bytes(rows: list[list[str]], *, bom: bool) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows(rows)
    return (("\ufeff" if bom else "") + buf.getvalue()).encode("utf-8")


def list_json(scan: ScanList, entries: list[Entry]) -> dict[str, Any]:
    """The list as the JSON export (and GET /v1/lists/{id}) shows it."""
    return {
        "list_id": scan.list_id,
        "name": scan.name,
        "note": scan.note,
        "created": scan.created,
        "stopped": scan.stopped,
        "recording": scan.recording,
        "bundle_id": scan.bundle_id,
        "cards": [
            {
                "card_id": c.card.card_id,
                "name": c.card.name,
                "set_id": c.card.set_id,
                "set_name": c.card.set_name,
                "number": c.card.number,
                "rarity": c.card.rarity,
                "quantity": c.quantity,
                "tiers": c.tiers,
            }
            for c in card_counts(entries)
        ],
        "entries": [
            {
                "entry_id": e.entry_id,
                "t": e.t,
                "card_id": e.card.card_id,
                "name": e.card.name,
                "confidence": e.confidence,
                "score": e.score,
                "frame_id": e.frame_id,
                "track_id": e.track_id,
                "polygon": e.polygon,
                "bundle_id": e.bundle_id,
                "corrected": e.corrected,
            }
            for e in entries
        ],
    }


_CSV: dict[str, Callable[[ScanList, list[CardCount]], list[list[str]]]] = {
    "tcgplayer": _tcgplayer,
    "collectr": _collectr,
    "csv": _plain,
}
FORMATS = (*_CSV, "json")


def filename(scan: ScanList, fmt: str, unicode: bool = False) -> str:
    """A file name from the list's id and name: `list-7-binder-2.tcgplayer.csv` (ASCII), or
    with the name's own letters kept (`unicode`, for Content-Disposition's filename*)."""
    pattern = r"[^\w]+" if unicode else r"[^A-Za-z0-9]+"
    slug = re.sub(pattern, "-", scan.name).strip("-_").lower()[:40] or "list"
    ext = "json" if fmt == "json" else "csv"
    suffix = "" if fmt in ("json", "csv") else f".{fmt}"
    return f"list-{scan.list_id}-{slug}{suffix}.{ext}"


def export(scan: ScanList, entries: list[Entry], fmt: str) -> Exported:
    """The list in `fmt` (one of FORMATS)."""
    if fmt == "json":
        data = json.dumps(list_json(scan, entries), ensure_ascii=False, indent=1).encode("utf-8")
        return Exported(data, "application/json", filename(scan, fmt))
    make = _CSV.get(fmt)
    if make is None:
        raise UnknownFormatError(
            f"unknown export format {fmt!r}", f"use one of: {', '.join(FORMATS)}"
        )
    data = _csv_bytes(make(scan, card_counts(entries)), bom=fmt == "csv")
    return Exported(data, "text/csv; charset=utf-8", filename(scan, fmt))
