"""Bounded load on GET /v1/scene from a second process while the live loop runs.

Bar (issue 5): >= 2,000 requests/s with p99 <= 5 ms on loopback. Either point it at a running
server (--url) or let it start `cardedge serve` itself (--bundle, --source). The client is a raw
asyncio HTTP/1.1 keep-alive client (no HTTP library overhead on the measuring side).

    python benchmarks/scene_load.py --bundle models/demo --source synthetic: --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

BAR_RPS = 2000.0
BAR_P99_MS = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} not ready after {timeout:.0f} s")


@contextmanager
def served(bundle: Path, source: str, port: int) -> Iterator[str]:
    """`cardedge serve` as a child process; yields its base URL."""
    state = tempfile.mkdtemp(prefix="scene-load-state-")
    cmd = [
        sys.executable,
        "-m",
        "edge.cli.main",
        "serve",
        "--bundle",
        str(bundle),
        "--source",
        source,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        # a private store: the run must neither serve nor touch the user's installed bundles
        "--state-dir",
        state,
    ]
    proc = subprocess.Popen(cmd)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", 120)
        wait_http(base + "/readyz", 60)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(state, ignore_errors=True)


async def _worker(
    host: str, port: int, path: str, end: float, budget: list[int], lat: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    try:
        while time.perf_counter() < end and budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def load(url: str, seconds: float, connections: int, max_requests: int) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/v1/scene"
    latencies: list[float] = []
    budget = [max_requests]
    t0 = time.perf_counter()
    end = t0 + seconds
    await asyncio.gather(
        *(_worker(host, port, path, end, budget, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - t0
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1000 if n else float("nan")

    return {
        "requests": n,
        "seconds": round(elapsed, 2),
        "rps": round(n / elapsed, 1),
        "p50_ms": round(pct(0.50), 3),
        "p99_ms": round(pct(0.99), 3),
        "max_ms": round(pct(1.0), 3),
    }


def loop_fps(base: str) -> float | None:
    with urllib.request.urlopen(base + "/v1/status", timeout=5) as r:
        camera = json.load(r).get("camera")
    return camera["fps"] if camera else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="base URL of a running server (else one is started)")
    ap.add_argument("--bundle", type=Path, help="bundle for the started server")
    ap.add_argument("--source", default="synthetic:", help="source URI for the started server")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=2, help="keep-alive connections")
    ap.add_argument("--max-requests", type=int, default=200_000, help="hard bound on requests")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    def run(base: str) -> dict[str, object]:
        asyncio.run(load(base + "/v1/scene", 1.0, args.connections, 2000))  # warm-up
        fps_before = loop_fps(base)
        result: dict[str, object] = dict(
            asyncio.run(load(base + "/v1/scene", args.seconds, args.connections, args.max_requests))
        )
        result.update(
            loop_fps_before=fps_before, loop_fps_during=loop_fps(base), connections=args.connections
        )
        result["bar_met"] = result["rps"] >= BAR_RPS and result["p99_ms"] <= BAR_P99_MS  # type: ignore[operator]
        return result

    if args.url:
        report = run(args.url.rstrip("/"))
    else:
        if args.bundle is None:
            ap.error("--bundle is needed when no --url is given")
        with served(args.bundle, args.source, free_port()) as base:
            report = run(base)
    print(json.dumps(report, indent=2))
    return 0 if report["bar_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
