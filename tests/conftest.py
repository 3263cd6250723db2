"""Shared pytest fixtures. Hardware-marked tests skip themselves when the hardware is absent."""

from __future__ import annotations

import importlib.util
import os
import tempfile

import pytest

from tests.bundle_factory import bundle_copy, factory_bundle  # noqa: F401  (project-wide fixtures)

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Apps built in-process probe their state directory: keep it out of /var/lib and the home folder.
os.environ.setdefault(
    "CARDEDGE_RUNTIME__STATE_DIR", tempfile.mkdtemp(prefix="cardedge-test-state-")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_hailo = importlib.util.find_spec("hailo_platform") is not None and os.path.exists(
        "/dev/hailo0"
    )
    has_picamera = importlib.util.find_spec("picamera2") is not None
    for item in items:
        if "hailo" in item.keywords and not has_hailo:
            item.add_marker(pytest.mark.skip(reason="no Hailo device / hailo_platform here"))
        if "picamera" in item.keywords and not has_picamera:
            item.add_marker(pytest.mark.skip(reason="no picamera2 / Pi camera here"))
