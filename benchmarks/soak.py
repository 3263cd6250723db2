"""Soak: run `cardedge serve` on the live source for a long time and watch its resident memory.

Bar (issue 5): RSS growth <= 5 % over 30 minutes, measured from the end of a warm-up (models,
caches and allocator pools settle in the first minutes) to the end. Light traffic runs meanwhile
(scene polls, frame JPEGs, an identify now and then) so the API paths are soaked too.
Not part of CI:

    python benchmarks/soak.py --bundle models/demo --source synthetic: --minutes 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_load import free_port

BAR_GROWTH = 0.05


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def get(url: str, data: bytes | None = None) -> bytes:
    req = urllib.request.Request(
        url, data=data, headers={"content-type": "image/jpeg"} if data else {}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return bytes(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--source", default="synthetic:")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-minutes", type=float, default=3.0)
    ap.add_argument("--sample-seconds", type=float, default=10.0)
    args = ap.parse_args()
    import shutil
    import subprocess
    import tempfile

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    state = tempfile.mkdtemp(prefix="soak-state-")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli.main",
            "serve",
            "--bundle",
            str(args.bundle),
            "--source",
            args.source,
            "--port",
            str(port),
            "--log-level",
            "warning",
            # a private store: the soak must neither serve nor touch the user's installed bundles
            "--state-dir",
            state,
        ]
    )
    samples: list[tuple[float, int]] = []
    try:
        from scene_load import wait_http

        wait_http(base + "/readyz", 180)
        t0 = time.monotonic()
        end = t0 + (args.warmup_minutes + args.minutes) * 60
        next_sample = t0
        n = 0
        while time.monotonic() < end:
            get(base + "/v1/scene")
            if n % 20 == 0:
                jpeg = get(base + "/v1/frame.jpg")
                if n % 200 == 0:
                    get(base + "/v1/identify", jpeg)
            n += 1
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - t0, rss_kib(proc.pid)))
                next_sample += args.sample_seconds
            time.sleep(0.05)
        status = json.loads(get(base + "/v1/status"))
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(state, ignore_errors=True)
    warm = [s for s in samples if s[0] >= args.warmup_minutes * 60]
    start, final = warm[0][1], warm[-1][1]
    growth = (final - start) / start
    report = {
        "minutes": args.minutes,
        "rss_start_kib": start,
        "rss_end_kib": final,
        "rss_max_kib": max(s[1] for s in warm),
        "growth": round(growth, 4),
        "frames": status["camera"]["frames"] if status.get("camera") else None,
        "requests": n,
        "bar_met": growth <= BAR_GROWTH,
    }
    print(json.dumps(report, indent=2))
    return 0 if report["bar_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
