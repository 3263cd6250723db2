"""The issue-15 bar: a 1,000-entry scan list exports in under a second, in every format.

A list of --entries entries (over --cards distinct cards, with thumbnail and crop JPEGs as the
service writes them) is built in a temporary state directory; each format is then exported the
way GET /v1/lists/{id}/export does it (read the entries from SQLite, count, write the file), best
of --repeat runs.

    python benchmarks/list_export.py --entries 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge.lists.export import FORMATS, export  # noqa: E402
from edge.lists.store import CardFields, ListStore, NewEntry, utc_now  # noqa: E402
from edge.lists.writer import card_images  # noqa: E402

BAR_S = 1.0


def build(store: ListStore, entries: int, cards: int) -> int:
    scan = store.start("Benchmark binder é", "1,000 entries", "demo")
    image = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    polygon = [[400.0, 150.0], [650.0, 150.0], [650.0, 500.0], [400.0, 500.0]]
    thumb, crop = card_images(image, polygon)
    first = store.next_entry_id()
    batch = []
    for i in range(entries):
        c = i % cards
        card = CardFields(f"s01-{c:03d}", f"Flabébé {c}, \"v\"", "s01", "Crystal Depths", f"{c:03d}/204", "common")  # fmt: skip
        e = NewEntry(
            first + i, scan.list_id, utc_now(), card, "verified", 0.9, i, i, polygon, "demo"
        )
        batch.append((e, thumb, crop))
    store.add_entries(batch)
    store.stop(scan.list_id)
    return scan.list_id


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=1000)
    p.add_argument("--cards", type=int, default=320)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as state:
        store = ListStore(Path(state))
        list_id = build(store, args.entries, args.cards)
        report: dict[str, object] = {"entries": args.entries, "cards": args.cards, "bar_s": BAR_S}
        times = {}
        for fmt in FORMATS:
            best, size = float("inf"), 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                out = export(store.get(list_id), store.entries(list_id), fmt)
                best = min(best, time.perf_counter() - t0)
                size = len(out.data)
            times[fmt] = {"seconds": round(best, 4), "bytes": size}
        store.close()
    report["formats"] = times
    report["bar_met"] = all(t["seconds"] < BAR_S for t in times.values())
    print(json.dumps(report, indent=1))
    return 0 if report["bar_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
