"""Typed, key-checked access to the decoded TOML config, shared by every config section.

``Table`` wraps one TOML table: typed getters that report a wrong type, a missing key or an
unknown key (with a did-you-mean hint) instead of raising, so that one ``hookline check``
lists every problem; ``Reader`` collects them and resolves secret references. gateway.config
and each section parser (gateway.routing_config, gateway.flows.flow_config, gateway.usage_config)
build on it; it depends on none of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from gateway.secrets import Secret

#: In an ALLOWED_KEYS set: any other key is allowed when its value is a table (a named entry).
ANY_TABLE: Final = "<name>"
_REFERENCE_FORMS: Final = "a string: env:NAME, file:PATH or a literal"
# What a TOML value can be, named as the TOML spec does; the rest are dates and times.
_TYPE_NAMES: Final = {str: "a string", int: "an integer", float: "a float", bool: "a boolean",
                      dict: "a table", list: "an array", type(None): "nothing"}  # fmt: skip


class Reader:
    """What every table shares: where problems go and how secret references resolve."""

    def __init__(self, *, environ: Mapping[str, str], base_dir: Path, source: str | None) -> None:
        self.environ, self.base_dir = environ, base_dir
        self.prefix = f"{source}: " if source else ""
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{self.prefix}{key}: {message}")


class Table:
    """Typed, key-checked access to one TOML table; problems are reported, not raised."""

    __slots__ = ("_data", "_misspelt", "_reader", "_start", "path")

    def __init__(
        self, data: Mapping[str, object], path: str, allowed: frozenset[str], reader: Reader
    ) -> None:
        self._data, self.path, self._reader = data, path, reader
        self._start, names = len(reader.problems), ", ".join(sorted(allowed - {ANY_TABLE}))
        # ANY_TABLE admits any other key whose value is a table (named entries: flows).
        named = (
            {k for k, v in data.items() if isinstance(v, dict)} if ANY_TABLE in allowed else set()
        )
        # A typo is one problem: the allowed key it was meant to be (absent, since it was
        # mistyped) is not reported again as missing or invalid.
        misspelt: set[str] = set()
        self._misspelt: frozenset[str] = frozenset()
        for key in sorted(set(data) - allowed - named):
            hint = difflib.get_close_matches(key, allowed - {ANY_TABLE}, n=1)
            self.fail(key, f"unknown key ({f'did you mean {hint[0]!r}' if hint else names})")
            misspelt.update(name for name in hint if name not in data)
        self._misspelt = frozenset(misspelt)

    @property
    def ok(self) -> bool:
        """No problem was reported in this table or its sub-tables so far."""
        return len(self._reader.problems) == self._start

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> None:
        if name not in self._misspelt:  # already reported as the unknown key it was typed as
            self._reader.fail(self.key(name), message)

    def _get(self, name: str, kind: type, expected: str, required: bool) -> Any:
        value = self._data.get(name)
        # bool is an int subclass: `max_body_bytes = true` must not pass as 1.
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
        if value is not None or required:
            got = _TYPE_NAMES.get(type(value), "a date or time")
            self.fail(name, f"expected {expected}, got {got}")
        return None

    @staticmethod
    def kind(value: object) -> str:
        """What a TOML value is, as the TOML spec names it ("a float", "a table", ...)."""
        return _TYPE_NAMES.get(type(value), "a date or time")

    def string(self, name: str, *, required: bool = True) -> str | None:
        value: str | None = self._get(name, str, "a string", required)
        if value == "":
            self.fail(name, "expected a non-empty string, got an empty string")
        return value or None

    def integer(self, name: str, minimum: int, maximum: int) -> int | None:
        value = self._get(name, int, "an integer", False)
        if value is None or minimum <= value <= maximum:
            return value  # type: ignore[no-any-return]
        self.fail(name, f"expected an integer from {minimum} to {maximum}, got {value}")
        return None

    def keys(self) -> frozenset[str]:
        return frozenset(self._data)

    def boolean(self, name: str) -> bool | None:
        value = self._data.get(name)
        if value is None or isinstance(value, bool):
            return value
        self.fail(name, f"expected true or false, got {_TYPE_NAMES.get(type(value), 'a date')}")
        return None

    def strings(self, name: str) -> tuple[str, ...] | None:
        """An array of non-empty strings."""
        value = self._get(name, list, "an array of strings", False)
        if value is None:
            return None
        if all(isinstance(item, str) and item for item in value):
            return tuple(value)
        self.fail(name, "expected an array of non-empty strings")
        return None

    def mapping(self, name: str) -> dict[str, str] | None:
        """An inline table of strings, e.g. ``digits = { "1" = "confirm" }``."""
        value = self._get(name, dict, "a table of strings", False)
        if value is None:
            return None
        if all(isinstance(item, str) and item for item in value.values()):
            return dict(value)
        self.fail(name, "expected a table whose values are non-empty strings")
        return None

    def raw(self, name: str) -> object:
        """The value as decoded, unchecked (for sections that validate their own shapes)."""
        return self._data.get(name)

    def nested(self, name: str, data: Mapping[str, object], allowed: frozenset[str]) -> Table:
        """A sub-table at ``name`` built from ``data`` (e.g. one entry of a table of tables)."""
        return Table(data, self.key(name), allowed, self._reader)

    def table(self, name: str, allowed: frozenset[str]) -> Table | None:
        value = self._get(name, dict, "a table", False)
        return Table(value, self.key(name), allowed, self._reader) if value is not None else None

    def tables(
        self,
        name: str,
        allowed: frozenset[str],
        label: Callable[[Mapping[str, object]], str | None] | None = None,
    ) -> list[Table]:
        """The entries of an array of tables, keyed by index and, when ``label`` gives one for
        an entry, a label after it: ``tenants[0](acme)``."""
        value = self._get(name, list, f"an array of tables ([[{name}]])", False)
        found: list[Table] = []
        for index, item in enumerate(value if isinstance(value, list) else ()):
            if isinstance(item, dict):
                tag = label(item) if label is not None else None
                key = self.key(f"{name}[{index}]" + (f"({tag})" if tag else ""))
                found.append(Table(item, key, allowed, self._reader))
            else:
                got = _TYPE_NAMES.get(type(item), "a date or time")
                self.fail(f"{name}[{index}]", f"expected a table, got {got}")
        return found

    def secret(self, name: str, *, required: bool = True) -> Secret | None:
        """Resolve "env:NAME", "file:PATH" (relative to the config file) or a literal."""
        ref: str | None = self._get(name, str, _REFERENCE_FORMS, required)
        if ref is None:
            return None
        (scheme, colon, rest), value, origin = ref.partition(":"), ref, "the value"
        try:
            if colon and scheme.lower() == "env":
                origin = f"environment variable {rest}"
                value = self._reader.environ[rest]
            elif colon and scheme.lower() == "file":
                # Joining an absolute path replaces base_dir: only relative paths are anchored.
                path = self._reader.base_dir / Path(rest).expanduser()
                origin = f"secret file {path}"
                value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except KeyError:
            self.fail(name, f"{origin} is not set")
            return None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
            self.fail(name, f"cannot read {origin}: {why}")
            return None
        # Never echo the value: say what is wrong with it, not what it is.
        if value != value.strip() or not value:
            self.fail(name, f"{origin} is {'empty' if not value else 'padded with whitespace'}")
            return None
        return Secret(value)
