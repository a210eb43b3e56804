"""Settings from HOOKLINE_* variables and the config file (docs/architecture.md#configuration)."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_network
from pathlib import Path

import pytest

from gateway.config import ConfigProblems
from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
SID = "AC" + "0" * 31 + "a"


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run every test in an empty directory, so no stray ./hookline.toml is picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error_of(environ: dict[str, str]) -> str:
    """load_settings must fail for environ; return the message."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ, stdout_isatty=False)
    return str(info.value)


def write_config(path: Path, token: str = "literal-token") -> Path:
    """Write a one-tenant config file at path."""
    path.write_text(
        f'[[tenants]]\nid = "acme"\n[tenants.twilio]\naccount_sid = "{SID}"\n'
        f'auth_token = "{token}"\n[gateway]\nmax_body_bytes = 2048\n',
        encoding="utf-8",
    )
    return path


# --- defaults ----------------------------------------------------------------------------------


def test_every_default_with_an_empty_environment() -> None:
    """With no variables and no ./hookline.toml, every documented default applies."""
    settings = load_settings({}, stdout_isatty=False)
    assert settings.config_path == Path("hookline.toml")
    assert settings.config_found is False
    assert len(settings.tenants) == 0
    assert settings.amqp_url == "memory://"
    assert settings.public_url is None
    assert settings.trusted_proxies == ()
    assert settings.data_dir == Path(".hookline")
    assert settings.db_url == "sqlite:///.hookline/hookline.db"
    assert settings.sqlite_path == Path(".hookline/hookline.db")
    assert settings.log_format == "json"
    assert settings.log_level == "info"
    assert settings.max_body_bytes == 65536


def test_settings_constructor_defaults_match_load_settings() -> None:
    """Settings() built directly (as tests elsewhere do) equals the loaded defaults, but for
    the admin listener: built in code it binds no socket unless asked (tests run many apps)."""
    loaded = load_settings({}, stdout_isatty=False)
    built = Settings()
    for item in dataclasses.fields(Settings):
        if item.name not in ("tenants", "admin_listen"):
            assert getattr(built, item.name) == getattr(loaded, item.name), item.name
    assert (built.admin_listen, loaded.admin_listen) == (None, ("127.0.0.1", 9180))


def test_log_format_defaults_to_console_on_a_terminal() -> None:
    """HOOKLINE_LOG_FORMAT defaults to console when stdout is a TTY, json otherwise."""
    assert load_settings({}, stdout_isatty=True).log_format == "console"
    assert load_settings({}, stdout_isatty=False).log_format == "json"


def test_empty_variables_count_as_unset() -> None:
    """VAR= (as ${VAR:-} in compose files produces) means the default."""
    names = ["CONFIG", "AMQP_URL", "PUBLIC_URL", "TRUSTED_PROXIES", "DATA_DIR", "DB_URL"]
    environ = {f"HOOKLINE_{name}": "" for name in names}
    environ |= {"HOOKLINE_LOG_FORMAT": " ", "HOOKLINE_LOG_LEVEL": ""}
    assert repr(load_settings(environ, stdout_isatty=False)) == repr(
        load_settings({}, stdout_isatty=False)
    )


def test_reads_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings() without arguments reads the process environment."""
    monkeypatch.setenv("HOOKLINE_LOG_LEVEL", "debug")
    monkeypatch.delenv("HOOKLINE_CONFIG", raising=False)
    assert load_settings(stdout_isatty=False).log_level == "debug"


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after start-up."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().log_level = "debug"  # type: ignore[misc]  # the write mypy refuses is the point


# --- config file -------------------------------------------------------------------------------


def test_example_config_loads_through_settings() -> None:
    """HOOKLINE_CONFIG=examples/hookline.toml gives the two demo tenants."""
    settings = load_settings({"HOOKLINE_CONFIG": str(REPO / "examples" / "hookline.toml")})
    assert [t.id for t in settings.tenants] == ["demo", "acme"]
    assert settings.config_found is True


def test_default_config_file_in_cwd_is_used(empty_cwd: Path) -> None:
    """Without HOOKLINE_CONFIG, ./hookline.toml is loaded when present."""
    write_config(empty_cwd / "hookline.toml")
    settings = load_settings({}, stdout_isatty=False)
    assert settings.config_found is True
    assert settings.tenants.by_twilio_account(SID) is settings.tenants.by_id("acme")
    assert settings.max_body_bytes == 2048


def test_invalid_default_config_file_still_fails(empty_cwd: Path) -> None:
    """A ./hookline.toml that exists but is broken is an error, not zero tenants."""
    (empty_cwd / "hookline.toml").write_text("[[tenants]\n", encoding="utf-8")
    assert "hookline.toml: is not valid TOML" in error_of({})


def test_explicit_config_path_must_exist(empty_cwd: Path) -> None:
    """HOOKLINE_CONFIG naming a missing file fails naming the variable and the path."""
    message = error_of({"HOOKLINE_CONFIG": "/nowhere/hookline.toml"})
    assert "HOOKLINE_CONFIG: expected a TOML file, got '/nowhere/hookline.toml'" in message
    assert "does not exist" in message
    assert "is a directory" in error_of({"HOOKLINE_CONFIG": str(empty_cwd)})


def test_explicit_config_with_invalid_toml_names_the_path(empty_cwd: Path) -> None:
    """HOOKLINE_CONFIG naming an invalid TOML file fails naming both."""
    path = empty_cwd / "broken.toml"
    path.write_text("tenants = [\n", encoding="utf-8")
    message = error_of({"HOOKLINE_CONFIG": str(path)})
    assert message.startswith(f"HOOKLINE_CONFIG: config file {path}: is not valid TOML")


def test_config_secrets_resolve_from_the_given_environ(empty_cwd: Path) -> None:
    """env: references in the config use the same mapping as the HOOKLINE_* variables."""
    path = write_config(empty_cwd / "c.toml", token="env:ACME_TOKEN")
    settings = load_settings({"HOOKLINE_CONFIG": str(path), "ACME_TOKEN": "tok"})
    acme = settings.tenants.by_id("acme")
    assert acme is not None and acme.twilio is not None
    assert acme.twilio.auth_token.reveal() == "tok"
    message = error_of({"HOOKLINE_CONFIG": str(path)})
    assert (
        "tenants[0](acme).twilio.auth_token: environment variable ACME_TOKEN is not set" in message
    )


# --- each variable -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["memory://", "amqp://guest:guest@localhost/", "amqps://u:p@rabbit.example:5671/vh"]
)
def test_amqp_url_accepted(url: str) -> None:
    """memory:// and amqp(s):// URLs are accepted as given."""
    assert load_settings({"HOOKLINE_AMQP_URL": url}).amqp_url == url


@pytest.mark.parametrize(
    "url", ["redis://u:hunter2@h/", "amqp://", "amqp://u:hunter2@h:99999/", "localhost"]
)
def test_invalid_amqp_url_is_named_without_password(url: str) -> None:
    """A bad HOOKLINE_AMQP_URL names the variable and masks the password it carried."""
    message = error_of({"HOOKLINE_AMQP_URL": url})
    assert message.startswith("HOOKLINE_AMQP_URL: expected memory:// or amqp[s]://")
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("amqp", "expected"),
    [
        ("memory://", None),
        ("amqp://guest:guest@localhost/", "http://guest:guest@localhost:15672"),
        ("amqps://u:p%2Fq@rabbit.example:5671/vh", "http://u:p%2Fq@rabbit.example:15672"),
        ("amqp://[::1]/", "http://[::1]:15672"),
    ],
)
def test_rabbitmq_api_url_defaults_to_the_amqp_host(amqp: str, expected: str | None) -> None:
    """Unset, HOOKLINE_RABBITMQ_API_URL is port 15672 of the AMQP host with the AMQP
    credentials (escaped as they were), and None with memory://."""
    assert load_settings({"HOOKLINE_AMQP_URL": amqp}).rabbitmq_api_url == expected


def test_rabbitmq_api_url_given_is_kept() -> None:
    """An explicit management API URL is used as given."""
    settings = load_settings(
        {
            "HOOKLINE_AMQP_URL": "amqp://u:p@rabbit/",
            "HOOKLINE_RABBITMQ_API_URL": "https://admin:pw@mgmt.example/",
        }
    )
    assert settings.rabbitmq_api_url == "https://admin:pw@mgmt.example/"


@pytest.mark.parametrize(
    "url",
    [
        "amqp://admin:hunter2@rabbit/",
        "http://",
        "rabbit:15672",
        "http://admin:hunter2@rabbit:99999/",
    ],
)
def test_invalid_rabbitmq_api_url_is_named_without_password(url: str) -> None:
    """A bad HOOKLINE_RABBITMQ_API_URL names the variable and masks the password it carried."""
    message = error_of({"HOOKLINE_RABBITMQ_API_URL": url})
    assert message.startswith("HOOKLINE_RABBITMQ_API_URL: expected http[s]://")
    assert "hunter2" not in message


def test_repr_masks_the_management_api_password() -> None:
    """The management API URL, derived from the AMQP URL's credentials, is masked in repr."""
    settings = load_settings({"HOOKLINE_AMQP_URL": "amqp://hook:amqp-pass-123@rabbit/"})
    assert "rabbitmq_api_url='http://hook:***@rabbit:15672'" in repr(settings)
    assert "amqp-pass-123" not in repr(settings)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://hooks.example.com", "https://hooks.example.com"),
        ("https://hooks.example.com/", "https://hooks.example.com"),
        ("http://10.0.0.5:8080/hookline//", "http://10.0.0.5:8080/hookline"),
        ("https://[2001:db8::1]:8443/p", "https://[2001:db8::1]:8443/p"),
    ],
)
def test_public_url_accepted_and_trailing_slash_stripped(raw: str, expected: str) -> None:
    """HOOKLINE_PUBLIC_URL keeps scheme, host, port and prefix, minus trailing slashes."""
    assert load_settings({"HOOKLINE_PUBLIC_URL": raw}).public_url == expected


@pytest.mark.parametrize(
    "raw",
    [
        "ftp://hooks.example.com",
        "hooks.example.com",
        "https://",
        "https://hooks.example.com/?x=1",
        "https://hooks.example.com/#top",
        "https://user:hunter2@hooks.example.com",
        "https://hooks.example.com:99999",
        "https://hooks.example.com:0",
        "https://hooks.example.com/a b",
    ],
)
def test_invalid_public_url_is_named(raw: str) -> None:
    """A bad HOOKLINE_PUBLIC_URL names the variable and what was expected."""
    message = error_of({"HOOKLINE_PUBLIC_URL": raw})
    assert message.startswith("HOOKLINE_PUBLIC_URL: expected http(s)://host[:port][/prefix]")
    assert "hunter2" not in message


FORWARDED = {"HOOKLINE_FORWARDED_HOSTS": "hooks.example.com"}


def test_forwarded_hosts_parsed_lower_case() -> None:
    """HOOKLINE_FORWARDED_HOSTS: comma-separated host or host:port, compared lower-case."""
    settings = load_settings({"HOOKLINE_FORWARDED_HOSTS": " Hooks.Example.com, x.test:8443,"})
    assert settings.forwarded_hosts == frozenset({"hooks.example.com", "x.test:8443"})


@pytest.mark.parametrize("raw", ["https://hooks.example.com", "user@h", "h/path", "h:0", "h:x"])
def test_invalid_forwarded_host_is_named(raw: str) -> None:
    """A value that is not a bare host[:port] names the variable and the item."""
    assert error_of({"HOOKLINE_FORWARDED_HOSTS": raw}) == (
        f"HOOKLINE_FORWARDED_HOSTS: expected comma-separated host or host:port values, got {raw!r}"
    )


def test_trusted_proxies_without_a_declared_host_fail_at_start() -> None:
    """Trusting proxies with nothing that says which forwarded host is ours is refused."""
    message = error_of({"HOOKLINE_TRUSTED_PROXIES": "10.0.0.1"})
    assert message.startswith(
        "HOOKLINE_TRUSTED_PROXIES is set but no X-Forwarded-Host is "
        "allowed: set HOOKLINE_FORWARDED_HOSTS"
    )
    assert load_settings(
        {"HOOKLINE_TRUSTED_PROXIES": "10.0.0.1", "HOOKLINE_PUBLIC_URL": "https://hooks.example.com"}
    ).trusted_proxies


def test_trusted_proxies_parsed_as_networks() -> None:
    """Comma-separated IPs and CIDRs, spaces and a trailing comma tolerated."""
    raw = "10.0.0.1, 192.168.0.0/16 ,::1, 172.16.5.4/12,"
    settings = load_settings({"HOOKLINE_TRUSTED_PROXIES": raw, **FORWARDED})
    assert settings.trusted_proxies == (
        ip_network("10.0.0.1/32"),
        ip_network("192.168.0.0/16"),
        ip_network("::1/128"),
        ip_network("172.16.0.0/12"),
    )


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("10.0.0.1", True),
        ("10.0.0.2", False),
        ("192.168.44.3", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:192.168.1.1", True),
        ("2001:db8::1", False),
        ("proxy.internal", False),
        ("", False),
    ],
)
def test_is_trusted_proxy(host: str, trusted: bool) -> None:
    """Only peers inside a configured network are trusted; names never are."""
    settings = load_settings(
        {"HOOKLINE_TRUSTED_PROXIES": "10.0.0.1,192.168.0.0/16,::1", **FORWARDED}
    )
    assert settings.is_trusted_proxy(host) is trusted


def test_no_trusted_proxies_trusts_nobody() -> None:
    """By default no peer is trusted, not even localhost."""
    assert Settings().is_trusted_proxy("127.0.0.1") is False


@pytest.mark.parametrize("raw", ["localhost", "10.0.0.0/33", "10.0.0.1;10.0.0.2", "*"])
def test_invalid_trusted_proxy_is_named(raw: str) -> None:
    """A value that is not an IP or CIDR names the variable and the item."""
    message = error_of({"HOOKLINE_TRUSTED_PROXIES": f"10.0.0.1,{raw}", **FORWARDED})
    assert message == (
        "HOOKLINE_TRUSTED_PROXIES: expected comma-separated IP addresses or CIDR networks, "
        f"got {raw!r}"
    )


def test_data_dir_moves_the_default_database(empty_cwd: Path) -> None:
    """HOOKLINE_DB_URL defaults to hookline.db inside HOOKLINE_DATA_DIR."""
    settings = load_settings({"HOOKLINE_DATA_DIR": "/var/lib/hookline"})
    assert settings.data_dir == Path("/var/lib/hookline")
    assert settings.db_url == "sqlite:////var/lib/hookline/hookline.db"
    assert settings.sqlite_path == Path("/var/lib/hookline/hookline.db")


def test_data_dir_that_is_a_file_is_named(empty_cwd: Path) -> None:
    """HOOKLINE_DATA_DIR pointing at a regular file fails naming it."""
    (empty_cwd / "state").write_text("", encoding="utf-8")
    message = error_of({"HOOKLINE_DATA_DIR": "state"})
    assert message == "HOOKLINE_DATA_DIR: expected a directory, got 'state', a file"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ledger.db", "sqlite:///ledger.db"),
        ("/srv/ledger.db", "sqlite:////srv/ledger.db"),
        ("sqlite:///ledger.db", "sqlite:///ledger.db"),
        ("postgresql://hook:pw@db.internal/hookline", "postgresql://hook:pw@db.internal/hookline"),
        ("postgresql+asyncpg://db/hookline", "postgresql+asyncpg://db/hookline"),
        ("postgres://db/hookline", "postgres://db/hookline"),
    ],
)
def test_db_url_accepts_sqlite_paths_and_postgres(raw: str, expected: str) -> None:
    """A bare path becomes a SQLite URL; sqlite:/// and postgresql:// URLs are kept."""
    assert load_settings({"HOOKLINE_DB_URL": raw}).db_url == expected


@pytest.mark.parametrize("raw", ["mysql://root:hunter2@db/x", "sqlite://relative.db"])
def test_invalid_db_url_is_named_without_password(raw: str) -> None:
    """An unsupported database URL names the variable and masks the password."""
    message = error_of({"HOOKLINE_DB_URL": raw})
    assert message.startswith("HOOKLINE_DB_URL: expected a SQLite path, sqlite:///PATH or postgre")
    assert "hunter2" not in message


def test_postgres_url_has_no_sqlite_path() -> None:
    """sqlite_path is None for a PostgreSQL ledger."""
    assert Settings(db_url="postgresql://db/x").sqlite_path is None


@pytest.mark.parametrize(
    ("raw", "expected"), [("JSON", "json"), ("console", "console"), ("Console", "console")]
)
def test_log_format_values(raw: str, expected: str) -> None:
    """HOOKLINE_LOG_FORMAT is json or console, case-insensitive."""
    settings = load_settings({"HOOKLINE_LOG_FORMAT": raw}, stdout_isatty=True)
    assert settings.log_format == expected


@pytest.mark.parametrize("raw", ["debug", "INFO", "Warning", "error"])
def test_log_level_values(raw: str) -> None:
    """HOOKLINE_LOG_LEVEL is one of debug, info, warning, error, case-insensitive."""
    assert load_settings({"HOOKLINE_LOG_LEVEL": raw}).log_level == raw.lower()


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("HOOKLINE_LOG_FORMAT", "yaml", "expected one of json, console, got 'yaml'"),
        ("HOOKLINE_LOG_LEVEL", "verbose", "expected one of debug, info, warning, error"),
        ("HOOKLINE_LOG_LEVEL", "critical", "got 'critical'"),
    ],
)
def test_invalid_log_settings_are_named(name: str, raw: str, expected: str) -> None:
    """Unknown log formats and levels name the variable, the choices and the value."""
    message = error_of({name: raw})
    assert message.startswith(f"{name}: ")
    assert expected in message


def test_all_problems_are_reported_at_once(empty_cwd: Path) -> None:
    """Every bad variable and config key is listed in one error."""
    path = write_config(empty_cwd / "c.toml", token="env:MISSING")
    environ = {
        "HOOKLINE_CONFIG": str(path),
        "HOOKLINE_LOG_LEVEL": "loud",
        "HOOKLINE_TRUSTED_PROXIES": "nope",
        "HOOKLINE_PUBLIC_URL": "ftp://x",
    }
    with pytest.raises(ConfigProblems) as info:
        load_settings(environ)
    keys = [problem.split(": ")[0] for problem in info.value.problems]
    assert keys == [
        "HOOKLINE_PUBLIC_URL",
        "HOOKLINE_TRUSTED_PROXIES",
        "HOOKLINE_LOG_LEVEL",
        str(path),
    ]
    assert "tenants[0](acme).twilio.auth_token" in info.value.problems[-1]


# --- secrets never shown -----------------------------------------------------------------------


def test_repr_masks_passwords_and_never_shows_tenant_secrets(empty_cwd: Path) -> None:
    """repr(Settings) masks URL passwords and shows tenant ids, not tokens."""
    path = write_config(empty_cwd / "c.toml", token="tenant-token-xyz")
    settings = load_settings(
        {
            "HOOKLINE_CONFIG": str(path),
            "HOOKLINE_AMQP_URL": "amqp://hook:amqp-pass-123@rabbit/",
            "HOOKLINE_DB_URL": "postgresql://hook:db-pass-456@db/hookline",
        }
    )
    text = repr(settings)
    assert "amqp://hook:***@rabbit/" in text
    assert "postgresql://hook:***@db/hookline" in text
    assert "tenants=[acme]" in text
    for secret in ("amqp-pass-123", "db-pass-456", "tenant-token-xyz"):
        assert secret not in text
        assert secret not in str(settings)
    assert settings.amqp_url == "amqp://hook:amqp-pass-123@rabbit/"  # usable, only masked in repr


def test_repr_abbreviates_many_tenants(empty_cwd: Path) -> None:
    """A large registry is summarized, not dumped."""
    text = "".join(
        f'[[tenants]]\nid = "t{i}"\n[tenants.twilio]\naccount_sid = "AC{i:032x}"\n'
        f'auth_token = "tok-{i}"\n'
        for i in range(12)
    )
    (empty_cwd / "hookline.toml").write_text(text, encoding="utf-8")
    shown = repr(load_settings({}))
    assert "t9, ... (12 in all)" in shown
    assert "t10" not in shown


def test_errors_never_contain_secret_values(empty_cwd: Path) -> None:
    """Messages about padded secrets and bad URLs carry neither the secret nor the password."""
    path = write_config(empty_cwd / "c.toml", token=" padded-token-789 ")
    message = error_of(
        {"HOOKLINE_CONFIG": str(path), "HOOKLINE_AMQP_URL": "amqpx://u:amqp-pass-123@h/"}
    )
    assert "tenants[0](acme).twilio.auth_token: the value is padded with whitespace" in message
    assert "padded-token-789" not in message
    assert "amqp-pass-123" not in message
