"""Card catalogues: procedural ones from a seed, or real scans from a folder with cards.csv.

A catalogue folder holds `cards.csv` (header row, one card per row) and `images/<card_id>.jpg`.
Procedural catalogues include the hard cases of real card identification: same-art reprints
(same `art_id`, other set, number, border or finish) and near-duplicates (same creature and
name, different art composition and text).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np

from edge.types import ImageRGB

logger = logging.getLogger(__name__)

CSV_FIELDS = (
    "card_id",
    "name",
    "set_id",
    "set_name",
    "number",
    "rarity",
    "art_id",
    "finish",
    "card_type",
    "hp",
    "border",
    "reprint_group",
    "variant",
)
CARD_TYPES = (
    "fire",
    "water",
    "grass",
    "lightning",
    "psychic",
    "fighting",
    "darkness",
    "metal",
    "colorless",
    "dragon",
)
RARITIES = ("common", "uncommon", "rare", "holo_rare")
FINISHES = ("normal", "holo", "reverse")
BORDERS = ("yellow", "silver", "blue", "black")
_SYLLABLES_A = ("fla", "aqu", "ter", "vol", "zep", "gra", "cry", "mor", "pyx", "lum", "bra", "sko")
_SYLLABLES_B = ("ri", "mo", "ka", "zu", "li", "na", "to", "ve", "ga", "shi", "do", "re")
_SYLLABLES_C = ("mon", "rix", "tot", "dra", "lisk", "pup", "zard", "fin", "bat", "nix", "o", "eon")
_SET_WORDS = (
    "Ember",
    "Tide",
    "Storm",
    "Verdant",
    "Shadow",
    "Crystal",
    "Iron",
    "Ancient",
    "Lunar",
    "Solar",
)
_SET_NOUNS = ("Rising", "Legends", "Origins", "Clash", "Fates", "Echoes", "Skies", "Depths")


@dataclass(frozen=True, slots=True)
class CardRecord:
    """One catalogue card. `image_path` is set for real scans; procedural cards render on demand."""

    card_id: str
    name: str
    set_id: str
    set_name: str
    number: str  # collector number as printed, e.g. "042/198"
    rarity: str
    art_id: str  # cards sharing art_id share art pixels exactly (reprints)
    finish: str = "normal"  # normal | holo | reverse
    card_type: str = "colorless"
    hp: int = 60
    border: str = "yellow"
    reprint_group: str = ""  # art_id when several cards share the art, else ""
    variant: int = 0  # seeds the text boxes: near-duplicates differ here and in art
    image_path: Path | None = None


def _name(rng: np.random.Generator) -> str:
    parts = [rng.choice(_SYLLABLES_A), rng.choice(_SYLLABLES_B)]
    if rng.random() < 0.5:
        parts.append(rng.choice(_SYLLABLES_B))
    parts.append(rng.choice(_SYLLABLES_C))
    return "".join(str(p) for p in parts).capitalize()


def _make_sets(n_cards: int, rng: np.random.Generator, prefix: str) -> list[tuple[str, str, int]]:
    """(set_id, set_name, printed set size) for enough sets to hold n_cards."""
    n_sets = max(1, int(np.ceil(n_cards / 40)))
    sets = []
    for i in range(n_sets):
        name = f"{rng.choice(_SET_WORDS)} {rng.choice(_SET_NOUNS)}"
        sets.append((f"{prefix}s{i + 1:02d}", name, int(rng.integers(60, 240))))
    return sets


def _new_card(rng: np.random.Generator, serial: int, prefix: str) -> dict[str, object]:
    """Fields of an original card (fresh art; the prefix keeps art ids of catalogues apart)."""
    return {
        "name": _name(rng),
        "art_id": f"{prefix}a{serial:05d}",
        "card_type": str(rng.choice(CARD_TYPES)),
        "hp": int(rng.integers(3, 25)) * 10,
        "variant": int(rng.integers(0, 2**31)),
    }


def procedural_catalogue(
    n: int,
    seed: int,
    *,
    reprint_rate: float = 0.15,
    near_duplicate_rate: float = 0.1,
    id_prefix: str = "",
) -> list[CardRecord]:
    """N procedural cards from a seed, with same-art reprints and near-duplicates mixed in.

    Card ids look like "<prefix>s01-042"; different `id_prefix` values give disjoint catalogues
    (the unknown split uses "u").
    """
    rng = np.random.default_rng([seed, 7919])
    sets = _make_sets(n, rng, id_prefix)
    next_number = {s[0]: 1 for s in sets}
    base: list[dict[str, object]] = []
    records: list[CardRecord] = []
    for i in range(n):
        roll = rng.random()
        if base and roll < reprint_rate:
            fields_ = dict(base[int(rng.integers(len(base)))])
            fields_["variant"] = (
                int(rng.integers(0, 2**31)) if rng.random() < 0.5 else fields_["variant"]
            )
        elif base and roll < reprint_rate + near_duplicate_rate:
            src = base[int(rng.integers(len(base)))]
            fields_ = _new_card(rng, i, id_prefix)
            fields_.update(name=src["name"], card_type=src["card_type"])
            fields_["art_id"] = f"{src['art_id']}v{i}"  # same creature, other composition
        else:
            fields_ = _new_card(rng, i, id_prefix)
            base.append(fields_)
        set_id, set_name, set_size = sets[i * len(sets) // max(n, 1)]
        if fields_ is not base[-1] and any(
            r.art_id == fields_["art_id"] and r.set_id == set_id for r in records
        ):
            set_id, set_name, set_size = sets[(i * len(sets) // max(n, 1) + 1) % len(sets)]
        num = next_number[set_id]
        next_number[set_id] += 1
        rarity = str(rng.choice(RARITIES, p=[0.5, 0.3, 0.12, 0.08]))
        finish = "holo" if rarity == "holo_rare" else str(rng.choice(FINISHES, p=[0.75, 0.1, 0.15]))
        records.append(
            CardRecord(
                card_id=f"{set_id}-{num:03d}",
                name=str(fields_["name"]),
                set_id=set_id,
                set_name=set_name,
                number=f"{num:03d}/{max(set_size, num):03d}",
                rarity=rarity,
                art_id=str(fields_["art_id"]),
                finish=finish,
                card_type=str(fields_["card_type"]),
                hp=int(str(fields_["hp"])),
                border=str(rng.choice(BORDERS, p=[0.55, 0.3, 0.1, 0.05])),
                variant=int(str(fields_["variant"])),
            )
        )
    return _mark_reprint_groups(records)


def _mark_reprint_groups(records: Sequence[CardRecord]) -> list[CardRecord]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.art_id] = counts.get(r.art_id, 0) + 1
    return [replace(r, reprint_group=r.art_id if counts[r.art_id] > 1 else "") for r in records]


def _record_from_row(row: Mapping[str, str], folder: Path) -> CardRecord:
    known = {f.name for f in fields(CardRecord)}
    kwargs: dict[str, object] = {k: v for k, v in row.items() if k in known and v not in ("", None)}
    if "hp" in kwargs:
        kwargs["hp"] = int(str(kwargs["hp"]))
    if "variant" in kwargs:
        kwargs["variant"] = int(str(kwargs["variant"]))
    kwargs.setdefault("art_id", row["card_id"])
    image = folder / "images" / f"{row['card_id']}.jpg"
    kwargs["image_path"] = image if image.exists() else None
    return CardRecord(**kwargs)  # type: ignore[arg-type]


def load_catalogue(folder: Path) -> list[CardRecord]:
    """Read `cards.csv` (+ `images/<card_id>.jpg`) into records.

    Required columns: card_id, name, set_id, set_name, number, rarity; others are optional.
    Rows whose scan is missing keep `image_path=None` and are rendered procedurally.
    """
    folder = Path(folder)
    with (folder / "cards.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"card_id", "name", "set_id", "set_name", "number", "rarity"} - set(
        rows[0] if rows else {}
    )
    if rows and missing:
        raise ValueError(f"{folder / 'cards.csv'} lacks columns: {sorted(missing)}")
    records = [_record_from_row(r, folder) for r in rows]
    n_scans = sum(r.image_path is not None for r in records)
    logger.info("loaded %d cards (%d scans) from %s", len(records), n_scans, folder)
    return records


def write_catalogue_dir(
    folder: Path, records: Sequence[CardRecord], images: Mapping[str, ImageRGB]
) -> None:
    """Write `cards.csv` and `images/<card_id>.jpg` (JPEG quality 95) for the records."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with (folder / "cards.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow({k: v for k, v in asdict(r).items() if k in CSV_FIELDS})
    for r in records:
        bgr = cv2.cvtColor(images[r.card_id], cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise OSError(f"JPEG encode failed for {r.card_id}")
        (folder / "images" / f"{r.card_id}.jpg").write_bytes(buf.tobytes())
