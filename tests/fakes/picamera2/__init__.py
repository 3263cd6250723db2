"""A test double of picamera2 (Raspberry Pi OS package python3-picamera2; API documented in
"The Picamera2 Library" manual, Raspberry Pi Ltd). It imitates what edge.sources.picamera2 uses:
Picamera2(), create_video_configuration(main=, lores=, buffer_count=, queue=, controls=),
configure, camera_configuration, start, capture_array(name), stop, close, and libcamera's
memory order: an "RGB888" array is B,G,R per pixel, "BGR888" is R,G,B, "XRGB8888" is B,G,R,X.
Tests set `Picamera2.scene` (an RGB image) to what the sensor sees; `Picamera2.busy` makes
construction fail like a camera held by another process.
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np


class Picamera2:
    scene: ClassVar[np.ndarray] = np.zeros((480, 640, 3), np.uint8)
    busy: ClassVar[bool] = False
    instances: ClassVar[list[Picamera2]] = []

    def __init__(self) -> None:
        if Picamera2.busy:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        Picamera2.instances.append(self)

    def create_video_configuration(
        self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        main = dict(main or {"size": (640, 480), "format": "XBGR8888"})
        cfg: dict[str, Any] = {"main": main, "lores": dict(lores) if lores else None}
        cfg.update(kw)
        return cfg

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def camera_configuration(self) -> dict[str, Any]:
        assert self.config is not None, "configure() first"
        return self.config

    def start(self) -> None:
        assert self.config is not None
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        assert self.started and not self.closed, "camera not started"
        stream = self.config[name] if self.config else None
        if stream is None:
            raise RuntimeError(f"stream {name} is not configured")
        w, h = stream["size"]
        rgb = cv2.resize(Picamera2.scene, (w, h), interpolation=cv2.INTER_AREA)
        fmt = stream["format"]
        if fmt == "BGR888":
            return rgb.copy()
        if fmt == "RGB888":
            return np.ascontiguousarray(rgb[..., ::-1])
        if fmt == "XRGB8888":
            return np.concatenate([rgb[..., ::-1], np.full((h, w, 1), 255, np.uint8)], axis=2)
        if fmt == "XBGR8888":
            return np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
        raise RuntimeError(f"fake supports no format {fmt}")

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True
