"""The overlay's index file, `<state_dir>/overlay/overlay.json`: one entry per taught view.

Written whole to a temporary file, synced and renamed over, so a power cut leaves the old index
or the new one, never half of one. Read by the device (edge.overlay.store) and by
`cardedge-train feedback` on a copy of the folder.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

INDEX_NAME = "overlay.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class OverlayEntry:
    """One taught view, as overlay.json lists it."""

    view_id: str
    card_id: str
    created: str  # ISO-8601 UTC
    bundle_id: str  # the bundle it was taught under
    catalogue: str  # that bundle's catalogue fingerprint
    source: str = ""  # who taught it: "feedback:<id>", "list:<list>/<entry>", "api"
    feedback_id: str | None = None  # the correction it came with (exported once, not twice)


def read_index(path: Path) -> tuple[list[OverlayEntry], str | None]:
    """overlay.json's views and catalogue fingerprint; OSError / ValueError / KeyError /
    TypeError when it is unreadable or malformed (also used by `cardedge-train feedback`)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    views = [OverlayEntry(**v) for v in doc["views"]]
    catalogue = doc.get("catalogue")
    if not isinstance(catalogue, str | None) or not all(
        isinstance(v.view_id, str) and v.view_id and "/" not in v.view_id for v in views
    ):
        raise ValueError("malformed catalogue or view ids")
    return views, catalogue


def write_index(root: Path, entries: list[OverlayEntry], catalogue: str | None) -> None:
    """overlay.json written whole to a temporary file, synced, then renamed over."""
    root.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "catalogue": catalogue,
        "views": [asdict(e) for e in entries],
    }
    tmp = root / f".{INDEX_NAME}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(root / INDEX_NAME)
