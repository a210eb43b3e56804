"""The import rules (docs/architecture.md#dependency-rules), checked by walking the imports."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "workers", "schemas")
# Pure core modules that provider code may use beside schemas: no I/O, no framework. A
# tenant's typed config sections are pure data, so their modules (and the Table type their
# parsers take) are pure core too.
PURE_CORE = (
    "gateway.errors",
    "gateway.secrets",
    "gateway.tenants",
    "gateway.clock",
    "gateway.providers",
    "gateway.e164",
    "gateway.config_table",
    "gateway.routing_config",
    "gateway.usage_config",
    "gateway.flows.model",
)


def modules() -> Iterator[tuple[str, set[str]]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            yield name, imported_names(path, name)


def imported_names(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def within(name: str, *roots: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


ALL = list(modules())


def test_modules_found() -> None:
    """The walk sees the three packages (so the rules below are not vacuous)."""
    found = {name.split(".")[0] for name, _ in ALL}
    assert found == set(PACKAGES)
    assert any(name == "gateway.providers.twilio" for name, _ in ALL)


@pytest.mark.parametrize(("module", "imports"), ALL, ids=[name for name, _ in ALL])
def test_import_rules(module: str, imports: set[str]) -> None:
    """Each module respects the layering: pure contracts, pure providers, framework at the edges."""
    internal = {name for name in imports if within(name, *PACKAGES)}
    if within(module, "schemas"):
        outside = {n for n in internal if not within(n, "schemas")}
        assert not outside, f"{module} is a contract module but imports {sorted(outside)}"
    if within(module, "gateway.providers", *PURE_CORE):
        allowed = ("schemas", *PURE_CORE)
        bad = {n for n in internal if not within(n, *allowed)}
        assert not bad, f"{module} is pure provider/core code but imports {sorted(bad)}"
        assert not {n for n in imports if within(n, "starlette", "aio_pika", "aiormq", "uvicorn")}
    if not within(module, "gateway.http"):
        assert not {n for n in imports if within(n, "starlette")}, f"{module} imports Starlette"
    if not within(module, "gateway.broker", "workers.amqp_transport"):
        bad = {n for n in imports if within(n, "aio_pika", "aiormq")}
        assert not bad, f"{module} imports aio-pika outside gateway.broker and the worker transport"
    if within(module, "gateway"):
        assert not {n for n in internal if within(n, "workers")}, f"{module} imports workers"


def test_no_import_cycles() -> None:
    """No module imports itself back through others (lazy and type-only imports count too)."""
    names = {name for name, _ in ALL}
    graph = {name: {n for n in imports if n in names and n != name} for name, imports in ALL}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for target in sorted(graph[name]):
            assert target not in path, "import cycle: " + " -> ".join(
                [*path[path.index(target) :], target]
            )
            if target not in done:
                visit(target, [*path, target])
        done.add(name)

    for name in sorted(graph):
        visit(name, [name])
