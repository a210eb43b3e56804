"""The pharmacy refill flow the flow tests walk through, as the TOML a tenant would write."""

from __future__ import annotations

from typing import Final

REFILL_FLOW_TOML: Final = """
[tenants.flows]
calls_per_second = 1
caller_id = "+14155550100"

[tenants.flows.refill]
variables = ["patient_name", "pickup_time"]
start = "detect"

[[tenants.flows.refill.steps]]
id = "detect"
type = "branch"
human = "greet"
machine = "voicemail"

[[tenants.flows.refill.steps]]
id = "greet"
type = "say"
text = "Hello {patient_name}, this is Acme Pharmacy. Your prescription is ready."
voice = "Polly.Joanna"
next = "menu"

[[tenants.flows.refill.steps]]
id = "menu"
type = "gather"
prompt = "Press 1 to confirm pickup at {pickup_time}, or 2 to speak to the pharmacy."
reprompt = "Sorry, that was not a choice."
num_digits = 1
timeout = 5
retries = 2
digits = { "1" = "confirmed", "2" = "transfer" }
default = "goodbye"

[[tenants.flows.refill.steps]]
id = "confirmed"
type = "sms"
text = "Acme Pharmacy: pickup confirmed for {pickup_time}."
next = "thanks"

[[tenants.flows.refill.steps]]
id = "thanks"
type = "say"
text = "Thank you. See you at {pickup_time}."
next = "bye"

[[tenants.flows.refill.steps]]
id = "transfer"
type = "transfer"
number = "+14155550199"
timeout = 20

[[tenants.flows.refill.steps]]
id = "voicemail"
type = "say"
text = "Hello, this is Acme Pharmacy for {patient_name}. Your prescription is ready."
next = "bye"

[[tenants.flows.refill.steps]]
id = "goodbye"
type = "say"
text = "We did not get a choice. Please call the pharmacy. Goodbye."
next = "bye"

[[tenants.flows.refill.steps]]
id = "bye"
type = "hangup"
"""
