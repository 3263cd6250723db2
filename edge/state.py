"""The state directory a service writes (bundle store, uploads, feedback): can it be written, and
seeding its bundle store from `serve --bundle DIR`.

Seeding rule: the bundle named by --bundle / runtime.bundle is installed into the store (every
install check) the first time the store sees it, and only then made current. A bundle pushed
later stays current across restarts with the same --bundle, and rollback returns to the one
before it. A state directory that cannot be written leaves the service serving the bundle
straight from DIR, read-only: the bundle and feedback routes answer 503 `store_unavailable`
with the reason and the fix, and /v1/status shows the same.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from edge.bundles.errors import BundleConflictError
from edge.bundles.store import BundleStore
from edge.config import Settings
from edge.errors import ConfigError, EdgeError

logger = logging.getLogger(__name__)


class StoreUnavailableError(EdgeError):
    """The state directory cannot be written: no bundle installs, no feedback."""

    code = "store_unavailable"
    http_status = 503


@dataclass(frozen=True, slots=True)
class StoreState:
    """Whether this process can write its state directory, and if not why and how to fix it."""

    state_dir: Path
    writable: bool
    reason: str | None = None
    hint: str | None = None

    def require(self) -> None:
        """Raise StoreUnavailableError when the state directory is read-only."""
        if not self.writable:
            raise StoreUnavailableError(
                f"state directory {self.state_dir} is not writable: {self.reason}", self.hint
            )


def fix_hint(state_dir: Path) -> str:
    return (
        f"give the service user write access to {state_dir} (e.g. `sudo install -d -o $USER "
        f"{state_dir}`; the systemd unit's StateDirectory= does this), or point runtime.state_dir "
        "(CARDEDGE_RUNTIME__STATE_DIR, --state-dir) at a writable directory"
    )


def probe_state_dir(state_dir: Path) -> StoreState:
    """Create the store's folders and write a probe file; any OSError means read-only."""
    try:
        BundleStore(state_dir)
        probe = state_dir / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        logger.warning(
            "state directory %s is not writable (%s): read-only service", state_dir, reason
        )
        return StoreState(state_dir, False, reason, fix_hint(state_dir))
    return StoreState(state_dir, True)


def _already_installed(store: BundleStore, seed: Path) -> str | None:
    """The seed directory's bundle id when the identical bundle is in the store already."""
    from edge.bundles.manifest import MANIFEST_NAME, load_manifest

    manifest_path = seed / MANIFEST_NAME
    if not seed.is_dir() or not manifest_path.is_file():
        return None
    bundle_id = load_manifest(manifest_path).bundle_id
    stored = store.path_for(bundle_id) / MANIFEST_NAME
    if stored.is_file() and stored.read_bytes() == manifest_path.read_bytes():
        return bundle_id
    return None


def seed_store(settings: Settings) -> tuple[Path, StoreState]:
    """The bundle directory to serve, after seeding the store from runtime.bundle (see above)."""
    from edge.bundles.install import install_bundle, policy_from_settings

    state_dir = settings.runtime.state_dir
    seed = settings.runtime.bundle
    state = probe_state_dir(state_dir)
    if not state.writable:
        current = state_dir / "current"
        if seed is not None:
            return seed, state
        if current.exists():
            return current.resolve(), state
        raise ConfigError(
            f"no bundle given and no current bundle under {state_dir}",
            "pass --bundle DIR, or " + fix_hint(state_dir),
        )
    store = BundleStore(state_dir, keep=settings.bundles.keep)
    if seed is not None:
        bundle_id = _already_installed(store, seed)
        added = False
        if bundle_id is None:
            policy = policy_from_settings(settings.bundles, settings.limits)
            try:
                result = install_bundle(store, seed, policy)
            except BundleConflictError as e:
                raise BundleConflictError(
                    f"{seed} is not the bundle installed under its id in {state_dir}: {e.message}",
                    "give the rebuilt bundle a new bundle_id, or start with a fresh --state-dir",
                ) from e
            bundle_id, added = result.bundle_id, result.added
        if added or store.current_id() is None:
            old = store.activate(bundle_id)
            logger.info("seeded the store with %s from %s (previous: %s)", bundle_id, seed, old)
        elif store.current_id() != bundle_id:
            logger.info(
                "%s is installed already; keeping the current bundle %s (activate or roll back "
                "over the API or with `cardedge bundle activate`)",
                bundle_id,
                store.current_id(),
            )
    current_path = store.current_path()
    if current_path is None:
        raise ConfigError(
            f"no bundle given and no current bundle under {state_dir}",
            "pass --bundle DIR or install one with `cardedge bundle install`",
        )
    return Path(os.path.realpath(current_path)), state


def resolve_bundle(settings: Settings, explicit: Path | None = None) -> Path:
    """The bundle a command loads: `explicit` (--bundle), else runtime.bundle from the config,
    else the store's `current` link under the state directory."""
    if explicit is not None:
        return explicit
    if settings.runtime.bundle is not None:
        return settings.runtime.bundle
    current = settings.runtime.state_dir / "current"
    if current.exists():
        return current.resolve()
    raise ConfigError(
        f"no bundle given and no current bundle under {settings.runtime.state_dir}",
        "pass --bundle DIR or install one with `cardedge bundle install`",
    )
