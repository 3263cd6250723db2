"""The on-device bundle store: `bundles/<bundle_id>/` under a state directory, a `current` link and
a `previous` link, each switched atomically (symlink to a temporary name, os.replace, fsync of the
directory), so that a crash at any instant leaves `current` pointing at a complete bundle.

Layout::

    <state_dir>/bundles/<bundle_id>/   installed bundles, immutable once committed
    <state_dir>/current -> bundles/<id>
    <state_dir>/previous -> bundles/<id>   what `rollback` returns to
    <state_dir>/staging/<tmp>/         installs in progress (each holds a flock on its .lock)
    <state_dir>/trash/                 bundles being deleted (renamed here first, then removed)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.bundles.errors import BundleConflictError, NoPreviousBundleError
from edge.bundles.manifest import MANIFEST_NAME, load_manifest
from edge.errors import BundleError, BundleNotFoundError

logger = logging.getLogger(__name__)

_BUNDLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CURRENT = "current"
PREVIOUS = "previous"
STAGING_LOCK = ".lock"
_STAGING_GRACE_S = 60.0


@dataclass(frozen=True, slots=True)
class StoredBundle:
    """One installed bundle as `bundle list` and GET /v1/bundles show it."""

    bundle_id: str
    path: Path
    installed_at: float  # unix seconds, when it was committed to the store
    created: str  # ISO-8601 from its manifest
    catalogue: str
    card_count: int
    size_bytes: int
    current: bool
    previous: bool


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under root (bottom-up), before it is renamed into place."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def check_bundle_id(bundle_id: str) -> str:
    """A bundle id becomes a directory name: refuse anything that is not a plain safe name."""
    if not _BUNDLE_ID.fullmatch(bundle_id) or bundle_id in (".", ".."):
        raise BundleNotFoundError(
            f"invalid bundle id {bundle_id!r}", "ids are letters, digits, '.', '_' and '-'"
        )
    return bundle_id


class BundleStore:
    """Installed bundles under one state directory; never damages the current bundle."""

    def __init__(self, state_dir: Path, *, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.state_dir = Path(state_dir)
        self.keep = keep
        self.bundles_dir = self.state_dir / "bundles"
        self.staging_dir = self.state_dir / "staging"
        self.trash_dir = self.state_dir / "trash"
        for d in (self.bundles_dir, self.staging_dir, self.trash_dir):
            d.mkdir(parents=True, exist_ok=True)

    # -- locking -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive store lock (flock) across processes: the CLI and the service may both write."""
        fd = os.open(self.state_dir / ".store.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------------

    def path_for(self, bundle_id: str) -> Path:
        return self.bundles_dir / check_bundle_id(bundle_id)

    def has(self, bundle_id: str) -> bool:
        return (self.path_for(bundle_id) / MANIFEST_NAME).is_file()

    def _link_id(self, name: str) -> str | None:
        link = self.state_dir / name
        try:
            target = os.readlink(link)
        except (FileNotFoundError, OSError):
            return None
        bundle_id = Path(target).name
        if not _BUNDLE_ID.fullmatch(bundle_id) or not self.has(bundle_id):
            logger.warning(
                "store link %s points at %s, which is not an installed bundle", name, target
            )
            return None
        return bundle_id

    def current_id(self) -> str | None:
        """The bundle the device serves, or None on a fresh device."""
        return self._link_id(CURRENT)

    def previous_id(self) -> str | None:
        """The bundle `rollback` returns to."""
        return self._link_id(PREVIOUS)

    def current_path(self) -> Path | None:
        bundle_id = self.current_id()
        return self.path_for(bundle_id) if bundle_id else None

    def installed(self) -> list[StoredBundle]:
        """Installed bundles, newest install first."""
        current, previous = self.current_id(), self.previous_id()
        out: list[StoredBundle] = []
        for path in self.bundles_dir.iterdir():
            if not path.is_dir() or not _BUNDLE_ID.fullmatch(path.name):
                continue
            try:
                manifest = load_manifest(path / MANIFEST_NAME)
            except BundleError as e:
                logger.warning("skipping unreadable bundle %s: %s", path.name, e)
                continue
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            out.append(
                StoredBundle(
                    bundle_id=path.name,
                    path=path,
                    installed_at=path.stat().st_mtime,
                    created=manifest.created,
                    catalogue=manifest.catalogue.name,
                    card_count=manifest.catalogue.card_count,
                    size_bytes=size,
                    current=path.name == current,
                    previous=path.name == previous,
                )
            )
        out.sort(key=lambda b: (b.installed_at, b.bundle_id), reverse=True)
        return out

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh staging directory, removed afterwards unless committed. Its sibling
        `<name>.lock` is flock-ed while in use, so `recover` can tell live installs from dead ones."""
        path = self.staging_dir / uuid.uuid4().hex
        lock = path.with_name(path.name + STAGING_LOCK)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            path.mkdir()
            yield path
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            lock.unlink(missing_ok=True)
            os.close(fd)

    def commit(self, staging: Path, bundle_id: str) -> tuple[Path, bool]:
        """Move a fully checked staging directory to bundles/<id> (one rename). Returns the path and
        whether it was newly added; re-installing the identical bundle is a no-op."""
        final = self.path_for(bundle_id)
        with self.lock():
            if final.exists():
                same = (final / MANIFEST_NAME).read_bytes() == (
                    staging / MANIFEST_NAME
                ).read_bytes()
                if same:
                    logger.info("bundle %s is already installed", bundle_id)
                    return final, False
                raise BundleConflictError(
                    f"another bundle with id {bundle_id!r} is already installed",
                    "bundle ids are immutable: build the new bundle under a new id",
                )
            fsync_tree(staging)
            os.rename(staging, final)
            os.utime(final)  # installed_at, used by retention
            fsync_dir(self.bundles_dir)
        logger.info("bundle %s committed to the store", bundle_id)
        return final, True

    def _switch_link(self, name: str, bundle_id: str) -> None:
        """Point `name` at bundles/<id> atomically: a relative symlink under a temp name, os.replace."""
        tmp = self.state_dir / f".{name}.{uuid.uuid4().hex}.tmp"
        os.symlink(os.path.join("bundles", bundle_id), tmp)
        os.replace(tmp, self.state_dir / name)
        fsync_dir(self.state_dir)

    def activate(self, bundle_id: str) -> str | None:
        """Make an installed bundle current; the old current becomes `previous`. Returns the old id."""
        with self.lock():
            if not self.has(bundle_id):
                raise BundleNotFoundError(
                    f"bundle {bundle_id!r} is not installed", "see `cardedge bundle list`"
                )
            old = self.current_id()
            if old == bundle_id:
                return old
            if old is not None:
                self._switch_link(PREVIOUS, old)
            self._switch_link(CURRENT, bundle_id)
        logger.info("bundle %s is now current (previous: %s)", bundle_id, old)
        return old

    def rollback(self) -> str:
        """Reactivate the previous bundle; the rolled-back one becomes `previous`. Returns its id."""
        target = self.previous_id()
        if target is None:
            raise NoPreviousBundleError(
                "no previous bundle to roll back to", "activate a bundle by id instead"
            )
        self.activate(target)
        return target

    def remove(self, bundle_id: str) -> None:
        """Delete one bundle that is neither current nor previous (rename to trash, then delete)."""
        with self.lock():
            if bundle_id in (self.current_id(), self.previous_id()):
                raise BundleError(
                    f"bundle {bundle_id!r} is current or previous and cannot be removed",
                    "activate another bundle first",
                )
            self._trash(bundle_id)

    def _trash(self, bundle_id: str) -> None:
        path = self.path_for(bundle_id)
        if not path.exists():
            raise BundleNotFoundError(f"bundle {bundle_id!r} is not installed")
        dest = self.trash_dir / f"{bundle_id}.{uuid.uuid4().hex}"
        os.rename(path, dest)  # atomic: bundles/ never holds a half-deleted bundle
        fsync_dir(self.bundles_dir)
        shutil.rmtree(dest, ignore_errors=True)

    def gc(self, keep: int | None = None) -> list[str]:
        """Keep current, previous and the `keep` most recently installed bundles; delete the rest,
        plus leftovers of crashed installs. Returns the removed bundle ids."""
        keep = self.keep if keep is None else keep
        self.recover()
        removed: list[str] = []
        with self.lock():
            protected = {self.current_id(), self.previous_id()}
            ordered = sorted(
                (p for p in self.bundles_dir.iterdir() if p.is_dir()),
                key=lambda p: (p.stat().st_mtime, p.name),
                reverse=True,
            )
            for rank, path in enumerate(ordered):
                if path.name in protected or rank < keep:
                    continue
                self._trash(path.name)
                removed.append(path.name)
        if removed:
            logger.info("gc removed bundles: %s", ", ".join(removed))
        return removed

    def recover(self) -> list[Path]:
        """Remove what crashed installs left: unlocked staging dirs, temp links, trash."""
        removed: list[Path] = []
        with self.lock():
            # Directories first, each with its lock; then locks whose directory is gone.
            entries = sorted(self.staging_dir.iterdir(), key=lambda p: not p.is_dir())
            for path in entries:
                if path.exists() and _staging_is_stale(path):
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                        path.with_name(path.name + STAGING_LOCK).unlink(missing_ok=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed.append(path)
            for path in self.state_dir.glob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed.append(path)
            for path in self.trash_dir.iterdir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed


def _staging_is_stale(path: Path) -> bool:
    """Staging entries are stale when no process holds the flock on their `.lock` sibling."""
    lock = path if path.name.endswith(STAGING_LOCK) else path.with_name(path.name + STAGING_LOCK)
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        # A dir whose lock is gone: left by a crash, or created this instant (lock made first).
        return time.time() - path.lstat().st_mtime > _STAGING_GRACE_S
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
