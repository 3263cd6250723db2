"""`cardedge identify IMAGE...`: every card in image files, as JSON lines or a table.

One JSON line per image with --json (or a readable table): every card's id, name, set, number,
score, margin, known flag, tier, polygon and detector confidence, plus per-stage timings. A file
that cannot be read gets an error line; the exit code is non-zero only when every file failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from edge.config import load_with_flags
from edge.errors import EdgeError
from edge.imageio import read_image_file
from edge.recognize.recognizer import IdentifyResult, Recognizer
from edge.state import resolve_bundle

logger = logging.getLogger(__name__)


def card_json(rec: Recognizer, result: IdentifyResult) -> list[dict[str, Any]]:
    """The cards of one result as the JSON objects `identify --json` prints."""
    out = []
    for card in result.cards:
        info = rec.catalogue.get(card.match.card_id) if card.match.known else None
        out.append(
            {
                "card_id": (card.match.card_id or None) if card.match.known else None,
                "best_card_id": card.match.card_id or None,
                "name": info.name if info else None,
                "set_id": info.set_id if info else None,
                "number": info.number if info else None,
                "score": round(card.match.score, 4),
                "margin": round(card.match.margin, 4),
                "known": card.match.known,
                "confidence": card.match.confidence,
                "inliers": card.match.inliers,
                "reason": card.match.reason,
                "runner_up": card.match.runner_up or None,
                "polygon": [[round(float(x), 1), round(float(y), 1)] for x, y in card.box.corners],
                "det_conf": round(card.box.conf, 4),
            }
        )
    return out


def result_json(image: str, rec: Recognizer, result: IdentifyResult) -> dict[str, Any]:
    """One `identify --json` line."""
    timings = {k: round(v, 3) for k, v in result.timings.as_dict().items()}
    return {
        "image": image,
        "bundle_id": result.bundle_id,
        "cards": card_json(rec, result),
        "timings_ms": timings,
    }


def error_json(image: str, err: EdgeError) -> dict[str, Any]:
    """One per-file error line."""
    return {"image": image, "error": {"code": err.code, "message": err.message, "hint": err.hint}}


def _print_table(line: dict[str, Any]) -> None:
    if "error" in line:
        print(f"{line['image']}: ERROR {line['error']['code']}: {line['error']['message']}")
        return
    cards = line["cards"]
    print(f"{line['image']}: {len(cards)} card(s), {line['timings_ms']['total']:.1f} ms")
    for c in cards:
        tier = c["confidence"].upper() if c["confidence"] == "unknown" else c["confidence"]
        evidence = f"{c['inliers']} inliers" if c["inliers"] else f"score {c['score']:.3f}"
        print(
            f"  {c['card_id'] or '-':<16} {c['name'] or '-':<24} {c['set_id'] or '-':<10} "
            f"{c['number'] or '-':<10} {tier:<8} {evidence:<12} det {c['det_conf']:.2f}"
            + (f"  ({c['reason']})" if c["reason"] else "")
            + _alternatives(c)
        )


def _alternatives(c: dict[str, Any]) -> str:
    """The printings an answer hesitates between: both for an unknown card whose art verified
    (its own id column is empty), the other one beside a named card."""
    if not c["runner_up"]:
        return ""
    if not c["known"] and c.get("best_card_id"):
        return f"  {c['best_card_id']} or {c['runner_up']}?"
    return f"  or {c['runner_up']}?"


def cmd_identify(args: argparse.Namespace) -> int:
    """Identify every card in each image; exit 1 only when every image failed."""
    settings = load_with_flags(args.config, {"--bundle": (("runtime", "bundle"), args.bundle)})
    rec = Recognizer.from_bundle(
        resolve_bundle(settings, args.bundle), settings.runtime, hailo=settings.hailo
    )
    failures = 0
    try:
        for path in args.images:
            t0 = time.perf_counter()
            try:
                image = read_image_file(Path(path), max_pixels=settings.limits.max_pixels)
                decode_ms = (time.perf_counter() - t0) * 1000.0
                line = result_json(str(path), rec, rec.identify(image).with_decode(decode_ms))
            except EdgeError as e:
                failures += 1
                line = error_json(str(path), e)
            except Exception as e:  # one bad file must not end the batch with a traceback
                logger.debug("identify %s failed", path, exc_info=True)
                failures += 1
                internal = EdgeError(f"internal error: {type(e).__name__}: {e}", "run with -vv")
                line = error_json(str(path), internal)
            if args.json:
                print(json.dumps(line, ensure_ascii=False), flush=True)
            else:
                _print_table(line)
    finally:
        rec.close()
    return 1 if failures == len(args.images) else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `identify`."""
    ident = subparsers.add_parser("identify", help="identify every card in image files")
    ident.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, BMP, TIFF)")
    ident.add_argument("--bundle", type=Path, help="bundle directory (default: from the config)")
    ident.add_argument("--json", action="store_true", help="one JSON line per image")
    ident.add_argument("--config", type=Path, help="config file (TOML or YAML)")
    ident.set_defaults(func=cmd_identify)
