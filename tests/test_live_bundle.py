"""The service on a real bundle (tests/bundle_factory: real ONNX models, index and catalogue,
random weights): Recognizer + live loop + API wired as `cardedge serve` wires them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.bundles.manifest import load_manifest
from edge.cli.serve import build_runtime, load_recognizer
from edge.config import load_settings
from tests.bundle_factory import factory_bundle  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.train]
os.environ.setdefault("OMP_NUM_THREADS", "1")


def test_serve_wiring_on_a_real_bundle(factory_bundle: Path) -> None:  # noqa: F811
    # given the real recognizer and a photo-folder camera showing the bundle's selftest scans
    settings = load_settings(
        None,
        runtime={"bundle": str(factory_bundle), "onnx_threads": 1},
        source={"uri": f"dir:{factory_bundle / 'selftest'}?fps=20"},
    )
    runtime = build_runtime(settings, load_recognizer(factory_bundle, settings))
    manifest = load_manifest(factory_bundle / "manifest.json")
    card_id = next(iter(manifest.selftest.values()))
    try:
        with TestClient(create_app(settings, runtime)) as client:
            deadline = time.monotonic() + 60
            while (
                runtime.live is not None and runtime.live.frames < 3 and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            # then the loop runs, and every endpoint answers from the real bundle
            status = client.get("/v1/status").json()
            assert status["bundle_id"] == manifest.bundle_id and status["ready"], status
            assert all(b["reason"].startswith("onnx") for b in status["backends"])
            assert status["camera"]["frames"] >= 3
            assert client.get("/v1/scene").json()["bundle_id"] == manifest.bundle_id
            assert client.get(f"/v1/cards/{card_id}").json()["card_id"] == card_id
            scan = next(iter(manifest.selftest))
            r = client.post("/v1/identify", content=(factory_bundle / scan).read_bytes())
            assert r.status_code == 200 and r.json()["bundle_id"] == manifest.bundle_id
            assert client.get("/v1/frame.jpg").headers["content-type"] == "image/jpeg"
    finally:
        runtime.close()
