"""`cardedge` command: identify, bench, config check, plus the subcommands other subsystems
register (serve, bench-live, bundle, doctor, lists).

`identify` prints one JSON line per image with --json (or a readable table): every card's id,
name, set, number, score, margin, known flag, polygon and detector confidence, plus per-stage
timings. A file that cannot be read gets an error line; the exit code is non-zero only when every
file failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.config import Settings, format_validation_error, load_with_flags, read_config_file
from edge.errors import ConfigError, EdgeError
from edge.imageio import read_image_file
from edge.recognize.recognizer import IdentifyResult, Recognizer

logger = logging.getLogger(__name__)

# Modules whose `register(subparsers)` adds their own subcommands (serve and bench-live,
# bundle ..., doctor, lists ...).
SUBSYSTEM_COMMANDS = ("edge.cli.serve", "edge.cli.bundle", "edge.cli.doctor", "edge.cli.lists")


def resolve_bundle(explicit: Path | None, settings: Settings) -> Path:
    """--bundle, else runtime.bundle from the config, else the store's current bundle."""
    if explicit is not None:
        return explicit
    if settings.runtime.bundle is not None:
        return settings.runtime.bundle
    current = settings.runtime.state_dir / "current"
    if current.exists():
        return current
    raise ConfigError("no bundle to load", "pass --bundle DIR or set runtime.bundle in the config")


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
        resolve_bundle(args.bundle, settings), settings.runtime, hailo=settings.hailo
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


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a config file: every problem on its own line with its dotted path, or 'ok'."""
    try:
        data = read_config_file(args.file)
        Settings(**data)
    except ConfigError as e:
        print(e.message)
        return 1
    except ValidationError as e:
        for problem in format_validation_error(e):
            print(problem)
        return 1
    print("ok")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Per-stage latency and host-overhead ratios of a bundle (see edge.cli.bench)."""
    from edge.cli import bench

    if args.live:
        from edge.cli.serve import run_bench_live

        return run_bench_live(args)
    settings = load_with_flags(args.config, {"--bundle": (("runtime", "bundle"), args.bundle)})
    return bench.main(args, resolve_bundle(args.bundle, settings), settings)


def build_parser() -> argparse.ArgumentParser:
    """The full `cardedge` argument parser."""
    from edge.cli import bench

    parser = argparse.ArgumentParser(prog="cardedge", description="Trading-card recognition.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)

    ident = sub.add_parser("identify", help="identify every card in image files")
    ident.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, BMP, TIFF)")
    ident.add_argument("--bundle", type=Path, help="bundle directory (default: from the config)")
    ident.add_argument("--json", action="store_true", help="one JSON line per image")
    ident.add_argument("--config", type=Path, help="config file (TOML or YAML)")
    ident.set_defaults(func=cmd_identify)

    bench_p = sub.add_parser("bench", help="per-stage latency of a bundle")
    bench.add_arguments(bench_p)
    bench_p.set_defaults(func=cmd_bench)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file", type=Path, help="TOML or YAML config file")
    check.set_defaults(func=cmd_config_check)

    for module in SUBSYSTEM_COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cardedge` script."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(int(args.verbose), 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        code: int = args.func(args)
    except EdgeError as e:
        print(
            json.dumps({"error": e.to_dict()})
            if getattr(args, "json", False)
            else f"error [{e.code}]: {e.message}" + (f"\n  hint: {e.hint}" if e.hint else ""),
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
