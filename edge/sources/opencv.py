"""OpenCV sources: USB/V4L2 cameras (v4l2:N), network cameras (rtsp://) and video files (file:PATH).

OpenCV hands out BGR; frames are converted to RGB here, once. A video file is paced at its own
frame rate unless `?fast` is given, and loops when `?loop` is given (handy for demos).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import SourceSettings
from edge.errors import SourceError
from edge.sources.base import (
    Pacer,
    SourceExhaustedError,
    option_float,
    parse_options,
    reject_unknown,
)
from edge.types import Frame

logger = logging.getLogger(__name__)


class OpenCVSource:
    """One cv2.VideoCapture, opened once and released in `close`."""

    def __init__(self, uri: str, scheme: str, rest: str, settings: SourceSettings) -> None:
        self.uri = uri
        self.scheme = scheme
        self.settings = settings
        self._cap: Any = None
        self._lock = threading.Lock()
        self._frame_id = 0
        self.fast = False
        self.loop = False
        self._fps_override: float | None = None
        if scheme == "rtsp":
            self.target: str | int = rest
        elif scheme == "v4l2":
            try:
                self.target = int(rest)
            except ValueError as e:
                raise SourceError(
                    f"v4l2 source needs a camera index, got {rest!r}", "v4l2:0"
                ) from e
        else:
            path, options = parse_options(rest)
            reject_unknown(options, {"fast", "loop", "fps"}, "file")
            self.fast = "fast" in options
            self.loop = "loop" in options
            self._fps_override = option_float(options, "fps", None)
            if not path:
                raise SourceError("file: source needs a path", "file:video.mp4")
            self.target = path
        self.live = not self.fast
        self._pacer = Pacer(None)

    def open(self) -> None:
        """Open the capture; a camera gets the configured size and rate requested."""
        if (
            isinstance(self.target, str)
            and self.scheme == "file"
            and not Path(self.target).is_file()
        ):
            raise SourceError(f"video file not found: {self.target}")
        backend = cv2.CAP_V4L2 if self.scheme == "v4l2" else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.target, backend)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.uri}", "check the device or URL is reachable")
        if self.scheme == "v4l2":
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.settings.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.settings.height)
            cap.set(cv2.CAP_PROP_FPS, self.settings.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queued stale one
        fps: float | None = None
        if self.scheme == "file" and not self.fast:
            fps = self._fps_override or float(cap.get(cv2.CAP_PROP_FPS)) or self.settings.fps
        self._pacer = Pacer(fps)
        with self._lock:
            self._cap = cap
        logger.info("opened %s (pacing %s fps)", self.uri, fps or "none")

    def read(self) -> Frame:
        """Grab, decode and convert the next frame to RGB."""
        with self._lock:
            cap = self._cap
        if cap is None:
            raise SourceError(f"{self.uri} is not open")
        self._pacer.wait()
        ok, bgr = cap.read()
        if not ok and self.scheme == "file" and self.loop:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = cap.read()
        if not ok or bgr is None:
            if self.scheme == "file":
                raise SourceExhaustedError(f"end of video {self.target}")
            raise SourceError(f"{self.uri} stopped delivering frames", "camera unplugged?")
        self._frame_id += 1
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return Frame(
            image=rgb, frame_id=self._frame_id, t_capture=time.monotonic(), source=self.uri
        )

    def close(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
