"""picamera2: — the Raspberry Pi camera through libcamera's Python binding (apt: python3-picamera2).

Opened once, closed in `close` (a crashed holder leaves the camera busy; repeated construction
leaks). libcamera format names describe the word, not the bytes: "RGB888" arrays are B,G,R in
memory and "BGR888" arrays are R,G,B (see the hardware notes). Frames become RGB here, once.
Options: `?stream=lores` reads the low-resolution stream (sized `?lores=WxH`, default 640x480)
instead of the main one, for a detector-sized frame without a resize.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import SourceSettings
from edge.errors import SourceError
from edge.sources.base import parse_options, reject_unknown
from edge.types import Frame, ImageRGB

logger = logging.getLogger(__name__)

MAIN_FORMAT = "BGR888"  # R,G,B bytes in memory: no conversion needed


def to_rgb(array: npt.NDArray[np.uint8], fmt: str) -> ImageRGB:
    """A picamera2 array in libcamera format `fmt` -> H x W x 3 RGB uint8 (one copy at most)."""
    if fmt == "BGR888":
        rgb = array[..., :3]
    elif fmt == "RGB888":
        rgb = array[..., 2::-1]
    elif fmt == "XBGR8888":
        rgb = array[..., :3]
    elif fmt == "XRGB8888":
        rgb = array[..., 2::-1]
    elif fmt in ("YUV420", "YUV420p"):
        rgb = np.asarray(cv2.cvtColor(array, cv2.COLOR_YUV2RGB_I420), dtype=np.uint8)
    else:
        raise SourceError(f"unsupported camera pixel format {fmt!r}", "use BGR888 or RGB888")
    return np.ascontiguousarray(rgb)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise SourceError(f"bad size {text!r}", "e.g. lores=640x480") from e
    return w, h


class Picamera2Source:
    """Captures with `capture_array` on a queue-less video configuration (no stale buffers)."""

    def __init__(self, uri: str, rest: str, settings: SourceSettings) -> None:
        self.uri = uri
        self.live = True
        self.settings = settings
        _, options = parse_options(rest)
        reject_unknown(options, {"stream", "lores"}, "picamera2")
        self.stream = options.get("stream", "main")
        if self.stream not in ("main", "lores"):
            raise SourceError(f"picamera2 stream must be main or lores, got {self.stream!r}")
        self.lores_size = _parse_size(options["lores"]) if "lores" in options else (640, 480)
        self._cam: Any = None
        self._format = MAIN_FORMAT
        self._lock = threading.Lock()
        self._frame_id = 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as e:
            raise SourceError(
                "picamera2 is not installed",
                "on Raspberry Pi OS: sudo apt install python3-picamera2",
            ) from e
        try:
            cam = Picamera2()
        except Exception as e:  # libcamera raises RuntimeError/IndexError when absent or busy
            raise SourceError(
                f"cannot open the Pi camera: {e}", "is another process using it?"
            ) from e
        try:
            self._configure(cam)
            cam.start()
        except Exception as e:
            cam.close()
            raise SourceError(f"cannot start the Pi camera: {e}") from e
        with self._lock:
            self._cam = cam

    def _configure(self, cam: Any) -> None:
        main = {"size": (self.settings.width, self.settings.height), "format": MAIN_FORMAT}
        kwargs: dict[str, Any] = {
            "main": main,
            "buffer_count": 4,
            "queue": False,  # return the next frame, never an older queued one
            "controls": {"FrameRate": self.settings.fps},
        }
        if self.stream == "lores":
            # Pi 5 ISPs can emit RGB on lores; older ones give YUV420, converted in to_rgb.
            kwargs["lores"] = {"size": self.lores_size, "format": MAIN_FORMAT}
        config = cam.create_video_configuration(**kwargs)
        cam.configure(config)
        stream_cfg = cam.camera_configuration()[self.stream]
        self._format = str(stream_cfg.get("format", MAIN_FORMAT))
        logger.info("picamera2 %s stream %s %s", self.stream, stream_cfg.get("size"), self._format)

    def read(self) -> Frame:
        with self._lock:
            cam = self._cam
        if cam is None:
            raise SourceError(f"{self.uri} is not open")
        try:
            array = cam.capture_array(self.stream)
        except Exception as e:
            raise SourceError(f"Pi camera capture failed: {e}", "check the ribbon cable") from e
        self._frame_id += 1
        rgb = to_rgb(np.asarray(array, dtype=np.uint8), self._format)
        return Frame(rgb, self._frame_id, time.monotonic(), self.uri)

    def close(self) -> None:
        with self._lock:
            cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            cam.stop()
        finally:
            cam.close()
