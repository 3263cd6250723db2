"""`cardedge bundle verify|install|list|activate|rollback|gc|push|keygen|sign|reindex`.

These act on the store under runtime.state_dir directly. A running service keeps serving the
bundle it loaded until restarted; to hot swap a running device use the API (or `bundle push`).
`reindex` builds a new bundle directory (same models, new catalogue) and touches no store.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge.bundles.install import InstallPolicy, install_bundle, policy_from_settings, verify_source
from edge.bundles.push import (
    ProgressPrinter,
    PushOptions,
    device_from,
    format_table,
    push,
    read_devices_file,
    resolve_token,
)
from edge.bundles.reindex import ReindexOptions, reindex
from edge.bundles.signing import generate_keypair, sign_manifest
from edge.bundles.store import BundleStore
from edge.config import Settings, load_with_flags

logger = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> Settings:
    """Flags > CARDEDGE_* variables > --config file > defaults."""
    return load_with_flags(args.config, {"--state-dir": (("runtime", "state_dir"), args.state_dir)})


def _store(settings: Settings) -> BundleStore:
    return BundleStore(settings.runtime.state_dir, keep=settings.bundles.keep)


def _policy(settings: Settings, args: argparse.Namespace) -> InstallPolicy:
    bundles = settings.bundles
    if getattr(args, "public_key", None):
        bundles = bundles.model_copy(update={"public_keys": list(args.public_key)})
    if getattr(args, "device_arch", None):
        bundles = bundles.model_copy(update={"device_arch": args.device_arch})
    return policy_from_settings(bundles, settings.limits)


def cmd_verify(args: argparse.Namespace) -> int:
    manifest = verify_source(args.source, _policy(_settings(args), args))
    print(
        f"ok: bundle {manifest.bundle_id} ({manifest.catalogue.name}, {manifest.catalogue.card_count} cards)"
    )
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _store(settings)
    result = install_bundle(store, args.source, _policy(settings, args))
    print(f"installed {result.bundle_id}" + ("" if result.added else " (already installed)"))
    if args.activate:
        old = store.activate(result.bundle_id)
        print(f"current: {result.bundle_id} (previous: {old or '-'})")
        store.gc()
        print("restart the service (systemctl restart cardedge) or use the API to hot swap")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    bundles = _store(_settings(args)).installed()
    if args.json:
        keys = ("bundle_id", "created", "catalogue", "card_count", "size_bytes", "installed_at")
        rows = [
            {**{k: getattr(b, k) for k in keys}, "current": b.current, "previous": b.previous}
            for b in bundles
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for b in bundles:
        flag = "*" if b.current else ("<" if b.previous else " ")
        print(
            f"{flag} {b.bundle_id:40s} {b.catalogue:12s} {b.card_count:6d} cards  {b.size_bytes / 1e6:7.1f} MB  {b.created}"
        )
    if not bundles:
        print("no bundles installed")
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    old = _store(_settings(args)).activate(args.bundle_id)
    print(f"current: {args.bundle_id} (previous: {old or '-'})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    print(f"current: {_store(_settings(args)).rollback()}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    removed = _store(_settings(args)).gc(args.keep)
    print("removed: " + (", ".join(removed) if removed else "nothing"))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    devices = [device_from(url) for url in args.device or []]
    if args.devices_file:
        devices += read_devices_file(args.devices_file)
    opts = PushOptions(
        retries=args.retries,
        backoff_s=args.backoff,
        timeout_s=args.timeout,
        parallel=args.parallel,
        activate=not args.no_activate,
    )
    printer = ProgressPrinter(lambda line: print(line, file=sys.stderr, flush=True))
    bundle_id, results = push(args.bundle, devices, resolve_token(args.token_file), opts, printer)
    print(format_table(bundle_id, results))
    return 0 if all(r.ok for r in results) else 1


def cmd_keygen(args: argparse.Namespace) -> int:
    fp = generate_keypair(args.private, args.public)
    print(
        f"key {fp}: private {args.private} (keep it secret), public {args.public} (give to devices)"
    )
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    print(f"wrote {sign_manifest(args.bundle, args.key)}")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    opts = ReindexOptions(
        source=args.bundle,
        catalogue=args.catalogue,
        out=args.out,
        bundle_id=args.bundle_id,
        name=args.name,
        force=args.force,
        threads=args.threads,
    )
    print(reindex(opts).summary())
    return 0


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="config file (TOML/YAML)")
    p.add_argument("--state-dir", type=Path, help="state directory (default: runtime.state_dir)")


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public-key", type=Path, action="append", help="trusted signer (repeatable)")
    p.add_argument(
        "--device-arch", choices=["auto", "none", "hailo8l", "hailo8"], help="HEF arch check"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bundle ...` to the `cardedge` command."""
    bundle = subparsers.add_parser(
        "bundle", help="verify, install, list, activate, roll back, push, reindex bundles"
    )
    sub = bundle.add_subparsers(dest="bundle_command", required=True)

    p = sub.add_parser("verify", help="check a bundle directory or archive without installing it")
    p.add_argument("source", type=Path)
    _store_args(p)
    _policy_args(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "install", help="install a bundle (dir, .tar, .tar.gz, .tar.zst) into the store"
    )
    p.add_argument("source", type=Path)
    p.add_argument("--no-activate", dest="activate", action="store_false", help="install only")
    _store_args(p)
    _policy_args(p)
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("list", help="installed bundles (* current, < previous)")
    p.add_argument("--json", action="store_true")
    _store_args(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("activate", help="make an installed bundle current")
    p.add_argument("bundle_id")
    _store_args(p)
    p.set_defaults(func=cmd_activate)

    p = sub.add_parser("rollback", help="make the previous bundle current again")
    _store_args(p)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("gc", help="delete old bundles (never current or previous)")
    p.add_argument("--keep", type=int, help="newest bundles to keep (default: bundles.keep)")
    _store_args(p)
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("push", help="upload a bundle to devices over their API and confirm")
    p.add_argument("bundle", type=Path, help="bundle directory or archive")
    p.add_argument("--device", action="append", metavar="URL", help="device base URL (repeatable)")
    p.add_argument("--devices-file", type=Path, help="file with one `URL [NAME]` per line")
    p.add_argument("--token-file", type=Path, help="API token file (default: $CARDEDGE_TOKEN)")
    p.add_argument("--parallel", type=int, default=8, help="concurrent uploads")
    p.add_argument("--retries", type=int, default=3, help="retries per device")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry wait, seconds (doubles)")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    p.add_argument("--no-activate", action="store_true", help="install only, do not swap")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("keygen", help="create an Ed25519 signing key pair")
    p.add_argument("--private", type=Path, required=True)
    p.add_argument("--public", type=Path, required=True)
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("sign", help="sign a bundle directory's manifest (writes manifest.sig)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--key", type=Path, required=True, help="PEM Ed25519 private key")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser(
        "reindex", help="a new bundle for a new or extended catalogue, with the same models"
    )
    p.add_argument("--bundle", type=Path, required=True, help="source bundle directory")
    p.add_argument(
        "--catalogue", type=Path, required=True, help="folder with cards.csv + images/<card_id>.jpg"
    )
    p.add_argument("--out", type=Path, required=True, help="new bundle directory (created)")
    p.add_argument(
        "--bundle-id", help="new bundle id (default: <source id>-reindex-<UTC yyyymmddHHMMSS>)"
    )
    p.add_argument("--name", help="catalogue name (default: the catalogue folder's name)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    p.set_defaults(func=cmd_reindex)
