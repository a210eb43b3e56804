"""Callback requests bypass Starlette exactly where Starlette's router would have sent them."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Match, Route

from gateway.http.app import create_app
from gateway.http.dispatch import CallbackDispatch
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry
from tests.gateway.http.test_kaleyra_routes import ACME_SECRET, tenants
from tests.support.gateway import ACME_SID, default_tenants, gateway_client
from tests.support.kaleyra_samples import legacy_query
from tests.support.logs import CapturedLogs
from tests.support.samples import message_incoming, message_status

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "post")


def app_and_dispatch() -> tuple[Starlette, CallbackDispatch]:
    app = create_app(Settings(tenants=StaticTenantRegistry(default_tenants())))
    stack: Any = app.build_middleware_stack()
    while not isinstance(stack, CallbackDispatch):  # ServerErrorMiddleware wraps it
        stack = stack.app
    return app, stack


APP, DISPATCH = app_and_dispatch()
CALLBACK_ROUTES = [
    r
    for r in APP.router.routes
    if isinstance(r, Route) and r.endpoint.__name__ == "_served_by_dispatch"
]

segments = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
paths = st.one_of(
    st.sampled_from(
        [
            "/twilio/voice",
            "/twilio/voice/status",
            "/twilio/messaging",
            "/twilio/messaging/status",
            "/twilio/voice/",
            "/twilio",
            "/healthz",
            "",
        ]
    ),
    st.builds(
        lambda t, leaf: f"/kaleyra/{t}/sms/{leaf}",
        segments,
        st.sampled_from(["status", "incoming", "status/", "other"]),
    ),
    st.builds(lambda parts: "/" + "/".join(parts), st.lists(segments, max_size=5)),
)


@settings(max_examples=400)
@given(paths, st.sampled_from(METHODS), st.sampled_from(["", "/hooks"]), st.booleans())
def test_dispatch_claims_exactly_starlettes_full_matches(
    path: str, method: str, root_path: str, prefixed: bool
) -> None:
    """For any method and path, the dispatcher serves a request iff Starlette's router would
    have run a callback endpoint for it (a FULL match), with the same path parameters."""
    scope = {
        "type": "http",
        "method": method,
        "root_path": root_path,
        "path": (root_path + path) if prefixed else path,
    }
    starlette_full = [
        (route, child["path_params"])
        for route in CALLBACK_ROUTES
        for match, child in [route.matches(scope)]
        if match == Match.FULL
    ]
    other_full = [
        route
        for route in APP.router.routes
        if isinstance(route, Route)
        and route not in CALLBACK_ROUTES
        and route.matches(scope)[0] == Match.FULL
    ]
    matched = DISPATCH.match(scope)
    if other_full:
        assert matched is None
        return
    assert (matched is not None) == bool(starlette_full), (scope, starlette_full)
    if matched is not None:
        assert dict(matched[1]) == starlette_full[0][1]


async def test_head_on_the_kaleyra_status_route_is_a_callback_like_get() -> None:
    """HEAD, which Starlette allows wherever GET is, is served by the callback route too."""
    async with gateway_client(tenants()) as gw:
        response = await gw.http.head(
            "/kaleyra/acme/sms/status",
            params=legacy_query(),
            headers={"x-hookline-secret": ACME_SECRET},
        )
        events = gw.tenant_events("acme")
    assert response.status_code == 204 and len(events) == 1
    assert response.headers["x-request-id"]


async def test_wrong_method_keeps_starlettes_405_with_allow(captured_logs: CapturedLogs) -> None:
    """GET on a POST-only callback route is Starlette's 405 with Allow, logged once."""
    async with gateway_client() as gw:
        response = await gw.http.get(
            "/twilio/messaging/status", headers={"x-request-id": "req-405"}
        )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["x-request-id"] == "req-405"
    [line] = captured_logs.events("callback_rejected")
    assert (line["reason"], line["request_id"]) == ("method_not_allowed", "req-405")


async def test_callback_answer_headers_match_starlettes_responses() -> None:
    """Status callbacks get a bare 204; TwiML answers carry Starlette's content headers."""
    async with gateway_client() as gw:
        status = await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID))
        twiml = await gw.post_signed("/twilio/messaging", message_incoming(ACME_SID))
    assert status.status_code == 204 and "content-length" not in status.headers
    assert "content-type" not in status.headers
    assert twiml.headers["content-type"] == "text/xml; charset=utf-8"
    assert twiml.headers["content-length"] == str(len(twiml.content))
