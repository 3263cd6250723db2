"""The issue-15 bar: a scan list against the truth of the deck source, pace by pace.

For each pace (cards per minute of film time) a pile of --cards cards (drawn with replacement
from the catalogue folder, so some cards come more than once) is laid down one at a time
(`synthetic:DIR?deck`, or --handful N spread at once) and every frame goes through the live loop
(edge.live.loop.LiveLoop.process: detect, track, embed, verify, publish) with a scan list recording,
exactly as `cardedge serve` records one. The film is counted in frames at --fps, and every frame
is processed (a fast source), so the result is what a device that keeps up with --fps would
record; frames per card = fps x 60 / pace.

A card is right when the list's quantity equals the number of times it was laid down; cards the
list names that were never laid down count as wrong too. Bar: right for >= 98% of the cards.
To tell the list from the recogniser, each run also reports the placements the live scene never
named right (the recogniser's misses: no list can count those) and the share right among the
cards whose every placement was named right at least once (the list machinery on its own). And
how soon a card is named: frames from its first frame in view (sliding in) to the first frame
whose scene names it right, median and 90th percentile, and the median counted from the frame it
lies still (every frame is processed, so this is the tracker's and the decision's latency in
frames, not the host's speed).

    python benchmarks/deck_scan.py --bundle models/demo --source-dir reference_db/demo \\
        --paces 20,30,45,60 --cards 100 --fps 10
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge.config import RuntimeSettings, Settings, SourceSettings  # noqa: E402
from edge.lists.service import ScanLists, catalogue_lookup  # noqa: E402
from edge.live.loop import LiveLoop  # noqa: E402
from edge.live.runtime import Runtime  # noqa: E402
from edge.recognize.recognizer import Recognizer  # noqa: E402
from edge.sources.deck import DeckSource  # noqa: E402

BAR = 0.98


def score(truth: Counter[str], listed: Counter[str]) -> dict[str, Any]:
    """Share of cards (laid down or listed) whose listed quantity is exactly right."""
    cards = set(truth) | set(listed)
    right = [c for c in cards if truth[c] == listed[c]]
    return {
        "cards": len(cards),
        "right": len(right),
        "share_right": round(len(right) / len(cards), 4) if cards else 1.0,
        "laid_down": sum(truth.values()),
        "entries": sum(listed.values()),
        "missed": sum(max(0, truth[c] - listed[c]) for c in cards),
        "extra": sum(max(0, listed[c] - truth[c]) for c in cards),
        "phantom_cards": sorted(c for c in listed if c not in truth),
        "wrong": {c: [truth[c], listed[c]] for c in sorted(cards) if truth[c] != listed[c]},
    }


def _quantile(values: list[int], q: float) -> float | None:
    return round(float(np.quantile(values, q)), 1) if values else None


def _median(values: list[int]) -> float | None:
    return _quantile(values, 0.5)


def run_pace(
    rec: Recognizer, settings: Settings, args: argparse.Namespace, pace: float
) -> dict[str, Any]:
    uri = (
        f"synthetic:{args.source_dir}?deck&fast&pace={pace:g}&cards={args.cards}"
        f"&fps={args.fps:g}&seed={args.seed}&handful={args.handful}"
    )
    source = DeckSource(uri, uri.split(":", 1)[1], settings.source)
    runtime = Runtime(settings, rec)
    with tempfile.TemporaryDirectory() as state:
        lists = ScanLists(Path(state), catalogue_lookup(runtime))
        runtime.lists = lists
        loop = LiveLoop(runtime, lambda: source, uri=uri)
        scan = lists.start(f"deck at {pace:g}/min", None, rec.bundle_id)
        source.open()
        t0, frames = time.perf_counter(), 0
        first_named: dict[int, int] = {}  # placement -> first frame (0-based) named right
        while not source.done:
            frame = source.read()
            loop.process(frame)
            frames += 1
            named = {c.card_id for c in runtime.scene().cards if c.known}
            for i, pl in enumerate(source.placements):
                if pl.first_frame < frame.frame_id <= pl.last_frame + 1 and pl.card_id in named:
                    first_named.setdefault(i, frame.frame_id - 1)
        for _ in range(20):  # a bare table: the last card's track leaves
            loop.process(source.read())
        wall = time.perf_counter() - t0
        lists.stop(scan.list_id)
        listed = Counter(e.card.card_id for e in lists.store.entries(scan.list_id))
        lists.close()
        source.close()
    truth = source.counts()
    seen = set(first_named)  # placements the scene named right at least once
    unseen = Counter(pl.card_id for i, pl in enumerate(source.placements) if i not in seen)
    # frames from a card's first frame in view (sliding in) to the first frame /v1/scene names it
    # right, and from the frame it lies still
    latency = [f - source.placements[i].first_frame for i, f in first_named.items()]
    still = [max(0, n - source.slide_frames) for n in latency]
    recognised = {c for c in truth if not unseen[c]}
    machinery = score(
        Counter({c: truth[c] for c in recognised}),
        Counter({c: n for c, n in listed.items() if c in recognised or c not in truth}),
    )
    out = {
        "pace_cards_per_min": pace,
        "frames_per_card": round(source.frames_per_card, 1),
        **score(truth, listed),
        "placements_never_named_right": sum(unseen.values()),
        "share_right_of_recognised_cards": machinery["share_right"],
        "frames_to_name_median": _median(latency),
        "frames_to_name_p90": _quantile(latency, 0.9),
        "frames_to_name_after_still_median": _median(still),
        "slide_frames": source.slide_frames,
        "frames": frames,
        "wall_s": round(wall, 1),
        "ms_per_frame": round(1000 * wall / max(frames, 1), 1),
    }
    out["bar_met"] = out["share_right"] >= BAR
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "models" / "demo")
    p.add_argument("--source-dir", type=Path, default=REPO / "reference_db" / "demo")
    p.add_argument("--paces", default="20,30,45,60", help="cards per minute, comma-separated")
    p.add_argument("--cards", type=int, default=100)
    p.add_argument("--fps", type=float, default=10.0, help="film frames per second")
    p.add_argument("--handful", type=int, default=1, help="cards laid down at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    p.add_argument("--out", type=Path, help="also write the report here (JSON)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(
        runtime=RuntimeSettings(backend="onnx", onnx_threads=args.threads),
        source=SourceSettings(),
    )
    rec = Recognizer.from_bundle(args.bundle, settings.runtime)
    rows = []
    try:
        for pace in (float(x) for x in args.paces.split(",")):
            row = run_pace(rec, settings, args, pace)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        rec.close()
    held = [r["pace_cards_per_min"] for r in rows if r["bar_met"]]
    report = {
        "bundle": str(args.bundle),
        "cards": args.cards,
        "fps": args.fps,
        "handful": args.handful,
        "bar": BAR,
        "fastest_pace_meeting_bar": max(held) if held else None,
        "runs": rows,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
