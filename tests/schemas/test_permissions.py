"""The permission regexes, generated from the topology names (pure: no broker)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.permissions import (
    SERVICE_PERMISSIONS,
    SERVICE_ROLES,
    any_of,
    literal,
    service_username,
    tenant_permissions,
    tenant_username,
)
from schemas.topology import (
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    TWIML_QUEUE,
    USAGE_QUEUE,
    build_topology,
    tenant_queue,
)


def matches(regex: str, name: str) -> bool:
    # RabbitMQ: the empty regex grants nothing; others are searched (PCRE, anchored here).
    return bool(regex) and re.search(regex, name) is not None


def test_literal_escapes_dots() -> None:
    """A name becomes a regex matching only itself: a dot is not any character."""
    assert matches(any_of([literal("hookline.tenant.acme")]), "hookline.tenant.acme")
    assert not matches(any_of([literal("hookline.tenant.acme")]), "hookline-tenant-acme")


def test_a_tenant_prefix_is_not_a_longer_tenant() -> None:
    """acme's regexes never match acme-2's queue, routing keys or binding keys."""
    acme = tenant_permissions("acme")
    topics = {topic.exchange: topic for topic in acme.topics}
    assert matches(acme.read, tenant_queue("acme"))
    assert not matches(acme.read, tenant_queue("acme-2"))
    assert matches(topics[COMMANDS_EXCHANGE].write, "acme.call.bot")
    assert not matches(topics[COMMANDS_EXCHANGE].write, "acme-2.call.bot")
    assert matches(topics[EVENTS_EXCHANGE].read, "acme.#")
    for key in ("acme-2.#", "#", "*.twilio.#", "acme", "*.acme.#"):
        assert not matches(topics[EVENTS_EXCHANGE].read, key), key


def test_a_tenant_reads_no_shared_queue_and_publishes_no_event() -> None:
    """No read on hookline.usage or hookline.dead, no write on hookline.events or the default
    exchange, and no configure on any named entity."""
    acme = tenant_permissions("acme")
    for queue in (USAGE_QUEUE, DEAD_QUEUE):
        assert not matches(acme.read, queue)
    for exchange in (EVENTS_EXCHANGE, "amq.default"):
        assert not matches(acme.write, exchange)
    for entity in build_topology(["acme"]).queues:
        assert not matches(acme.configure, entity.name)


@pytest.mark.parametrize("bad", ["Acme", "acme.#", "", "a" * 41, ".*", "acme|b"])
def test_tenant_ids_are_checked(bad: str) -> None:
    """Only slugs become part of a regex or a username."""
    with pytest.raises(ValueError, match="not a slug"):
        tenant_permissions(bad)


def test_declaring_services_cover_the_whole_topology() -> None:
    """The gateway may configure every entity of every tenant's topology."""
    gateway = SERVICE_PERMISSIONS["gateway"]
    topology = build_topology(["acme", "b-2"])
    names = [e.name for e in topology.exchanges] + [q.name for q in topology.queues]
    for name in names:
        assert matches(gateway.configure, name), name


def test_declaring_a_dead_lettered_queue_takes_read_on_it() -> None:
    """RabbitMQ checks read on a queue and write on its dead-letter exchange at each declare:
    every service that declares the tenant queues may read them (docs/broker-users.md)."""
    for service in ("gateway", "usage", "flows", "operator"):
        permissions = SERVICE_PERMISSIONS[service]
        assert matches(permissions.read, tenant_queue("acme")), service
        assert matches(permissions.write, DEAD_LETTER_EXCHANGE), service


def test_what_no_service_but_its_owner_reads() -> None:
    """Only the operator reads hookline.dead; only the twiml worker (and the union) reads
    hookline.twiml; the twiml worker, which publishes no event, reads no tenant queue."""
    for service, permissions in SERVICE_PERMISSIONS.items():
        assert matches(permissions.read, DEAD_QUEUE) == (service == "operator"), service
        assert matches(permissions.read, TWIML_QUEUE) == (service in ("twiml", "workers"))
    assert not matches(SERVICE_PERMISSIONS["twiml"].read, tenant_queue("acme"))
    assert not matches(SERVICE_PERMISSIONS["twiml"].write, EVENTS_EXCHANGE)


def test_usernames_are_per_vhost() -> None:
    """Usernames carry the vhost unless it is the default one."""
    assert tenant_username("acme", "/") == "tenant-acme"
    assert service_username("gateway", "prod") == "hookline-gateway@prod"
    with pytest.raises(ValueError, match="no hookline service"):
        service_username("admin", "/")


def test_the_documented_regexes_are_the_generated_ones() -> None:
    """docs/broker-users.md shows exactly the permissions schemas.permissions generates."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "broker-users.md").read_text()
    for service, permissions in SERVICE_PERMISSIONS.items():
        block = (
            f"### `hookline-{service}`: {SERVICE_ROLES[service]}\n\n```text\n"
            f"configure {permissions.configure}\nwrite     {permissions.write}\n"
            f"read      {permissions.read}\n```"
        )
        assert block in doc, service
    acme = tenant_permissions("acme")
    topics = {topic.exchange: topic for topic in acme.topics}
    for regex in (
        acme.configure,
        acme.write,
        acme.read,
        topics[EVENTS_EXCHANGE].read,
        topics[COMMANDS_EXCHANGE].write,
    ):
        assert regex and regex in doc
