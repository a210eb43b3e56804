"""Run the gateway on a real uvicorn socket inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette

from gateway.http.serving import server_config
from gateway.settings import ClientLimits


@asynccontextmanager
async def serving(
    app: Starlette, host: str = "127.0.0.1", limits: ClientLimits | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` on an ephemeral port, configured as ``hookline serve`` does (the client
    limits included); yield its base URL; shut down gracefully."""
    config = server_config(app, host, 0, limits or ClientLimits(), lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # surfaces the start-up error
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
