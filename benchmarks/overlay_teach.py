"""Teach on the spot, measured on the demo bundle: does one taught sighting make the next
sightings of that card right, and does it pull unknown cards in?

Held-out: the demo world's held-out scenes (as `cardedge-train synth datasets --test-scenes`,
seed 0); the known cards, unoccluded and >= 80 px, that the bundle does not name right are each
taught from that one sighting (the detector's box as the polygon, as the web page sends it), and
shown again in `--next` new held-out-style scenes among other cards, a third unknown. Reported
before and after teaching: the next sightings named right, unknown cards named as anything (and
as a taught card), known cards named wrong; with the taught view's colours checked against the
scan too (the shipped rule) and against the taught crop alone.

Sleeve: cards in a matte sleeve (tests/overlay_photos.py), one photo taught, four more named?
and other sleeved cards, not taught, named as a taught card?

    python benchmarks/overlay_teach.py [--scenes 40] [--cards 14] [--next 6] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import edge.recognize.decide as decide  # noqa: E402
from edge.config import RuntimeSettings, Settings  # noqa: E402
from edge.errors import EdgeError  # noqa: E402
from edge.live.runtime import Runtime  # noqa: E402
from edge.overlay.store import OverlayStore  # noqa: E402
from edge.recognize.recognizer import Recognizer  # noqa: E402
from edge.recognize.rectify import side_lengths  # noqa: E402
from tests.overlay_photos import photo, scan, sleeve  # noqa: E402
from training.evaluate import GtCard, load_scenes, match_boxes  # noqa: E402

DEMO = REPO / "models" / "demo"
POSES = [
    [[200, 80], [420, 100], [400, 400], [180, 380]], [[250, 60], [450, 90], [440, 380], [230, 360]],
    [[150, 120], [360, 90], [390, 390], [170, 420]], [[300, 100], [500, 130], [470, 420], [270, 400]],
    [[220, 50], [400, 50], [400, 300], [220, 300]],
]  # fmt: skip
SLEEVED = ["s01-001", "s03-009", "s05-004", "s07-023", "s06-028"]
NOT_TAUGHT = ["s04-007", "s06-008", "s08-001", "s05-024"]


def outcomes(rec: Recognizer, image: np.ndarray, gt: list[GtCard]) -> list[dict[str, Any]]:
    """Per true card: its detector box, what the device reported there, and whether known."""
    boxes = rec.detect(image)
    reported = [v for v in rec.verdicts(image, boxes)[0] if v is not None]
    said, det = match_boxes(gt, [v.box for v in reported]), match_boxes(gt, boxes)
    out = []
    for i, g in enumerate(gt):
        m = reported[said[i]].match if i in said else None
        out.append({
            "card": g.card_id, "known": g.known, "visible": g.visible,
            "px": min(side_lengths(g.corners)), "box": boxes[det[i]].corners.tolist() if i in det else None,
            "pred": m.card_id if m else "", "accepted": bool(m and m.known),
        })  # fmt: skip
    return out


def world(out: Path, n_scenes: int) -> dict[str, Any]:
    from training.synth.card_render import render_card
    from training.synth.catalogue import procedural_catalogue
    from training.synth.world import SCENE_CARD_HEIGHT
    from training.synth.writers import write_test_scenes

    known = procedural_catalogue(320, 0)
    unknown = procedural_catalogue(60, 1_000_003, id_prefix="u")
    images = {r.card_id: render_card(r, SCENE_CARD_HEIGHT) for r in [*known, *unknown]}
    (out / "held-out").mkdir(parents=True)
    write_test_scenes(out / "held-out", known, unknown, images, n_scenes, 0)
    return {"known": known, "unknown": unknown, "images": images}


def next_scenes(out: Path, w: dict[str, Any], cards: list[str], n: int) -> None:
    """`n` held-out-style scenes per card: the card among others, a third of them unknown."""
    from training.synth.io import write_scene
    from training.synth.scene import TEST_SCENES, render_scene
    from training.synth.writers import item_rng

    known, unknown = [r.card_id for r in w["known"]], [r.card_id for r in w["unknown"]]
    is_known = dict.fromkeys(known, True) | dict.fromkeys(unknown, False)
    groups = {r.card_id: r.reprint_group for r in [*w["known"], *w["unknown"]]}
    (out / "next").mkdir()
    for card in cards:
        for j in range(n):
            rng = item_rng(7, f"next-{card}", j)
            count = max(
                int(rng.integers(TEST_SCENES.n_cards[0], TEST_SCENES.n_cards[1] + 1)) - 1, 1
            )
            ids = [card] + [
                unknown[int(rng.integers(len(unknown)))] if rng.random() < 0.35
                else known[int(rng.integers(len(known)))] for _ in range(count)
            ]  # fmt: skip
            rng.shuffle(ids)
            scene = render_scene(w["images"], rng, TEST_SCENES, card_ids=ids)
            write_scene(out / "next", f"{card}-{j}", scene, is_known, groups)


def score(results: dict[str, list[dict[str, Any]]], taught: set[str]) -> dict[str, int]:
    r = dict.fromkeys(("next", "next_right", "next_80px", "next_80px_right", "unknown_cards",
                       "unknown_named", "unknown_named_as_taught", "known_named", "known_wrong"), 0)  # fmt: skip
    for sid, outs in results.items():
        target = sid.rsplit("-", 1)[0] if sid.startswith("next/") else None
        for o in outs:
            if target is not None and o["card"] == target.removeprefix("next/"):
                ok = o["accepted"] and o["pred"] == o["card"]
                r["next"] += 1
                r["next_right"] += ok
                if o["visible"] >= 0.99 and o["px"] >= 80:
                    r["next_80px"] += 1
                    r["next_80px_right"] += ok
            if not o["known"]:
                r["unknown_cards"] += 1
                r["unknown_named"] += o["accepted"]
                r["unknown_named_as_taught"] += o["accepted"] and o["pred"] in taught
            elif o["accepted"]:
                r["known_named"] += 1
                r["known_wrong"] += o["pred"] != o["card"]
    return r


def held_out(
    rec: Recognizer, store: OverlayStore, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    w = world(out, args.scenes)
    scenes = {f"held-out/{s}": (img, gt) for s, img, gt in load_scenes(out / "held-out")}
    picks: dict[str, tuple[str, list[list[float]]]] = {}  # card -> (scene, box)
    for sid, (img, gt) in scenes.items():
        for o in outcomes(rec, img, gt):
            wrong = not (o["accepted"] and o["pred"] == o["card"])
            if o["known"] and o["visible"] >= 0.99 and o["px"] >= 80 and o["box"] and wrong:
                picks.setdefault(o["card"], (sid, o["box"]))
    cards = list(picks)[: args.cards]
    next_scenes(out, w, cards, args.next)
    scenes |= {f"next/{s}": (img, gt) for s, img, gt in load_scenes(out / "next")}
    report: dict[str, Any] = {"taught_cards": cards}
    report["before"] = score({s: outcomes(rec, i, g) for s, (i, g) in scenes.items()}, set(cards))
    for card in cards:
        sid, box = picks[card]
        try:
            store.teach_from_frame(card, scenes[sid][0], box, source=f"benchmark:{sid}")
        except EdgeError as e:
            report.setdefault("not_taught", []).append(f"{card}: {e.code}")
    for both in (True, False):
        decide.TAUGHT_COLOUR_BOTH = both
        res = {s: outcomes(rec, i, g) for s, (i, g) in scenes.items()}
        report["after" if both else "after_taught_colour_only"] = score(res, set(cards))
    decide.TAUGHT_COLOUR_BOTH = True
    store.clear()
    return report


def sleeved(rec: Recognizer, store: OverlayStore) -> dict[str, int]:
    def named(card: str, table: int, pose: list[list[int]]) -> tuple[bool, bool]:
        cards = rec.identify(photo(sleeve(scan(card)), pose, table_seed=table)).cards
        return (
            any(c.match.known and c.match.card_id == card for c in cards),
            any(c.match.known and c.match.card_id in SLEEVED for c in cards),
        )

    r = dict.fromkeys(("right_before", "right_after", "next", "others_named_before",
                       "others_named_after", "others"), 0)  # fmt: skip
    for phase in ("before", "after"):
        if phase == "after":
            for card in SLEEVED:
                image = photo(sleeve(scan(card)), POSES[0])
                found = rec.identify(image).cards
                if found:
                    store.teach_from_frame(card, image, found[0].box.corners.tolist())
        for card in SLEEVED:
            for k, pose in enumerate(POSES[1:], 1):
                r[f"right_{phase}"] += named(card, k, pose)[0]
                r["next"] += phase == "after"
        for card in NOT_TAUGHT:
            for k, pose in enumerate(POSES[:3]):
                r[f"others_named_{phase}"] += named(card, 10 + k, pose)[1]
                r["others"] += phase == "after"
    store.clear()
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--cards", type=int, default=14)
    p.add_argument("--next", type=int, default=6)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rec = Recognizer.from_bundle(DEMO, RuntimeSettings(onnx_threads=2))
    runtime = Runtime(Settings(), rec)
    with tempfile.TemporaryDirectory() as tmp:
        store = OverlayStore(Path(tmp) / "state", runtime.lease)
        runtime.attach_overlay(store)
        report = {"held_out": held_out(rec, store, Path(tmp), args), "sleeve": sleeved(rec, store)}
    runtime.close()
    print(json.dumps(report, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
