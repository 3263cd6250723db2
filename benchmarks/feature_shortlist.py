"""The local-feature shortlist (edge.recognize.shortlist) against the embedder's, on held-out scenes.

For every known card of the scenes that the detector finds, the crop is embedded and searched as
the device does (Recognizer.shortlist), its ORB features are extracted as the verification stage's
first look does, and the index is queried with them. Reports recall@k of the embedder alone, the
local features alone and both merged (the embedder's k, then the index's k not already there: what
verification checks when the embedder's candidates fail), the index's build time and memory, the
query time per crop beside one candidate's verification in the same run, and optionally the
evaluation's decision figures with the index off and on.

    python benchmarks/feature_shortlist.py --bundle models/demo --scenes DIR [--n-scenes 60]
        [--evaluate --catalogue reference_db/demo] [--json OUT]

Scenes missing from DIR are made first: the demo world's held-out scenes (as
tests/test_demo_accuracy.py makes them).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import RuntimeSettings
from edge.recognize.recognizer import Recognizer
from edge.recognize.shortlist import FeatureShortlist, merged


def make_scenes(out: Path, n: int) -> None:
    from training.synth.card_render import render_card
    from training.synth.catalogue import procedural_catalogue
    from training.synth.world import SCENE_CARD_HEIGHT
    from training.synth.writers import write_test_scenes

    known = procedural_catalogue(320, 0)
    unknown = procedural_catalogue(60, 1_000_003, id_prefix="u")
    images = {r.card_id: render_card(r, SCENE_CARD_HEIGHT) for r in [*known, *unknown]}
    out.mkdir(parents=True, exist_ok=True)
    write_test_scenes(out, known, unknown, images, n, 0)


def recall(bundle: Path, scenes: Path, ks: tuple[int, ...]) -> dict[str, Any]:
    from training.evaluate import load_scenes, match_boxes

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rec = Recognizer.from_bundle(bundle, RuntimeSettings(feature_shortlist=False))
    try:
        stage = rec.verify_stage
        assert stage is not None, "the bundle has no reference features"
        t0 = time.perf_counter()
        index = FeatureShortlist.from_references(stage.refs)
        build_ms = (time.perf_counter() - t0) * 1e3
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kmax = max(ks)
        hits: dict[str, list[bool]] = {}
        query_ms: list[float] = []
        verify_ms: list[float] = []
        extract_ms: list[float] = []
        for _, image, gt in load_scenes(scenes):
            boxes = rec.detect(image)
            pairs = match_boxes(gt, boxes)
            known = [(g, boxes[pairs[i]]) for i, g in enumerate(gt) if g.known and i in pairs]
            known = [(g, b) for g, b in known if not g.face_down]
            if not known:
                continue
            _, lists, _ = rec.shortlist(image, [b for _, b in known])
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            spec = stage.refs.spec
            for (g, box), embedder in zip(known, lists, strict=True):
                warp = stage._warp(box.corners)
                crop = cv2.warpPerspective(
                    gray, warp, (spec.width, spec.height), borderMode=cv2.BORDER_REPLICATE
                )
                t1 = time.perf_counter()
                query = stage.extractor.extract(np.ascontiguousarray(crop))
                t2 = time.perf_counter()
                local = index.query(query.descriptors, kmax)
                t3 = time.perf_counter()
                stage.verifier.verify(query, g.card_id)
                t4 = time.perf_counter()
                extract_ms.append((t2 - t1) * 1e3)
                query_ms.append((t3 - t2) * 1e3)
                verify_ms.append((t4 - t3) * 1e3)
                for k in ks:
                    e = [c.card_id for c in embedder[:k]]
                    f = [c.card_id for c in local[:k]]
                    m = [c.card_id for c in merged(embedder[:k], local[:k])]
                    for name, ids in (("embedder", e), ("local", f), ("merged", m)):
                        hits.setdefault(f"{name}@{k}", []).append(g.card_id in ids)
        q, v = statistics.median(query_ms), statistics.median(verify_ms)
        return {
            "cards": len(index),
            "known_detected": len(next(iter(hits.values()), [])),
            "recall": {key: round(sum(h) / max(len(h), 1), 3) for key, h in sorted(hits.items())},
            "build_ms": round(build_ms, 1),
            "index_mb": round(index.nbytes / 2**20, 1),
            "build_rss_mb": round((rss1 - rss0) / 1024, 1),
            "query_ms_median": round(q, 2),
            "extract_ms_median": round(statistics.median(extract_ms), 2),
            "verify_ms_per_candidate_median": round(v, 2),
            "query_over_verify": round(q / v, 2) if v else None,
        }
    finally:
        rec.close()


def decision(bundle: Path, scenes: Path, catalogue: Path) -> dict[str, Any]:
    import training.evaluate as ev

    out: dict[str, Any] = {}
    original = ev.RuntimeSettings
    try:
        for on in (False, True):
            ev.RuntimeSettings = partial(RuntimeSettings, feature_shortlist=on)  # type: ignore[misc]
            t0 = time.perf_counter()
            report = ev.evaluate(bundle, scenes, catalogue, threads=1)
            v = report["decision"]["verified"]
            keep = (
                "named_right_unoccluded_80px", "named_right_all", "precision_known",
                "unknown_flagged", "false_cards_per_scene",
            )  # fmt: skip
            out["on" if on else "off"] = {
                **{k: v.get(k) for k in keep},
                "seconds": round(time.perf_counter() - t0, 1),
            }
    finally:
        ev.RuntimeSettings = original  # type: ignore[misc]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--scenes", type=Path, required=True)
    p.add_argument("--n-scenes", type=int, default=60)
    p.add_argument("--evaluate", action="store_true", help="also the decision, index off and on")
    p.add_argument("--catalogue", type=Path, default=Path("reference_db/demo"))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if len(list(args.scenes.glob("*.json"))) < args.n_scenes:
        make_scenes(args.scenes, args.n_scenes)
    result: dict[str, Any] = {"bundle": args.bundle.name, **recall(args.bundle, args.scenes, (10,))}
    if args.evaluate:
        result["decision"] = decision(args.bundle, args.scenes, args.catalogue)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
