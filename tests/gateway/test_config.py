"""The TOML config loader: tenants, secret references, the [gateway] table, and its errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path

import pytest

from gateway.config import (
    ALLOWED_KEYS,
    DEFAULT_MAX_BODY_BYTES,
    TENANT_SECTIONS,
    ConfigFile,
    ConfigProblems,
    load_config,
)
from gateway.errors import ConfigError
from gateway.secrets import Secret
from gateway.tenants import DEFAULT_FALLBACK_VOICE_TWIML, Tenant
from gateway.usage_config import TenantUsage

REPO = Path(__file__).resolve().parents[2]
SID_A = "AC" + "0" * 31 + "a"
SID_B = "AC" + "0" * 31 + "b"

LoadFn = Callable[..., ConfigFile]


def tenant(
    tenant_id: str = "acme",
    sid: str = SID_A,
    token: str = "token-a",
    extra: str = "",
    twilio_extra: str = "",
) -> str:
    """A [[tenants]] entry with a Twilio section, as TOML text."""
    return (
        f'[[tenants]]\nid = "{tenant_id}"\nname = "Tenant {tenant_id}"\n{extra}\n'
        f'[tenants.twilio]\naccount_sid = "{sid}"\nauth_token = "{token}"\n{twilio_extra}\n'
    )


@pytest.fixture
def load(tmp_path: Path) -> LoadFn:
    """Write TOML text to tmp_path/hookline.toml and load it with the given environ."""

    def _load(text: str, environ: Mapping[str, str] | None = None) -> ConfigFile:
        path = tmp_path / "hookline.toml"
        path.write_text(text, encoding="utf-8")
        return load_config(path, environ or {})

    return _load


def problems_of(load: LoadFn, text: str, environ: Mapping[str, str] | None = None) -> str:
    """Load text that must be invalid; return the error message."""
    with pytest.raises(ConfigError) as info:
        load(text, environ)
    return str(info.value)


# --- valid documents ---------------------------------------------------------------------------


def test_example_config_loads() -> None:
    """examples/hookline.toml loads with its two demo tenants and literal demo secrets."""
    config = load_config(REPO / "examples" / "hookline.toml", {})
    assert [t.id for t in config.tenants] == ["demo", "acme"]
    demo, acme = config.tenants.by_id("demo"), config.tenants.by_id("acme")
    assert demo is not None and demo.twilio is not None and demo.kaleyra is not None
    assert demo.twilio.auth_token.reveal() == "demo-token-not-secret"
    assert demo.kaleyra.callback_secret.reveal() == "demo-kaleyra-secret-not-secret"
    assert acme is not None and acme.kaleyra is None
    assert acme.fallback_voice_twiml.startswith("<?xml")
    assert config.tenants.by_twilio_account("AC0123456789abcdef0123456789abcdef") is acme
    assert config.gateway.max_body_bytes == 65536


def test_empty_document_has_zero_tenants_and_defaults(load: LoadFn) -> None:
    """An empty file is valid: no tenants, default body limit."""
    config = load("")
    assert len(config.tenants) == 0
    assert config.gateway.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 65536


def test_literal_secret_and_defaults_of_optional_keys(load: LoadFn) -> None:
    """A literal token is used as is; name, previous token and fallback TwiML have defaults."""
    config = load(
        '[[tenants]]\nid = "acme"\n[tenants.twilio]\n'
        f'account_sid = "{SID_A}"\nauth_token = "literal-token"\n'
    )
    acme = config.tenants.by_id("acme")
    assert acme is not None and acme.twilio is not None
    assert acme.name == "acme"
    assert acme.twilio.auth_token == Secret("literal-token")
    assert acme.twilio.previous_auth_token is None
    assert acme.twilio.tokens() == (Secret("literal-token"),)
    assert acme.fallback_voice_twiml == DEFAULT_FALLBACK_VOICE_TWIML
    assert acme.kaleyra is None and acme.routing is None and acme.flows is None
    assert acme.budget is None and acme.usage == TenantUsage()


def test_env_secret_comes_from_injected_environ_only(
    load: LoadFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env:NAME is looked up in the mapping passed in, not in os.environ."""
    text = tenant(token="env:ACME_TOKEN", twilio_extra='previous_auth_token = "env:ACME_OLD"')
    config = load(text, {"ACME_TOKEN": "from-env", "ACME_OLD": "old-from-env"})
    acme = config.tenants.by_id("acme")
    assert acme is not None and acme.twilio is not None
    twilio = acme.twilio
    assert twilio.tokens() == (Secret("from-env"), Secret("old-from-env"))
    monkeypatch.setenv("ACME_TOKEN", "in-os-environ")
    monkeypatch.setenv("ACME_OLD", "in-os-environ")
    message = problems_of(load, text, {})
    assert (
        "tenants[0](acme).twilio.auth_token: environment variable ACME_TOKEN is not set" in message
    )
    assert "tenants[0](acme).twilio.previous_auth_token" in message


def test_file_secret_relative_to_config_dir_strips_newline(load: LoadFn, tmp_path: Path) -> None:
    """file:PATH is read relative to the config file's directory; the trailing newline goes."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "acme").write_text("file-token\n", encoding="utf-8")
    absolute = tmp_path / "kaleyra.txt"
    absolute.write_text("kaleyra-secret\r\n", encoding="utf-8")
    text = tenant(token="file:secrets/acme") + (
        f'[tenants.kaleyra]\nsid = "HX1"\ncallback_secret = "file:{absolute}"\n'
    )
    config = load(text)
    acme = config.tenants.by_id("acme")
    assert acme is not None and acme.twilio is not None and acme.kaleyra is not None
    assert acme.twilio.auth_token.reveal() == "file-token"
    assert acme.kaleyra.callback_secret.reveal() == "kaleyra-secret"
    assert acme.kaleyra.previous_callback_secret is None


def test_account_sid_hex_is_case_insensitive_and_normalized(load: LoadFn) -> None:
    """Upper-case hex is accepted and stored lower-case, as Twilio sends it."""
    config = load(tenant(sid="AC" + "ABCDEF0123" * 3 + "AB"))
    expected = "AC" + "abcdef0123" * 3 + "ab"
    assert config.tenants.by_twilio_account(expected) is config.tenants.by_id("acme")


def test_kaleyra_only_tenant_with_previous_secret(load: LoadFn) -> None:
    """A tenant may have only a Kaleyra account, with a previous secret during rotation."""
    config = load(
        '[[tenants]]\nid = "k1"\n[tenants.kaleyra]\nsid = "HXAB12_1710"\n'
        'callback_secret = "new-secret"\nprevious_callback_secret = "old-secret"\n'
    )
    k1 = config.tenants.by_id("k1")
    assert k1 is not None and k1.twilio is None and k1.kaleyra is not None
    assert k1.kaleyra.sid == "HXAB12_1710"
    assert k1.kaleyra.previous_callback_secret == Secret("old-secret")


def test_kaleyra_timezone_defaults_to_kolkata_and_is_validated(load: LoadFn) -> None:
    """[tenants.kaleyra] timezone defaults to Asia/Kolkata, takes an IANA name, refuses others."""
    section = '[[tenants]]\nid = "k1"\n[tenants.kaleyra]\nsid = "HX1"\ncallback_secret = "s"\n'
    default = load(section).tenants.by_id("k1")
    assert default is not None and default.kaleyra is not None
    assert default.kaleyra.timezone == "Asia/Kolkata"
    berlin = load(section + 'timezone = "Europe/Berlin"\n').tenants.by_id("k1")
    assert berlin is not None and berlin.kaleyra is not None
    assert berlin.kaleyra.timezone == "Europe/Berlin"
    for bad in ("Mars/Olympus_Mons", "asia/kolkata", "../../etc/passwd", "/etc/localtime"):
        message = problems_of(load, section + f'timezone = "{bad}"\n')
        assert (
            "tenants[0](k1).kaleyra.timezone: expected an IANA time zone such as "
            f"Asia/Kolkata, got {bad!r}" in message
        )
    assert "tenants[0](k1).kaleyra.timezone: expected a string, got an integer" in problems_of(
        load, section + "timezone = 5\n"
    )


def test_fallback_voice_twiml_accepted(load: LoadFn) -> None:
    """A well-formed <Response> document is kept verbatim as the tenant's fallback."""
    twiml = '<?xml version="1.0" encoding="UTF-8"?><Response><Reject/></Response>'
    config = load(tenant(extra=f"fallback_voice_twiml = '{twiml}'"))
    acme = config.tenants.by_id("acme")
    assert acme is not None and acme.fallback_voice_twiml == twiml


def test_max_body_bytes_from_gateway_table(load: LoadFn) -> None:
    """[gateway] max_body_bytes overrides the 64 KiB default."""
    assert load("[gateway]\nmax_body_bytes = 1024\n").gateway.max_body_bytes == 1024


def test_every_tenant_section_is_a_typed_field() -> None:
    """Each per-tenant section lands in the Tenant field of its name (no untyped bag)."""
    names = {field.name for field in fields(Tenant)}
    assert set(TENANT_SECTIONS) <= names
    assert "extra" not in names


def test_every_tenant_section_has_its_allowed_keys() -> None:
    """Each registered section is an allowed tenant key and has its own allowed-keys set."""
    for section in TENANT_SECTIONS:
        assert section in ALLOWED_KEYS["tenant"]
        assert f"tenant.{section}" in ALLOWED_KEYS


# --- invalid documents -------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["Acme", "-acme", "acme_1", "a" * 41, "ac me", ""])
def test_malformed_tenant_id_is_named(load: LoadFn, bad_id: str) -> None:
    """An id that is not a slug fails naming tenants[i].id."""
    message = problems_of(load, tenant("ok") + tenant(bad_id, sid=SID_B))
    assert "tenants[1].id: expected" in message


def test_duplicate_tenant_ids_fail(load: LoadFn) -> None:
    """Two tenants with one id fail naming the second and pointing at the first."""
    message = problems_of(load, tenant("acme") + tenant("acme", sid=SID_B))
    assert (
        "tenants[1](acme).id: duplicate tenant id 'acme': already used by tenants[0](acme)"
        in message
    )


def test_duplicate_account_sids_fail_whatever_the_case(load: LoadFn) -> None:
    """One AccountSid in two tenants fails, even when written with different hex case."""
    upper = "AC" + "0" * 31 + "A"
    message = problems_of(load, tenant("acme") + tenant("beta", sid=upper))
    assert "tenants[1](beta).twilio.account_sid: duplicate AccountSid 'AC" in message
    assert "already used by tenants[0](acme)" in message


def test_duplicate_kaleyra_sid_and_shared_callback_secret_fail(load: LoadFn) -> None:
    """Kaleyra sids and callback secrets are per tenant; the secret is never echoed."""

    def kaleyra(tenant_id: str, secret: str) -> str:
        return (
            f'[[tenants]]\nid = "{tenant_id}"\n[tenants.kaleyra]\nsid = "HX1"\n'
            f'callback_secret = "{secret}"\n'
        )

    message = problems_of(load, kaleyra("a", "shared-s3cret") + kaleyra("b", "shared-s3cret"))
    assert (
        "tenants[1](b).kaleyra.sid: duplicate Kaleyra sid 'HX1': already used by tenants[0](a)"
        in message
    )
    assert "tenants[1](b).kaleyra.callback_secret: duplicate callback secret" in message
    assert "shared-s3cret" not in message


@pytest.mark.parametrize(
    "sid", ["AC123", "CA" + "0" * 32, "ac" + "0" * 32, "AC" + "g" * 32, "AC" + "0" * 33]
)
def test_malformed_account_sid_is_named(load: LoadFn, sid: str) -> None:
    """account_sid must be AC + 32 hex digits; the error shows what arrived."""
    message = problems_of(load, tenant(sid=sid))
    assert (
        "tenants[0](acme).twilio.account_sid: expected AC followed by 32 hex digits, "
        f"got {sid!r}" in message
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour = 1\n", "colour"),
        ("[[tenant]]\nid = 'acme'\n", "tenant"),
        ("[gateway]\nmax_body = 10\n", "gateway.max_body"),
        (tenant(extra='nmae = "x"'), "tenants[0](acme).nmae"),
        (tenant(twilio_extra='auth_tokn = "x"'), "tenants[0](acme).twilio.auth_tokn"),
        (
            tenant() + '[tenants.kaleyra]\nsid = "s"\ncallback_secret = "c"\nsecret = "x"\n',
            "tenants[0](acme).kaleyra.secret",
        ),
        (tenant() + "[tenants.twillio]\n", "tenants[0](acme).twillio"),
    ],
)
def test_unknown_keys_are_rejected_by_name(load: LoadFn, text: str, key: str) -> None:
    """A typo anywhere fails naming the full key path."""
    assert f"{key}: unknown key" in problems_of(load, text)


def test_unknown_key_suggests_the_closest_allowed_key(load: LoadFn) -> None:
    """A near miss gets a did-you-mean hint."""
    message = problems_of(load, tenant(twilio_extra='previous_auth_tokn = "x"'))
    assert "did you mean 'previous_auth_token'" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[tenants]]\nid = 5\n", "tenants[0].id: expected a string, got an integer"),
        ("[[tenants]]\nname = 'x'\n", "tenants[0].id: expected a string, got nothing"),
        ("[[tenants]]\nid = 'a'\nname = ''\n", "tenants[0](a).name: expected a non-empty string"),
        ("[[tenants]]\nid = 'a'\ntwilio = 'x'\n", "tenants[0](a).twilio: expected a table"),
        (
            "[[tenants]]\nid = 'a'\n[tenants.twilio]\naccount_sid = 'AC'\nauth_token = 7\n",
            "tenants[0](a).twilio.auth_token: expected a string: env:NAME, file:PATH or a literal",
        ),
        (
            f"[[tenants]]\nid = 'a'\n[tenants.twilio]\naccount_sid = '{SID_A}'\n",
            "tenants[0](a).twilio.auth_token: expected a string: env:NAME",
        ),
        (
            "[[tenants]]\nid = 'a'\n[tenants.kaleyra]\ncallback_secret = 'x'\n",
            "tenants[0](a).kaleyra.sid: expected a string, got nothing",
        ),
        ("tenants = 'acme'\n", "tenants: expected an array of tables ([[tenants]]), got a string"),
        ("tenants = [1]\n", "tenants[0]: expected a table, got an integer"),
        ("gateway = 3\n", "gateway: expected a table, got an integer"),
        ("[gateway]\nmax_body_bytes = 'big'\n", "gateway.max_body_bytes: expected an integer"),
        (
            "[gateway]\nmax_body_bytes = true\n",
            "gateway.max_body_bytes: expected an integer, got a boolean",
        ),
        (
            "[gateway]\nmax_body_bytes = 1.5\n",
            "gateway.max_body_bytes: expected an integer, got a float",
        ),
        ("[gateway]\nmax_body_bytes = 0\n", "gateway.max_body_bytes: expected an integer from 1"),
        ("[gateway]\nmax_body_bytes = 99999999999\n", "got 99999999999"),
    ],
)
def test_wrong_types_and_missing_keys_are_named(load: LoadFn, text: str, expected: str) -> None:
    """Each type error or missing required key names the key and what was expected."""
    assert expected in problems_of(load, text)


@pytest.mark.parametrize(
    ("twiml", "expected"),
    [
        ("<Response><Say>hi</Response>", "document, got a parse error: mismatched tag"),
        ("not xml at all", "expected a well-formed <Response> document, got a parse error"),
        ("<Reply><Say>hi</Say></Reply>", "expected a well-formed <Response> document, got <Reply>"),
    ],
)
def test_bad_fallback_twiml_is_named(load: LoadFn, twiml: str, expected: str) -> None:
    """fallback_voice_twiml must parse as XML with a <Response> root."""
    message = problems_of(load, tenant(extra=f"fallback_voice_twiml = '{twiml}'"))
    assert "tenants[0](acme).fallback_voice_twiml:" in message
    assert expected in message


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("env:EMPTY", {"EMPTY": ""}, "environment variable EMPTY is empty"),
        ("env:", {}, "environment variable  is not set"),
        ("  padded-s3cret ", {}, "the value is padded with whitespace"),
        ("env:PADDED", {"PADDED": "padded-s3cret\n"}, "PADDED is padded with whitespace"),
        ("file:missing.txt", {}, "cannot read secret file"),
        ("file:empty.txt", {}, "empty.txt is empty"),
        ("file:binary.bin", {}, "binary.bin: not valid UTF-8"),
    ],
)
def test_unresolved_secrets_are_named_without_their_value(
    load: LoadFn, tmp_path: Path, value: str, environ: dict[str, str], expected: str
) -> None:
    """Unset, empty, padded or unreadable secrets fail naming the key, never the value."""
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    (tmp_path / "binary.bin").write_bytes(b"\xff\xfepadded-s3cret")
    message = problems_of(load, tenant(token=value), environ)
    assert "tenants[0](acme).twilio.auth_token: " in message
    assert expected in message
    assert "padded-s3cret" not in message


def test_all_problems_are_reported_together(load: LoadFn) -> None:
    """One run reports every problem, one line each, prefixed with the file path."""
    with pytest.raises(ConfigProblems) as info:
        load("typo = 1\n" + tenant("Bad") + tenant("ok", sid="AC1", token="env:NOPE"))
    problems = info.value.problems
    assert len(problems) == 4
    assert all("hookline.toml: " in p for p in problems)
    assert str(info.value).startswith("4 problems:\n  ")
    assert isinstance(info.value, ConfigError)


def test_secret_objects_stay_masked_in_reprs(load: LoadFn) -> None:
    """repr of the parsed config never shows a token."""
    config = load(tenant(token="very-secret-token"))
    assert "very-secret-token" not in repr(config)
    assert "very-secret-token" not in repr(list(config.tenants))


# --- unreadable files --------------------------------------------------------------------------


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    """A path that does not exist fails naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot be read: No such file"):
        load_config(path, {})


def test_directory_as_config_file_names_the_path(tmp_path: Path) -> None:
    """A directory is not a config file."""
    with pytest.raises(ConfigError, match=f"config file {tmp_path}: cannot be read"):
        load_config(tmp_path, {})


def test_invalid_toml_names_the_path_and_position_not_the_text(load: LoadFn) -> None:
    """A TOML syntax error names the file and the line, without echoing the content."""
    message = problems_of(load, 'auth_token = "s3cret-value\n')
    assert "hookline.toml: is not valid TOML" in message
    assert "line 1" in message
    assert "s3cret-value" not in message


def test_invalid_utf8_config_names_the_path(tmp_path: Path) -> None:
    """A config file that is not UTF-8 fails naming it."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1\.toml: cannot be read: not valid UTF-8"):
        load_config(path, {})


# --- how problems name their keys ----------------------------------------------------------------


def all_problems(load: LoadFn, text: str) -> tuple[str, ...]:
    """Load text that must be invalid; return every problem, without the file name."""
    with pytest.raises(ConfigProblems) as info:
        load(text)
    return tuple(problem.partition(": ")[2] for problem in info.value.problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            tenant(twilio_extra='auth_tokn = "x"'),
            "tenants[0](acme).twilio.auth_tokn: unknown key (did you mean 'auth_token')",
        ),
        ('[[tenants]]\nidd = "acme"\n', "tenants[0].idd: unknown key (did you mean 'id')"),
        (
            tenant() + '[tenants.budget]\nmode = "prepaid"\namout = "5"\n',
            "tenants[0](acme).budget.amout: unknown key (did you mean 'amount')",
        ),
        (
            tenant() + '[tenants.kaleyra]\nsid = "HX1"\ncalback_secret = "s"\n',
            "tenants[0](acme).kaleyra.calback_secret: unknown key (did you mean 'callback_secret')",
        ),
        (
            '[gateway]\nflow_secret = "s"\n'
            + tenant()
            + "[tenants.flows.f]\n[[tenants.flows.f.steps]]\n"
            'id = "a"\ntype = "say"\ntxt = "hi"\n',
            "tenants[0](acme).flows.f.steps[0].txt: unknown key (did you mean 'text')",
        ),
        (
            '[gateway]\nflow_secret = "s"\n'
            + tenant()
            + "[tenants.flows.f]\n[[tenants.flows.f.steps]]\n"
            'id = "a"\ntype = "hangup"\nnxt = "b"\n',
            "tenants[0](acme).flows.f.steps[0].nxt: unknown key (did you mean 'next')",
        ),
        (
            tenant() + "[tenants.flows]\nrefil = 1\n",
            "tenants[0](acme).flows.refil: unknown key (caller_id, calls_per_second)",
        ),
    ],
)
def test_a_mistyped_key_is_one_problem(load: LoadFn, text: str, expected: str) -> None:
    """A typo is reported once, as an unknown key with a hint, never again as a missing key."""
    assert all_problems(load, text) == (expected,)


def test_every_key_of_a_tenant_names_its_id(load: LoadFn) -> None:
    """A tenant's problems, in its own table and its sections, name it by id after its index."""
    text = (
        tenant("ok")
        + tenant("beta", sid="AC123")
        + '[tenants.routing]\ntimezone = "Mars"\n'
        + "[tenants.usage]\nplan_monthly = 1.5\n"
    )
    problems = all_problems(load, text)
    assert len(problems) == 3
    assert all(problem.startswith("tenants[1](beta).") for problem in problems), problems
    assert all("tenants[1]." not in problem for problem in problems)


def test_a_tenant_without_a_valid_id_is_named_by_index(load: LoadFn) -> None:
    """Without a usable id the index alone names the tenant (the id problem says what arrived)."""
    assert all_problems(load, tenant("Acme!")) == (
        "tenants[0].id: expected a slug matching [a-z0-9][a-z0-9-]{0,39}, got 'Acme!'",
    )
