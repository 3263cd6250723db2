"""`kill -9` at random points during installs never leaves the device without a valid current bundle."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.malformed_bundles import make_bundle, rebrand, write_manifest  # isort: skip

from edge.bundles.archive import pack
from edge.bundles.files import verify_bundle
from edge.bundles.install import InstallPolicy, install_bundle
from edge.bundles.store import BundleStore

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 20

# Installs and activates one archive after another, forever, until killed.
CHILD = """
import sys, itertools
from pathlib import Path
from edge.bundles.install import InstallPolicy, install_bundle
from edge.bundles.store import BundleStore
store = BundleStore(Path(sys.argv[1]), keep=2)
archives = sorted(Path(sys.argv[2]).iterdir())
print("ready", flush=True)
for archive in itertools.cycle(archives):
    result = install_bundle(store, archive, InstallPolicy(check_models=False))
    store.activate(result.bundle_id)
    store.gc()
"""


def _archives(base: Path, work: Path, n: int) -> Path:
    """n distinct archives, each carrying a 2 MiB listed file so installs take a while."""
    out = work / "archives"
    out.mkdir()
    for i in range(n):
        b = rebrand(base, work / f"src{i}", f"k{i:02d}")
        (b / "pad.bin").write_bytes(os.urandom(2 << 20))
        write_manifest(
            b,
            {
                k: v
                for k, v in json.loads((b / "manifest.json").read_text()).items()
                if k != "files"
            },
        )
        pack(b, out / f"k{i:02d}.tar")
    return out


@pytest.mark.slow
def test_sigkill_during_installs_always_leaves_a_valid_current_bundle(tmp_path: Path) -> None:
    # given a device with a valid current bundle and a child process installing bundles in a loop
    base = make_bundle(tmp_path / "base", "base")
    archives = _archives(base, tmp_path, 6)
    store = BundleStore(tmp_path / "state", keep=2)
    store.activate(install_bundle(store, base, InstallPolicy()).bundle_id)
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    seen: set[str] = set()
    for _trial in range(TRIALS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(store.state_dir), str(archives)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        # when it is killed with SIGKILL at a random point
        time.sleep(rng.uniform(0.0, 0.6))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # then current is a complete bundle that verifies
        current = store.current_path()
        assert current is not None
        assert verify_bundle(current).bundle_id == store.current_id()
        seen.add(store.current_id() or "")
    # and the kills landed at different stages: several bundles became current along the way
    assert len(seen) >= 3
    # and the next install cleans up what the crashes left
    store.gc()
    left = [
        (p.name, p.is_dir(), [c.name for c in p.iterdir()] if p.is_dir() else None)
        for p in store.staging_dir.iterdir()
    ]
    assert left == [] and list(store.trash_dir.iterdir()) == []
