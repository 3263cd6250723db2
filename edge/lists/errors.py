"""Scan-list refusals, each with its stable code and HTTP status (edge.errors)."""

from __future__ import annotations

from edge.errors import EdgeError, NotFoundError


class ListError(EdgeError):
    code = "list_invalid"
    http_status = 422


class ListNotFoundError(NotFoundError):
    code = "list_not_found"


class EntryNotFoundError(NotFoundError):
    code = "entry_not_found"


class ListRecordingError(EdgeError):
    """A second list was started while one records (only one camera, one list at a time)."""

    code = "list_already_recording"
    http_status = 409


class ListStoppedError(EdgeError):
    code = "list_stopped"
    http_status = 409
