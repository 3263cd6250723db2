"""Push one bundle to many devices: concurrent uploads to POST /v1/bundles with progress and
retries with backoff, then GET /v1/status on each device until it reports the new bundle_id.

Standard library HTTP only (http.client), so a laptop with just the runtime installed can push.
The token comes from CARDEDGE_TOKEN or a token file.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edge.bundles.archive import iter_source, pack, safe_name
from edge.bundles.manifest import MANIFEST_NAME, Manifest, load_manifest
from edge.errors import BundleError, ConfigError

logger = logging.getLogger(__name__)

TOKEN_ENV = "CARDEDGE_TOKEN"
_CHUNK = 256 * 1024
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
Progress = Callable[[str, int, int], None]  # (device name, bytes sent, total bytes)


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    url: str  # base URL, e.g. http://pi-01.local:8080


@dataclass(frozen=True, slots=True)
class PushOptions:
    retries: int = 3  # extra attempts after the first, for connection errors and 5xx/429
    backoff_s: float = 1.0  # first wait; doubles each retry, plus up to 25 % jitter
    timeout_s: float = 600.0  # per request: install + self-test on a Pi takes a while
    confirm_timeout_s: float = 30.0  # how long to poll /v1/status for the new bundle_id
    parallel: int = 8
    activate: bool = True


@dataclass(frozen=True, slots=True)
class PushResult:
    device: Device
    ok: bool
    reported_bundle_id: str | None
    attempts: int
    seconds: float
    error: str | None = None


class _Retryable(Exception):
    """A failure worth another attempt (connection trouble, 5xx, 429)."""


class _Fatal(Exception):
    """A failure another attempt will not fix (401, 403, 413, 422, ...)."""


def read_devices_file(path: Path) -> list[Device]:
    """One device per line: `URL [NAME]`; blank lines and `#` comments ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read devices file {path}: {e.strerror}") from e
    devices = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        devices.append(
            device_from(fields[0], fields[1] if len(fields) > 1 else None, where=f"{path}:{number}")
        )
    return devices


def device_from(url: str, name: str | None = None, *, where: str = "--device") -> Device:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} is not an http(s) URL", "e.g. http://pi-01.local:8080")
    return Device(name or parts.netloc, url.rstrip("/"))


def resolve_token(token_file: Path | None) -> str | None:
    """--token-file wins over $CARDEDGE_TOKEN."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"cannot read token file {token_file}: {e.strerror}") from e
        return token or None
    return os.environ.get(TOKEN_ENV) or None


def archive_manifest(source: Path) -> Manifest:
    """The manifest of a bundle directory or archive (streams the archive until it is found)."""
    if source.is_dir():
        return load_manifest(source / MANIFEST_NAME)
    for member in iter_source(source):
        if safe_name(member.name) == MANIFEST_NAME and member.stream is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / MANIFEST_NAME
                path.write_bytes(member.stream.read(16 * 1024 * 1024))
                return load_manifest(path)
    raise BundleError(f"{source.name} holds no manifest.json")


def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname or "", parts.port, timeout=timeout_s), parts.path.rstrip("/")


def _error_text(status: int, body: bytes) -> str:
    try:
        data = json.loads(body)
        text = f"{data.get('code')}: {data.get('message')}"
        return f"HTTP {status} {text}" + (f" (hint: {data['hint']})" if data.get("hint") else "")
    except (ValueError, AttributeError):
        return f"HTTP {status} {body[:200].decode('utf-8', 'replace')}"


def upload(
    device: Device, archive: Path, token: str | None, opts: PushOptions, progress: Progress
) -> dict[str, object]:
    """One POST of the archive as the request body; classify failures as retryable or fatal."""
    total = archive.stat().st_size
    conn, prefix = _connection(device.url, opts.timeout_s)
    query = "" if opts.activate else "?activate=false"
    try:
        conn.putrequest("POST", f"{prefix}/v1/bundles{query}")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(total))
        if token:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        sent = 0
        with archive.open("rb") as f:
            while chunk := f.read(_CHUNK):
                conn.send(chunk)
                sent += len(chunk)
                progress(device.name, sent, total)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise _Retryable(f"{type(e).__name__}: {e}") from e
    finally:
        conn.close()
    if response.status in _RETRY_STATUSES:
        raise _Retryable(_error_text(response.status, body))
    if response.status != 200:
        raise _Fatal(_error_text(response.status, body))
    data: dict[str, object] = json.loads(body)
    return data


def reported_bundle_id(device: Device, timeout_s: float) -> str | None:
    """What GET /v1/status says the device serves."""
    conn, prefix = _connection(device.url, timeout_s)
    try:
        conn.request("GET", f"{prefix}/v1/status")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise _Retryable(_error_text(response.status, body))
    value = json.loads(body).get("bundle_id")
    return str(value) if value is not None else None


def _confirm(device: Device, bundle_id: str, opts: PushOptions) -> str | None:
    """Poll /v1/status until it reports bundle_id or the confirm timeout passes."""
    deadline = time.monotonic() + opts.confirm_timeout_s
    reported: str | None = None
    while True:
        try:
            reported = reported_bundle_id(device, min(opts.timeout_s, 10.0))
        except (_Retryable, OSError, http.client.HTTPException, ValueError) as e:
            logger.debug("%s: status not readable yet: %s", device.name, e)
        if reported == bundle_id or time.monotonic() >= deadline:
            return reported
        time.sleep(0.5)


def push_one(
    device: Device,
    archive: Path,
    bundle_id: str,
    token: str | None,
    opts: PushOptions,
    progress: Progress,
) -> PushResult:
    """Upload with retries and backoff, then confirm the device serves bundle_id."""
    t0 = time.monotonic()
    error: str | None = None
    for attempt in range(1, opts.retries + 2):
        try:
            upload(device, archive, token, opts, progress)
        except _Fatal as e:
            return PushResult(device, False, None, attempt, time.monotonic() - t0, str(e))
        except _Retryable as e:
            error = str(e)
            if attempt <= opts.retries:
                wait = opts.backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 4)
                logger.warning(
                    "%s: attempt %d failed (%s); retrying in %.1fs", device.name, attempt, e, wait
                )
                time.sleep(wait)
            continue
        if not opts.activate:
            return PushResult(device, True, None, attempt, time.monotonic() - t0)
        reported = _confirm(device, bundle_id, opts)
        ok = reported == bundle_id
        why = None if ok else f"device reports bundle {reported!r} after the upload"
        return PushResult(device, ok, reported, attempt, time.monotonic() - t0, why)
    return PushResult(device, False, None, opts.retries + 1, time.monotonic() - t0, error)


class ProgressPrinter:
    """Thread-safe progress lines, one per device each 25 %."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}

    def __call__(self, name: str, sent: int, total: int) -> None:
        step = 100 if total == 0 else sent * 4 // total * 25
        with self._lock:
            if self._last.get(name, -1) >= step:
                return
            self._last[name] = step
        self._emit(f"{name}: uploaded {step}% of {total / 1e6:.1f} MB")


def push(
    source: Path,
    devices: Sequence[Device],
    token: str | None,
    opts: PushOptions,
    progress: Progress,
) -> tuple[str, list[PushResult]]:
    """Push a bundle (directory: packed to .tar.zst first, or an archive) to every device at once."""
    if not devices:
        raise ConfigError("no devices to push to", "give --device URL or --devices-file FILE")
    bundle_id = archive_manifest(source).bundle_id
    with tempfile.TemporaryDirectory(prefix="cardedge-push-") as tmp:
        archive = (
            pack(source, Path(tmp) / f"{bundle_id}.tar.zst", "zst") if source.is_dir() else source
        )
        with ThreadPoolExecutor(max_workers=max(1, opts.parallel)) as pool:
            futures = [
                pool.submit(push_one, d, archive, bundle_id, token, opts, progress) for d in devices
            ]
            results = [f.result() for f in futures]
    return bundle_id, results


def format_table(bundle_id: str, results: Sequence[PushResult]) -> str:
    """The per-device result table the CLI prints."""
    rows = [("DEVICE", "URL", "RESULT", "REPORTS", "TRIES", "SECONDS", "ERROR")]
    for r in results:
        rows.append(
            (
                r.device.name,
                r.device.url,
                "ok" if r.ok else "FAILED",
                r.reported_bundle_id or "-",
                str(r.attempts),
                f"{r.seconds:.1f}",
                r.error or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    ok = sum(r.ok for r in results)
    lines.append(f"bundle {bundle_id}: {ok}/{len(results)} devices ok")
    return "\n".join(line.rstrip() for line in lines)
