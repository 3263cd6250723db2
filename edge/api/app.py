"""The FastAPI application factory: create_app(settings, runtime)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from edge.api.deps import ApiContext, resolve_token
from edge.api.errors import install_error_handlers
from edge.api.fastpath import SceneFastPath
from edge.api.routes import (
    bundles,
    cards,
    feedback,
    health,
    identify,
    lists,
    metrics,
    scene,
    status,
    web,
)
from edge.api.routes import overlay as overlay_routes
from edge.api.routes.status import _version
from edge.config import Settings
from edge.errors import ConfigError
from edge.lists.service import attach_lists
from edge.live.runtime import Runtime
from edge.overlay.store import OverlayStore
from edge.state import StoreState, probe_state_dir

logger = logging.getLogger(__name__)


def create_app(settings: Settings, runtime: Runtime, *, store: StoreState | None = None) -> FastAPI:
    """An app serving `runtime`; its lifespan starts and stops the live loop. The caller owns
    the runtime and closes it (edge.cli.serve does, after the server exits). `store` says whether
    the state directory (bundle store, feedback) is writable; probed here when not given."""
    token = resolve_token(settings)
    if settings.server.protect_reads and token is None:
        raise ConfigError("server.protect_reads needs a token", "set server.token or token_file")

    if store is None:
        store = probe_state_dir(settings.runtime.state_dir)
    state = store

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # the lists file is open while the app serves, and opened again if it serves again
        scan_lists = attach_lists(runtime, state.state_dir) if state.writable else None
        runtime.start()
        logger.info("serving bundle %s", runtime.current_bundle_id)
        try:
            yield
        finally:
            await run_in_threadpool(runtime.stop)
            if scan_lists is not None:  # after the loop: its last scenes are recorded too
                runtime.lists = None
                await run_in_threadpool(scan_lists.close)

    app = FastAPI(
        title="cardedge",
        version=_version(),
        description="Trading-card recognition on the edge. Errors are JSON {code, message, hint}.",
        lifespan=lifespan,
    )
    if store.writable and runtime.overlay is None:  # taught views live in the state directory
        runtime.attach_overlay(OverlayStore(store.state_dir, runtime.lease))
    app.state.ctx = ApiContext(settings=settings, runtime=runtime, token=token, store=store)
    install_error_handlers(app)
    for module in (health, status, identify, scene, cards, bundles, feedback, lists, metrics, web):
        app.include_router(module.router)
    app.include_router(overlay_routes.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    fast = not settings.server.protect_reads  # protected reads go through the token check
    app.add_middleware(SceneFastPath, runtime=runtime, enabled=fast)
    return app
