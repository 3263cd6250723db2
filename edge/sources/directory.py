"""dir:PATH — a folder of photos shown as a camera: cycled at `?fps=` (default 2), `?once` to stop."""

from __future__ import annotations

import logging
import time
from pathlib import Path

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

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class DirectorySource:
    """Reads the folder's images in name order; each read decodes one file (RGB)."""

    def __init__(self, uri: str, rest: str, settings: SourceSettings) -> None:
        self.uri = uri
        path, options = parse_options(rest)
        reject_unknown(options, {"fps", "once", "fast"}, "dir")
        if not path:
            raise SourceError("dir: source needs a folder", "dir:photos/")
        self.folder = Path(path)
        self.once = "once" in options
        fps = None if "fast" in options else option_float(options, "fps", 2.0)
        self.live = "fast" not in options
        self._pacer = Pacer(fps)
        self._files: list[Path] = []
        self._pos = 0
        self._frame_id = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"photo folder not found: {self.folder}")
        self._files = sorted(
            p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self._files:
            raise SourceError(f"no images in {self.folder}", "jpg, png, bmp, webp or tiff files")
        self._pos = 0
        logger.info("dir source: %d images in %s", len(self._files), self.folder)

    def read(self) -> Frame:
        if not self._files:
            raise SourceError(f"{self.uri} is not open")
        for _ in range(len(self._files)):
            if self._pos >= len(self._files):
                if self.once:
                    raise SourceExhaustedError(
                        f"all {len(self._files)} images of {self.folder} shown"
                    )
                self._pos = 0
            path = self._files[self._pos]
            self._pos += 1
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # honours EXIF orientation
            if bgr is None:
                logger.warning("dir source: skipping undecodable %s", path.name)
                continue
            self._pacer.wait()
            self._frame_id += 1
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
            return Frame(rgb, self._frame_id, time.monotonic(), self.uri)
        raise SourceError(f"no decodable image in {self.folder}", "check the files are images")

    def close(self) -> None:
        self._files = []
