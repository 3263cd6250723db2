"""The frame-source protocol every scheme implements, plus helpers shared by several schemes."""

from __future__ import annotations

import logging
import time
from typing import Protocol, runtime_checkable

from edge.errors import SourceError
from edge.types import Frame

logger = logging.getLogger(__name__)


class SourceExhaustedError(SourceError):
    """A finite source (video file, photo folder without looping) has no more frames."""

    code = "source_ended"


@runtime_checkable
class FrameSource(Protocol):
    """A camera-like producer of RGB frames. `read` blocks until the next frame is ready."""

    uri: str
    # True for a device that makes frames at its own pace (a camera: the loop keeps the newest
    # and counts the rest as dropped); False for an offline source read as fast as the loop
    # consumes (`?fast` video, folder, synthetic): the loop then reads the next frame only when
    # it is ready for one, so nothing is rendered or decoded just to be dropped.
    live: bool

    def open(self) -> None:
        """Acquire the device or file; raises SourceError when it cannot."""
        ...

    def read(self) -> Frame:
        """The next frame; SourceError when the device fails, SourceExhaustedError at the end."""
        ...

    def close(self) -> None:
        """Release the device; safe to call twice and from another thread."""
        ...


class Pacer:
    """Sleeps so successive frames leave at most `fps` per second; `fps=None` never sleeps."""

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self._next = 0.0

    def wait(self) -> None:
        if self.period <= 0:
            return
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
            now = self._next
        # Never try to catch up after a stall: the schedule restarts from the late frame.
        self._next = now + self.period


def parse_options(rest: str) -> tuple[str, dict[str, str]]:
    """Split 'target?key=value&flag' into ('target', {'key': 'value', 'flag': ''})."""
    target, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        options[key.strip()] = value.strip()
    return target, options


def option_float(options: dict[str, str], key: str, default: float | None) -> float | None:
    """A numeric option, with a SourceError naming the key when it is not a number."""
    if key not in options:
        return default
    try:
        return float(options[key])
    except ValueError as e:
        raise SourceError(f"source option {key}={options[key]!r} is not a number") from e


def reject_unknown(options: dict[str, str], allowed: set[str], scheme: str) -> None:
    """Unknown options are errors, so a typo never silently changes behaviour."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SourceError(
            f"unknown option(s) {', '.join(unknown)} for {scheme}: sources",
            f"allowed: {', '.join(sorted(allowed)) or 'none'}",
        )


def close_quietly(source: FrameSource) -> None:
    """Close `source`, logging (not raising) what its close raises: a source that failed may
    fail to close as well."""
    try:
        source.close()
    except Exception:
        logger.exception("closing source %s failed", getattr(source, "uri", "?"))
