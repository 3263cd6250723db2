"""Hot swaps under load: N load threads hit POST /v1/identify and GET /v1/scene on loopback while
bundles are swapped back and forth through the API of a real `cardedge serve` process (the
installed console script, started with a config file and its own state directory); every request
must succeed.

    python benchmarks/swap_under_load.py [--bundle DIR] [--swaps 20] [--clients 4] [--source URI]

--bundle defaults to models/demo, else the tests' tiny factory bundle is built (needs the [train]
extra). The second bundle is the same content under another bundle_id (a "rebranded" copy), so a
swap costs a full load + warm-up + self-test. Prints a JSON summary; exits 1 on any failed request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("swap_under_load")
TOKEN = "bench-token"


@dataclass
class LoadStats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"identify": [], "scene": []})
    failures: list[str] = field(default_factory=list)
    bundles_seen: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, ms: float, ok: bool, detail: str, bundle_id: str | None) -> None:
        with self.lock:
            self.latencies[kind].append(ms)
            if not ok:
                self.failures.append(f"{kind}: {detail}")
            if bundle_id:
                self.bundles_seen[bundle_id] += 1


def _bundle(arg: Path | None, work: Path) -> Path:
    if arg is not None:
        return arg
    demo = REPO / "models" / "demo"
    if (demo / "manifest.json").is_file():
        return demo
    from tests.bundle_factory import build_test_bundle

    logger.info("no demo bundle: building the tests' factory bundle")
    return build_test_bundle(work / "factory", bundle_id="bench-a")


def rebrand(src: Path, dst: Path, bundle_id: str) -> Path:
    """Same files, another bundle_id (the files table is unchanged, so it still verifies)."""
    from edge.bundles.files import write_manifest
    from edge.bundles.manifest import load_manifest

    shutil.copytree(src, dst)
    (dst / "manifest.sig").unlink(missing_ok=True)
    manifest = load_manifest(dst / "manifest.json")
    write_manifest(dst, manifest.model_copy(update={"bundle_id": bundle_id}))
    return dst


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def load_worker(port: int, image: bytes, stats: LoadStats, stop: threading.Event) -> None:
    """Alternate identify and scene requests on one keep-alive connection until told to stop."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "image/jpeg"}
    i = 0
    while not stop.is_set():
        kind = "identify" if i % 2 == 0 else "scene"
        i += 1
        t0 = time.perf_counter()
        try:
            if kind == "identify":
                conn.request("POST", "/v1/identify", body=image, headers=headers)
            else:
                conn.request("GET", "/v1/scene")
            response = conn.getresponse()
            body = response.read()
            ok = response.status == 200
            bundle_id = json.loads(body).get("bundle_id") if ok and kind == "identify" else None
            stats.record(
                kind,
                (time.perf_counter() - t0) * 1e3,
                ok,
                f"HTTP {response.status} {body[:200]!r}",
                bundle_id,
            )
        except (OSError, http.client.HTTPException, ValueError) as e:
            stats.record(kind, (time.perf_counter() - t0) * 1e3, False, repr(e), None)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.close()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    q = statistics.quantiles(values, n=100) if len(values) > 1 else [values[0]] * 99
    return {
        "n": len(values),
        "p50_ms": round(q[49], 1),
        "p95_ms": round(q[94], 1),
        "max_ms": round(max(values), 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the real `cardedge serve` (installed console script, config file, state directory
    seeded from bundle A), put load on it, upload B over the API, then swap back and forth."""
    from edge.bundles.archive import pack
    from edge.bundles.manifest import load_manifest
    from tests.serve_process import ServeProcess

    work = Path(tempfile.mkdtemp(prefix="swap-bench-"))
    try:
        src = _bundle(args.bundle, work)
        a = rebrand(src, work / "bundle-a", "swap-a")
        b = rebrand(src, work / "bundle-b", "swap-b")
        config: dict[str, dict[str, Any]] = {"runtime": {"onnx_threads": args.threads}}
        if args.no_selftest:
            config["bundles"] = {"selftest": False}
        server = ServeProcess(
            work / "serve", bundle=a, token=TOKEN, source=args.source, config=config
        ).start()
        port = server.port
        auth = server.auth()
        selftest = load_manifest(a / "manifest.json").selftest
        image = (a / next(iter(selftest))).read_bytes()

        stats, stop = LoadStats(), threading.Event()
        workers = [
            threading.Thread(target=load_worker, args=(port, image, stats, stop), daemon=True)
            for _ in range(args.clients)
        ]
        for w in workers:
            w.start()
        time.sleep(1.0)  # load running before the first swap
        swap_ms: list[float] = []
        swap_errors: list[str] = []
        archive = pack(b, work / "swap-b.tar.zst", "zst")
        t0 = time.perf_counter()
        status, body = _request(
            port,
            "POST",
            "/v1/bundles",
            archive.read_bytes(),
            {**auth, "Content-Type": "application/octet-stream"},
        )
        swap_ms.append((time.perf_counter() - t0) * 1e3)
        if status != 200:
            swap_errors.append(f"upload: HTTP {status} {body[:300]!r}")
        for i in range(1, args.swaps):
            target = "swap-a" if i % 2 == 1 else "swap-b"
            t0 = time.perf_counter()
            status, body = _request(port, "POST", f"/v1/bundles/{target}/activate", b"", auth)
            swap_ms.append((time.perf_counter() - t0) * 1e3)
            if status != 200:
                swap_errors.append(f"activate {target}: HTTP {status} {body[:300]!r}")
            time.sleep(args.pause)
        time.sleep(1.0)  # load running after the last swap
        stop.set()
        for w in workers:
            w.join(timeout=130)
        exit_code = server.stop()
        return {
            "bundle": src.name,
            "selftest": not args.no_selftest,
            "swaps": args.swaps,
            "swap_failures": swap_errors,
            "swap_ms": _percentiles(swap_ms),
            "clients": args.clients,
            "identify": _percentiles(stats.latencies["identify"]),
            "scene": _percentiles(stats.latencies["scene"]),
            "failed_requests": len(stats.failures),
            "failures_sample": stats.failures[:5],
            "responses_per_bundle": dict(stats.bundles_seen),
            "server_exit_code": exit_code,
            "cpu_count": os.cpu_count(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--bundle", type=Path, help="bundle directory (default: models/demo or a built test bundle)"
    )
    p.add_argument("--swaps", type=int, default=20)
    p.add_argument("--clients", type=int, default=4, help="concurrent load threads")
    p.add_argument("--pause", type=float, default=0.2, help="seconds between swaps")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model")
    p.add_argument("--source", help="live source for /v1/scene, e.g. synthetic: (default: none)")
    p.add_argument(
        "--no-selftest", action="store_true", help="bundles.selftest = false on the server"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = run(args)
    print(json.dumps(summary, indent=2))
    ok = summary["failed_requests"] == 0 and not summary["swap_failures"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
