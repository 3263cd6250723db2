"""`cardedge serve` (HTTP API + live loop under uvicorn, systemd notify/watchdog) and `bench-live`.

sd_notify is spoken directly over the NOTIFY_SOCKET datagram socket (no extra dependency):
READY=1 once the bundle is loaded and the server listens, WATCHDOG=1 every half WatchdogSec
only while the runtime reports itself alive (loop threads not hung), so systemd restarts a
wedged process but not one whose camera is merely unplugged (that shows on /readyz instead).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from edge.config import Settings, load_with_flags
from edge.live.runtime import RecognizerLike, Runtime
from edge.state import resolve_bundle

logger = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.001


class Notifier:
    """systemd's sd_notify protocol: one datagram per state change to $NOTIFY_SOCKET."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, state: str) -> bool:
        """Send `state` (e.g. "READY=1"); False when not under systemd or the send failed."""
        if not self.address:
            return False
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(addr)
                sock.sendall(state.encode())
            return True
        except OSError as e:
            logger.warning("sd_notify %s failed: %s", state, e)
            return False


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Half of systemd's WatchdogSec (from WATCHDOG_USEC), or None when no watchdog is set."""
    env = dict(os.environ) if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def notify_loop(
    runtime: Runtime, notifier: Notifier, is_started: Any, stop: threading.Event
) -> None:
    """READY once the server listens, then WATCHDOG pings while the runtime is alive."""
    while not stop.is_set() and not is_started():
        stop.wait(0.1)
    if stop.is_set():
        return
    notifier.send(f"READY=1\nSTATUS=serving bundle {runtime.current_bundle_id}")
    interval = watchdog_interval()
    while not stop.wait(interval or 5.0):
        if interval is None:
            continue
        if runtime.alive():
            notifier.send("WATCHDOG=1")
        else:
            logger.error("runtime not alive: withholding the watchdog ping")
            notifier.send("STATUS=live loop hung; waiting for the watchdog restart")


def load_recognizer(bundle: Path, settings: Settings) -> RecognizerLike:
    from edge.recognize.recognizer import Recognizer

    return Recognizer.from_bundle(bundle, settings.runtime, hailo=settings.hailo)


def build_runtime(settings: Settings, recognizer: RecognizerLike) -> Runtime:
    """A Runtime around `recognizer`, with a live loop when a source is configured."""
    from edge.live.loop import LiveLoop
    from edge.sources import open_source

    runtime = Runtime(settings, recognizer)
    uri = settings.source.uri
    if uri:
        open_source(uri, settings.source, bundle_dir=recognizer.bundle_dir)  # fail fast on a typo

        def factory() -> Any:
            rec = runtime.peek()
            return open_source(uri, settings.source, bundle_dir=rec.bundle_dir if rec else None)

        runtime.attach_live(LiveLoop(runtime, factory, uri=uri))
    return runtime


def _settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags > CARDEDGE_* variables > --config file > defaults."""
    return load_with_flags(
        args.config,
        {
            "--bundle": (("runtime", "bundle"), getattr(args, "bundle", None)),
            "--source": (("source", "uri"), getattr(args, "source", None)),
            "--host": (("server", "host"), getattr(args, "host", None)),
            "--port": (("server", "port"), getattr(args, "port", None)),
            "--state-dir": (("runtime", "state_dir"), getattr(args, "state_dir", None)),
        },
    )


def pipelined_settings(settings: Settings, *, live: bool | None = None) -> Settings:
    """Settings with ONNX Runtime threads split between the live loop's two inference stages.

    The detect and identify stages run their ONNX sessions at the same time; onnx_threads = 0
    ("all cores" per session) would then put twice as many busy threads as cores on the CPU.
    Measured on a 2-core host under load: detector forward 27 ms with 1 thread per session
    against 69-85 ms with 2. An explicit onnx_threads is kept.
    """
    from edge.live.stages import pipeline_onnx_threads

    if not (settings.source.uri if live is None else live) or settings.runtime.onnx_threads:
        return settings
    threads = pipeline_onnx_threads(settings.runtime.onnx_threads)
    logger.info("live loop: %d ONNX Runtime thread(s) per session", threads)
    runtime = settings.runtime.model_copy(update={"onnx_threads": threads})
    return settings.model_copy(update={"runtime": runtime})


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from edge.api.app import create_app
    from edge.state import seed_store

    settings = pipelined_settings(_settings_from_args(args))
    bundle, store = seed_store(settings)
    runtime = build_runtime(settings, load_recognizer(bundle, settings))
    app = create_app(settings, runtime, store=store)
    # The loop threads hold the GIL in bursts; a shorter switch interval (default 5 ms) keeps
    # the event loop's latency for cheap reads like /v1/scene in the low milliseconds.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            log_level=args.log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    notifier, stop = Notifier(), threading.Event()
    thread = threading.Thread(
        target=notify_loop,
        args=(runtime, notifier, lambda: server.started, stop),
        name="sd-notify",
        daemon=True,
    )
    thread.start()
    logger.info("listening on http://%s:%d", settings.server.host, settings.server.port)
    try:
        server.run()
    finally:
        stop.set()
        notifier.send("STOPPING=1")
        runtime.close()
    return 0


def run_bench_live(args: argparse.Namespace) -> int:
    from edge.live.bench import bench_live
    from edge.sources import open_source

    settings = _settings_from_args(args)
    if getattr(args, "threads", None) is not None:  # `cardedge bench --live --threads N`
        runtime = settings.runtime.model_copy(update={"onnx_threads": args.threads})
        settings = settings.model_copy(update={"runtime": runtime})
    settings = pipelined_settings(settings, live=True)
    bundle = resolve_bundle(settings)
    recognizer = load_recognizer(bundle, settings)
    try:
        uri = settings.source.uri or "synthetic:?fast"
        source = open_source(uri, settings.source, bundle_dir=bundle)
        report = bench_live(recognizer, source, args.seconds)
    finally:
        recognizer.close()
    report.update(bundle_id=recognizer.bundle_id, source=uri, backends=dict(recognizer.backends))
    print(json.dumps(report, indent=2))
    return 0 if report["bar_met"] else 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, help="bundle directory (default: the current one)")
    p.add_argument("--source", help="frame source URI: picamera2:, v4l2:0, synthetic:, ...")
    p.add_argument("--config", type=Path, help="TOML or YAML config file")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` and `bench-live` to the cardedge command."""
    p = subparsers.add_parser("serve", help="serve the HTTP API (and the live camera loop)")
    _common(p)
    p.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 opens the LAN)")
    p.add_argument("--port", type=int, help="TCP port (default 8080)")
    p.add_argument(
        "--state-dir", type=Path, help="bundle store and feedback (default: runtime.state_dir)"
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run_serve)
    b = subparsers.add_parser("bench-live", help="live fps vs the sequential forward bound")
    _common(b)
    b.add_argument("--seconds", type=float, default=20.0, help="measured run length")
    b.set_defaults(func=run_bench_live)
