"""Settings: environment, flags over environment, and one clear line on bad values."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import subprocess
import sys

import pytest
from yarl import URL

from gateway.settings import OPTIONS, Settings, SettingsError, build_parser, load_settings
from tests.conftest import ROOT


def test_defaults_match_the_documented_ones() -> None:
    settings = load_settings([], {})
    assert settings == Settings()
    assert settings.host == "0.0.0.0"
    assert settings.port == 8097
    assert settings.jellyfin_url == URL("http://localhost:8096")
    assert settings.qbittorrent_url == URL("http://qbittorrent:8099")
    assert settings.apibay_url == URL("https://apibay.org")
    assert settings.elevation_cache_ttl == 10
    assert settings.workers == 1
    assert settings.log_level == "INFO"
    assert settings.trusted_proxies == ()
    assert settings.path_map == ()


def test_environment_variables_are_read() -> None:
    settings = load_settings(
        [],
        {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": "9000",
            "JELLYFIN_URL": "http://jf:8096/jellyfin/",
            "QBITTORRENT_USERNAME": "admin",
            "QBITTORRENT_PASSWORD": "hunter2",
            "JELLYFIN_API_KEY": "0123456789abcdef0123456789abcdef",
            "PATH_MAP": "/media=/downloads; /tv/=/data/tv",
            "ELEVATION_CACHE_TTL": "0",
            "GATEWAY_WORKERS": "4",
            "LOG_LEVEL": "debug",
            "TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16,::1",
        },
    )
    assert settings.port == 9000
    assert settings.base_path == "/jellyfin"
    assert settings.torrent_prefix == "/jellyfin/torrent"
    assert settings.jellyfin_origin == URL("http://jf:8096")
    assert settings.path_map == (("/media", "/downloads"), ("/tv", "/data/tv"))
    assert settings.elevation_cache_ttl == 0
    assert settings.workers == 4
    assert settings.log_level == "DEBUG"
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("::1/128"),
    )


def test_a_flag_overrides_its_environment_variable() -> None:
    settings = load_settings(
        ["--jellyfin-url", "http://other:8096", "--gateway-port=1234"], {"GATEWAY_PORT": "9"}
    )
    assert settings.jellyfin_url == URL("http://other:8096")
    assert settings.port == 1234


def test_every_setting_has_a_flag_named_after_its_variable() -> None:
    names = {o.env for o in OPTIONS}
    assert {
        "GATEWAY_HOST",
        "GATEWAY_PORT",
        "JELLYFIN_URL",
        "QBITTORRENT_URL",
        "QBITTORRENT_USERNAME",
        "QBITTORRENT_PASSWORD",
        "APIBAY_URL",
        "JELLYFIN_API_KEY",
        "PATH_MAP",
        "ELEVATION_CACHE_TTL",
        "GATEWAY_WORKERS",
        "LOG_LEVEL",
        "TRUSTED_PROXIES",
    } <= names
    help_text = build_parser().format_help()
    for option in OPTIONS:
        assert option.flag == "--" + option.env.lower().replace("_", "-")
        assert option.flag in help_text
        assert option.env in help_text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_PORT": "abc"}, "GATEWAY_PORT must be a TCP port number"),
        ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT must be a TCP port number"),
        ({"JELLYFIN_URL": "jf:8096"}, "JELLYFIN_URL must be an http(s) URL"),
        ({"JELLYFIN_URL": "ftp://jf"}, "JELLYFIN_URL must be an http(s) URL"),
        ({"JELLYFIN_URL": "http://jf:99999"}, "JELLYFIN_URL must be a valid http(s) URL"),
        ({"JELLYFIN_URL": "http://jf/?a=1"}, "JELLYFIN_URL must be a URL without query"),
        ({"QBITTORRENT_URL": "not a url"}, "QBITTORRENT_URL must be"),
        ({"GATEWAY_WORKERS": "0"}, "GATEWAY_WORKERS must be a whole number of at least 1"),
        ({"ELEVATION_CACHE_TTL": "-1"}, "ELEVATION_CACHE_TTL must be a number of seconds"),
        ({"ELEVATION_CACHE_TTL": "nan"}, "ELEVATION_CACHE_TTL must be a number of seconds"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
        ({"TRUSTED_PROXIES": "10.0.0.300"}, "TRUSTED_PROXIES must be IP addresses"),
        ({"PATH_MAP": "/media"}, "PATH_MAP must be JELLYFIN_PREFIX=QBITTORRENT_PREFIX pairs"),
        ({"PATH_MAP": "media=/downloads"}, "PATH_MAP must be JELLYFIN_PREFIX paths that are absolute"),
        ({"PATH_MAP": "/media=/a/../b"}, "PATH_MAP must be QBITTORRENT_PREFIX paths without '..'"),
        ({"PATH_MAP": "/m=/a;/m/=/b"}, "PATH_MAP must be each JELLYFIN_PREFIX only once"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG must be true or false"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings([], env)
    assert str(refused.value).startswith(message)


def test_secrets_are_not_in_the_settings_repr() -> None:
    settings = load_settings([], {"QBITTORRENT_PASSWORD": "hunter2", "JELLYFIN_API_KEY": "k" * 32})
    assert "hunter2" not in repr(settings)
    assert "k" * 32 not in repr(settings)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ((), {"GATEWAY_PORT": "eighty"}),
        (("--jellyfin-url", "nope"), {}),
        (("--no-such-flag",), {}),
        (("--gateway-workers", "-3"), {}),
    ],
)
def test_the_cli_exits_2_with_one_clear_line_and_no_traceback(
    args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = _cli(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jellyfin-gateway: error: ")
    assert "Traceback" not in result.stderr


def test_the_cli_help_documents_every_setting() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    for option in OPTIONS:
        assert option.env in result.stdout


def test_watch_interval_is_read_from_its_variable_and_its_flag() -> None:
    assert load_settings([], {"WATCH_INTERVAL": "2.5"}).watch_interval == 2.5
    assert load_settings(["--watch-interval", "0.5"], {"WATCH_INTERVAL": "9"}).watch_interval == 0.5


def test_every_settings_field_but_worker_index_is_exactly_one_option() -> None:
    declared = [f.name for f in dataclasses.fields(Settings) if f.name != "worker_index"]
    assert [option.attr for option in OPTIONS] == declared
    assert len({option.env for option in OPTIONS}) == len(OPTIONS)
    assert len({option.flag for option in OPTIONS}) == len(OPTIONS)


def test_each_field_default_is_its_variables_default_parsed() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    for option in OPTIONS:
        assert defaults[option.attr] == option.parse(option.default), option.env


def test_secrets_are_exactly_the_settings_left_out_of_repr() -> None:
    hidden = {f.name for f in dataclasses.fields(Settings) if not f.repr}
    assert hidden == {option.attr for option in OPTIONS if option.secret}
    assert hidden == {"qbittorrent_password", "jellyfin_api_key", "torznab_indexers"}


def _readme_settings_rows() -> dict[str, tuple[str, str]]:
    """README's "## Settings" table as {variable: (default as written in the env, meaning)}."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        row = re.fullmatch(r"\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| (.*) \|", line)
        if row is None:
            continue
        name, default, meaning = row.groups()
        assert name not in rows, f"{name} is in README's table twice"
        rows[name] = ("" if default == "(empty)" else default.strip("`"), meaning)
    return rows


def test_the_readme_table_lists_exactly_the_settings_with_their_defaults() -> None:
    rows = _readme_settings_rows()
    assert set(rows) == {option.env for option in OPTIONS}
    for option in OPTIONS:
        assert rows[option.env][0] == option.default, option.env
        if option.secret:
            assert "Never logged." in rows[option.env][1], option.env
