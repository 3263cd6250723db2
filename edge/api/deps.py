"""Typed dependencies: the runtime, the settings and the bearer-token guards."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from edge.config import Settings
from edge.errors import AuthError, ConfigError, EdgeError
from edge.live.runtime import Runtime
from edge.overlay.store import OverlayStore
from edge.state import StoreState

logger = logging.getLogger(__name__)


class ForbiddenError(EdgeError):
    code = "forbidden"
    http_status = 403


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What create_app puts in app.state.ctx for the dependencies below."""

    settings: Settings
    runtime: Runtime
    token: str | None
    store: StoreState


def resolve_token(settings: Settings) -> str | None:
    """The configured bearer token: token_file (systemd credential) wins over token."""
    server = settings.server
    if server.token_file is not None:
        try:
            token = server.token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"cannot read token file {server.token_file}: {e.strerror}") from e
        if not token:
            raise ConfigError(f"token file {server.token_file} is empty")
        return token
    if server.token is not None:
        return server.token.get_secret_value() or None
    return None


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def get_runtime(request: Request) -> Runtime:
    return get_context(request).runtime


def taught_views(runtime: Runtime) -> OverlayStore | None:
    """The runtime's overlay as the routes use it (teach, list, forget); None when none is
    attached (a read-only state directory)."""
    overlay = runtime.overlay
    return overlay if isinstance(overlay, OverlayStore) else None


def get_settings(request: Request) -> Settings:
    return get_context(request).settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _check_bearer(request: Request, expected: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise AuthError("missing bearer token", "send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise AuthError("wrong bearer token")


def require_write_token(request: Request) -> None:
    """Every write needs the token; without a configured token, writes are refused."""
    token = get_context(request).token
    if token is None:
        raise ForbiddenError(
            "writes are disabled: no API token configured",
            "set server.token or server.token_file (systemd LoadCredential)",
        )
    _check_bearer(request, token)


def require_read_token(request: Request) -> None:
    """Reads need the token only when server.protect_reads is set."""
    ctx = get_context(request)
    if ctx.settings.server.protect_reads and ctx.token is not None:
        _check_bearer(request, ctx.token)


ReadAccess = Depends(require_read_token)
WriteAccess = Depends(require_write_token)
