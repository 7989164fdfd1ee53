"""An ASGI application loaded, then patched, on its first call: how the instrumented and
experimental variants of the service (bench.dispatching.trace, bench.swarm_experiments) are served
by an unmodified ASGI server (`daphne ... module:attribute`)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class LazyApp:
    """`load()`, then each of `patches`, on the first ASGI call (uvicorn's lifespan, daphne's first
    connection: before the benchmark's warm-up). A patch that fails (the service renamed what it
    patches) is printed to the server's log and fails every call."""

    def __init__(self, load: Callable[[], ASGIApp], *patches: Callable[[], None]):
        self.load, self.patches = load, patches
        self.app: ASGIApp | None = None

    def prepare(self) -> ASGIApp:
        """The application, loaded and patched (once)."""
        if self.app is None:
            app = self.load()
            try:
                for patch in self.patches:
                    patch()
            except Exception:
                print("bench: patching the served application failed:", file=sys.stderr)
                traceback.print_exc()
                raise
            self.app = app
        return self.app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.prepare()(scope, receive, send)
