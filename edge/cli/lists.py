"""`cardedge lists [show ID | export ID]`: the scan lists of a state directory, read straight from
its lists.sqlite (read-only, so it runs beside a serving device and needs no bundle).

The state directory comes as for every command: --state-dir > CARDEDGE_RUNTIME__STATE_DIR >
runtime.state_dir in --config > the default.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge.config import Settings, load_with_flags
from edge.lists.export import FORMATS, export, list_json
from edge.lists.store import ListStore

logger = logging.getLogger(__name__)


def _store(args: argparse.Namespace) -> ListStore:
    settings: Settings = load_with_flags(
        args.config, {"--state-dir": (("runtime", "state_dir"), args.state_dir)}
    )
    return ListStore(settings.runtime.state_dir, read_only=True)


def cmd_lists(args: argparse.Namespace) -> int:
    """Every list, newest first: id, state, entries, distinct cards, name."""
    store = _store(args)
    try:
        lists = store.all()
    finally:
        store.close()
    if args.json:
        rows = [
            {
                "list_id": s.list_id, "name": s.name, "note": s.note, "created": s.created,
                "stopped": s.stopped, "recording": s.recording, "entry_count": s.entries,
                "card_count": s.cards,
            }
            for s in lists
        ]  # fmt: skip
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    if not lists:
        print("no scan lists")
    for s in lists:
        state = "recording" if s.recording else "stopped"
        print(f"{s.list_id:>5}  {state:<9}  {s.entries:>5} entries  {s.cards:>5} cards  {s.name}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """One list as JSON (its cards with quantities and every entry)."""
    store = _store(args)
    try:
        data = list_json(store.get(args.list_id), store.entries(args.list_id))
    finally:
        store.close()
    print(json.dumps(data, ensure_ascii=False, indent=1))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """The export the API serves, to --out or stdout."""
    store = _store(args)
    try:
        out = export(store.get(args.list_id), store.entries(args.list_id), args.format)
    finally:
        store.close()
    if args.out is None:
        sys.stdout.buffer.write(out.data)
        sys.stdout.buffer.flush()
    else:
        args.out.write_bytes(out.data)
        print(f"wrote {args.out} ({len(out.data)} bytes, {args.format})", file=sys.stderr)
    return 0


def _common(p: argparse.ArgumentParser, *, sub: bool = False) -> None:
    # A subcommand's copy must not reset what was given before it: `lists --state-dir X export`.
    kw: dict[str, Any] = {"default": argparse.SUPPRESS} if sub else {}
    p.add_argument(
        "--state-dir", type=Path, help="state directory (default: runtime.state_dir)", **kw
    )
    p.add_argument("--config", type=Path, help="TOML or YAML config file", **kw)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lists`, `lists show` and `lists export` to the cardedge command."""
    p = subparsers.add_parser("lists", help="scan lists: list, show, export")
    _common(p)
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=cmd_lists)
    sub = p.add_subparsers(dest="lists_command")
    show = sub.add_parser("show", help="one list as JSON")
    show.add_argument("list_id", type=int, help="list id (`cardedge lists` names them)")
    _common(show, sub=True)
    show.set_defaults(func=cmd_show)
    exp = sub.add_parser("export", help="a list as a collection-tool CSV, plain CSV or JSON")
    exp.add_argument("list_id", type=int, help="list id (`cardedge lists` names them)")
    exp.add_argument("--format", default="csv", choices=FORMATS, help="file layout (csv)")
    exp.add_argument("--out", type=Path, help="write here instead of stdout")
    _common(exp, sub=True)
    exp.set_defaults(func=cmd_export)
