"""Tenants with routing rules for tests, parsed by the real config loader."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gateway.config import parse_config
from gateway.tenants import Tenant

ACME_SID = "AC" + "a1" * 16
ACME_TOKEN = "acme-token-0123456789abcdef"
OFFICE_NUMBER = "+18005551212"
OTHER_NUMBER = "+18005550000"

ROUTING_TOML = f'''
[gateway]
flow_secret = "routing-test-flow-secret"

[[tenants]]
id = "acme"
fallback_voice_twiml = "<Response><Say>Acme fallback</Say></Response>"

[tenants.twilio]
account_sid = "{ACME_SID}"
auth_token = "{ACME_TOKEN}"

[tenants.routing]
timezone = "America/New_York"
answer_timeout_ms = 1000
sms_default_reply = "Thanks, we got it."

[[tenants.routing.voice]]
name = "office"
to = ["{OFFICE_NUMBER}"]
hours = ["mon-fri 09:00-17:00"]
action = "main"

[[tenants.routing.voice]]
name = "spam"
to = ["+18005559999"]
action = "block"

[[tenants.routing.voice]]
name = "bot"
to = ["+18005558888"]
action = "refill"

[[tenants.routing.voice]]
name = "closed"
action = "closed"

[tenants.routing.actions.main]
type = "menu"
prompt = "Press 1 for sales, 2 for support."
options = {{ "1" = "sales", "2" = "support" }}
retry_prompt = "Try again."
attempts = 2
timeout_s = 4
then = "voicemail"

[tenants.routing.actions.sales]
type = "dial"
numbers = ["+14155550101", "+14155550102"]
timeout_s = 15
caller_id = "{OFFICE_NUMBER}"
then = "voicemail"

[tenants.routing.actions.support]
type = "say"
text = "Support is online at example.com."

[tenants.routing.actions.voicemail]
type = "voicemail"
max_length_s = 60

[tenants.routing.actions.closed]
type = "say"
text = "We are closed."
then = "voicemail"

[tenants.routing.actions.block]
type = "reject"
reason = "busy"

[tenants.routing.actions.refill]
type = "flow"
flow = "refill"

[tenants.flows.refill]

[[tenants.flows.refill.steps]]
id = "hello"
type = "say"
text = "Your refill line."

[[tenants.routing.sms]]
name = "hours"
keywords = ["HOURS", "open"]
reply = "Open 9 to 5."
'''


def routed_tenant(toml_text: str = ROUTING_TOML, **overrides: Any) -> Tenant:
    """The one tenant of ``toml_text`` as the real loader builds it."""
    document = tomllib.loads(toml_text)
    for key, value in overrides.items():
        document["tenants"][0]["routing"][key] = value
    config = parse_config(document, environ={}, base_dir=Path("."))
    tenant = config.tenants.by_id(document["tenants"][0]["id"])
    assert tenant is not None
    return tenant
