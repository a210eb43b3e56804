"""Constants and the error type shared by the ingress bench modules."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUA_SCRIPT = Path(__file__).with_name("ingress.lua")
STATUS_PATH = "/twilio/messaging/status"
# Callbacks are signed over the public URL WITHOUT a port: every target is reached on its own
# port and validates http://127.0.0.1:<port>/..., and both hookline and RequestValidator accept
# the signature of the URL with its port removed (as Twilio's libraries do). That is also the
# production case: Twilio signs https://hooks.example.com/... and the URL matches first try.
SIGNED_URL = f"http://127.0.0.1{STATUS_PATH}"
TENANTS = 10
TARGETS = ("bare", "naive", "hookline")
PYDEPS_DIR = Path(tempfile.gettempdir()) / "hookline-bench-pydeps"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A precondition or a step failed: printed as one message, exit status 2."""
