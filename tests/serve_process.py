"""`cardedge serve` as a real process for tests and benchmarks: the installed console script, a
real config file and environment, a private state directory, a free port.

    with ServeProcess(tmp, bundle=models/demo, token="t") as server:
        server.get("/v1/status")
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def console_script(name: str) -> Path:
    """The installed entry point (.venv/bin/NAME next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"console script {name!r} is not installed (pip install -e .)")
    return Path(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A TOML config file from {section: {key: value}}."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without CARDEDGE_* (the developer's shell must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDEDGE_")}
    env.update(OPENBLAS_NUM_THREADS="1", **extra)
    return env


class ServeProcess:
    """One `cardedge serve` subprocess; `start()` returns once /readyz answers 200."""

    def __init__(
        self,
        work: Path,
        *,
        bundle: Path | None,
        token: str | None = None,
        source: str | None = None,
        config: dict[str, dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.state_dir = work / "state"
        self.port = free_port()
        sections: dict[str, dict[str, Any]] = {
            "runtime": {"state_dir": self.state_dir, "onnx_threads": 1, "backend": "onnx"},
            "server": {"host": "127.0.0.1"},
        }
        if token is not None:
            sections["server"]["token"] = token
        for name, values in (config or {}).items():
            sections.setdefault(name, {}).update(values)
        self.config = write_config(work / "cardedge.toml", sections)
        self.args = [str(console_script("cardedge")), "serve", "--config", str(self.config)]
        self.args += ["--port", str(self.port), "--log-level", "warning"]
        if bundle is not None:
            self.args += ["--bundle", str(bundle)]
        if source is not None:
            self.args += ["--source", source]
        self.args += extra_args or []
        self.env = clean_env(**(env or {}))
        self.token = token
        self.log = work / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> ServeProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cardedge serve exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.request("GET", "/readyz", timeout=2.0)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"cardedge serve not ready in {timeout_s} s:\n{self.logs()}")

    def stop(self) -> int | None:
        """SIGTERM (what systemd sends), then SIGKILL after 20 s; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 120.0,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, body = self.request(method, path, **kw)
        return status, json.loads(body)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
