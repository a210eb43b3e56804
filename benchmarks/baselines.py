"""The two baselines the ingress bench compares hookline with (see benchmarks/ingress.py).

    .venv/bin/python -m benchmarks.baselines {bare,naive} --port P

Both run under uvicorn with the settings ``hookline serve`` uses (gateway.cli._serve: no access
log, no server header, no proxy headers, uvicorn's default loop and HTTP parser, one process).

* ``bare``: a Starlette endpoint that reads the body and answers 200: the floor of this stack.
* ``naive``: what a typical user writes for the same job: ``await request.form()``, the token
  looked up by AccountSid, ``twilio.request_validator.RequestValidator(token).validate`` over
  ``str(request.url)``, then one aio-pika publish per request (persistent, publisher confirms,
  mandatory) of a JSON document to hookline's exchange and routing key, awaited before the 204.
  Tenants come from the hookline TOML named by HOOKLINE_CONFIG (literal tokens, as the bench
  writes them), the broker from HOOKLINE_AMQP_URL. The one thing it adds for the harness:
  it echoes ``X-Request-Id`` (hookline does too), so the bench knows which callbacks got a 2xx.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

EXCHANGE = "hookline.events"  # schemas.topology.EVENTS_EXCHANGE, spelled out as a user would
STATUS_PATH = "/twilio/messaging/status"


# --- (a) bare --------------------------------------------------------------------------------


async def bare_endpoint(request: Request) -> Response:
    await request.body()
    return Response(status_code=200)


def bare_app() -> Starlette:
    return Starlette(routes=[Route(STATUS_PATH, bare_endpoint, methods=["POST"])])


# --- (b) naive -------------------------------------------------------------------------------


def load_tenants(config_path: Path) -> dict[str, tuple[str, str]]:
    """AccountSid -> (tenant id, auth token) from a hookline TOML with literal tokens."""
    doc = tomllib.loads(config_path.read_text())
    return {
        tenant["twilio"]["account_sid"]: (tenant["id"], tenant["twilio"]["auth_token"])
        for tenant in doc.get("tenants", [])
        if "twilio" in tenant
    }


def naive_app() -> Starlette:
    tenants = load_tenants(Path(os.environ["HOOKLINE_CONFIG"]))
    amqp_url = os.environ["HOOKLINE_AMQP_URL"]
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        connection = await aio_pika.connect_robust(amqp_url)
        channel = await connection.channel(publisher_confirms=True)
        state["exchange"] = await channel.get_exchange(EXCHANGE, ensure=False)
        try:
            yield
        finally:
            await connection.close()

    async def message_status(request: Request) -> Response:
        form = await request.form()
        params = {key: str(value) for key, value in form.items()}
        found = tenants.get(params.get("AccountSid", ""))
        signature = request.headers.get("x-twilio-signature", "")
        if found is None:
            return PlainTextResponse("Forbidden", status_code=403)
        tenant_id, token = found
        if not RequestValidator(token).validate(str(request.url), params, signature):
            return PlainTextResponse("Forbidden", status_code=403)
        body = json.dumps(
            {
                "tenant": tenant_id,
                "type": "message.status",
                "subject": params.get("MessageSid"),
                "data": params,
            }
        ).encode()
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await state["exchange"].publish(
            message,
            routing_key=f"{tenant_id}.twilio.message.status",
            mandatory=True,
        )
        headers = {}
        request_id = request.headers.get("x-request-id")
        if request_id:
            headers["x-request-id"] = request_id
        return Response(status_code=204, headers=headers)

    return Starlette(
        routes=[Route(STATUS_PATH, message_status, methods=["POST"])],
        lifespan=lifespan,
    )


APPS = {"bare": bare_app, "naive": naive_app}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same keyword arguments as gateway.cli._serve for one process.
    uvicorn.run(
        APPS[args.app](),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=15,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
