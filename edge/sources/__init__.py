"""Frame sources, chosen by an explicit URI scheme. An unknown scheme is an error, never a guess.

| URI                         | module      | what                                            |
|-----------------------------|-------------|-------------------------------------------------|
| picamera2:[?stream=lores]   | picamera2   | Pi camera via libcamera                         |
| v4l2:0                      | opencv      | USB / V4L2 camera by index                      |
| rtsp://host/path            | opencv      | network camera                                  |
| file:video.mp4[?fast&loop]  | opencv      | video file, paced at its own rate or as fast as possible |
| dir:photos/[?fps=2&once]    | directory   | a folder of photos, cycled                      |
| synthetic:[DIR][?fast]      | synthetic   | moving synthetic card scenes                    |
| synthetic:DIR?deck[&pace=20] | deck       | a pile scanned: cards laid down one at a time   |

Modules import their heavy libraries (picamera2, training.synth) only when opened.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.config import SourceSettings
from edge.errors import SourceError
from edge.sources.base import FrameSource, SourceExhaustedError, parse_options

logger = logging.getLogger(__name__)

SCHEMES = ("picamera2", "v4l2", "rtsp", "file", "dir", "synthetic")

__all__ = ["SCHEMES", "FrameSource", "SourceExhaustedError", "open_source", "split_uri"]


def split_uri(uri: str) -> tuple[str, str]:
    """'v4l2:0' -> ('v4l2', '0'); 'rtsp://h/p' -> ('rtsp', 'rtsp://h/p'). Raises on no scheme."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme not in SCHEMES:
        raise SourceError(
            f"unknown source scheme in {uri!r}",
            f"use one of: {', '.join(s + ':' for s in SCHEMES)} (e.g. v4l2:0, file:video.mp4)",
        )
    return scheme, (uri if scheme == "rtsp" else rest)


def open_source(
    uri: str, settings: SourceSettings, *, bundle_dir: Path | None = None
) -> FrameSource:
    """Build (not yet open) the source named by `uri`. `bundle_dir` feeds bare `synthetic:`."""
    scheme, rest = split_uri(uri)
    source: FrameSource
    if scheme == "picamera2":
        from edge.sources.picamera2 import Picamera2Source

        source = Picamera2Source(uri, rest, settings)
    elif scheme in ("v4l2", "rtsp", "file"):
        from edge.sources.opencv import OpenCVSource

        source = OpenCVSource(uri, scheme, rest, settings)
    elif scheme == "dir":
        from edge.sources.directory import DirectorySource

        source = DirectorySource(uri, rest, settings)
    elif "deck" in parse_options(rest)[1]:  # a pile being scanned
        from edge.sources.deck import DeckSource

        source = DeckSource(uri, rest, settings, bundle_dir=bundle_dir)
    else:  # drifting synthetic scenes
        from edge.sources.synthetic import SyntheticSource

        source = SyntheticSource(uri, rest, settings, bundle_dir=bundle_dir)
    logger.info("source %s -> %s", uri, type(source).__name__)
    return source
