"""A test double of a camera (the edge.sources.base.FrameSource protocol): frames from a function
of the frame number, with switches that imitate an unplugged camera (`unplugged`: open and read
raise SourceError) and a hung driver (`hang`: read blocks until released or closed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from edge.errors import SourceError
from edge.types import Frame


class FakeCamera:
    def __init__(self, frame_fn: Callable[[int], np.ndarray], fps: float | None = 100.0) -> None:
        self.uri = "fake:camera"
        self.frame_fn = frame_fn
        self.period = 1.0 / fps if fps else 0.0
        self.live = True  # drops are what the loop's tests look at
        self.unplugged = False
        self.hang = threading.Event()  # set -> reads block
        self._released = threading.Event()
        self.opened = 0
        self.closed = 0
        self.reads = 0
        self.is_open = False

    def open(self) -> None:
        if self.unplugged:
            raise SourceError("fake camera is unplugged")
        self.opened += 1
        self.is_open = True
        self._released.clear()

    def read(self) -> Frame:
        if self.period:
            time.sleep(self.period)
        while self.hang.is_set() and not self._released.is_set():
            time.sleep(0.01)
        if self.unplugged or not self.is_open:
            raise SourceError("fake camera stopped delivering frames")
        self.reads += 1
        return Frame(self.frame_fn(self.reads), self.reads, time.monotonic(), self.uri)

    def close(self) -> None:
        self.closed += 1
        self.is_open = False
        self._released.set()
