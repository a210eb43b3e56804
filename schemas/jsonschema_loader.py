"""The JSON Schemas of the event types (docs/architecture.md#events), read from package data.

One Draft 2020-12 schema per kind, ``schemas/jsonschema/<kind>.json``, each validating the
whole CloudEvents envelope. This module only reads them: validating is a test concern, so
``jsonschema`` stays a test dependency and is never imported here.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Final

# The kinds that have a schema file; a test checks this equals schemas.events.KINDS and the
# files actually present, so a new kind cannot ship without its schema.
SCHEMA_KINDS: Final = frozenset(
    {
        "call.incoming",
        "call.status",
        "call.flow",
        "message.incoming",
        "message.status",
        "call.bot.result",
        "usage.budget",
    }
)
SCHEMA_DIR: Final = "jsonschema"


def schema_file_name(kind: str) -> str:
    """``<kind>.json``, the package-data file of a kind's schema."""
    return f"{kind}.json"


def load_schema(kind: str) -> dict[str, Any]:
    """The parsed schema of ``kind`` (a fresh dict each call, so callers may modify it).

    Raises ValueError for a kind that has no schema.
    """
    if kind not in SCHEMA_KINDS:
        raise ValueError(f"no JSON Schema for event kind {kind!r}; known: {sorted(SCHEMA_KINDS)}")
    doc = json.loads(_schema_text(kind))
    if not isinstance(doc, dict):
        raise ValueError(f"schema of {kind!r} is not a JSON object")
    return doc


@cache
def _schema_text(kind: str) -> str:
    # Cached as text, parsed per call: reading package data once, never sharing a mutable dict.
    resource = resources.files("schemas").joinpath(SCHEMA_DIR, schema_file_name(kind))
    return resource.read_text(encoding="utf-8")
