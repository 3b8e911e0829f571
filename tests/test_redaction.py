"""Logs never show a token, however the query encodes its key.

Jellyfin (and the gateway) decode query keys before matching them, so ``api%5Fkey=`` is as much a
token as ``api_key=``; a redactor that matched raw keys would log it in full.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest

from gateway.logs import redact_target
from tests.conftest import GatewayFactory, RunningGateway, free_port, server_url, wait_until

SECRET = "f00dfacecafebabe0123456789abcdef"

#: Query strings that carry SECRET as a token, each with its redacted form.
ENCODED: list[tuple[str, str]] = [
    (f"api%5Fkey={SECRET}", "api%5Fkey=REDACTED"),
    (f"api%5fkey={SECRET}&Static=true", "api%5fkey=REDACTED&Static=true"),
    (f"%61pi_key={SECRET}", "%61pi_key=REDACTED"),
    (f"Api%4Bey={SECRET}&deviceId=d1", "Api%4Bey=REDACTED&deviceId=d1"),
    (f"deviceId=d1&%41%50%49%4B%45%59={SECRET}", "deviceId=d1&%41%50%49%4B%45%59=REDACTED"),
    (f"api_key%3D{SECRET}", "REDACTED"),  # ASP.NET re-parses a query that is one encoded item
    (f"ApiKey%3D{SECRET}%26deviceId%3Dd1", "REDACTED"),
    (f"deviceId%3Dd1%26api_key%3D{SECRET}=", "REDACTED"),
    (f"access%5Ftoken={SECRET}", "access%5Ftoken=REDACTED"),
    (f"X%2DEmby%2DToken={SECRET}", "X%2DEmby%2DToken=REDACTED"),
    (f"x-mediabrowser-token={SECRET}", "x-mediabrowser-token=REDACTED"),
    (f"ap%C4%B1_key={SECRET}", "ap%C4%B1_key=REDACTED"),  # dotless i: .NET's ignore-case matches it
    (f"ApiKey=&api_key={SECRET}", "ApiKey=REDACTED&api_key=REDACTED"),
    (f"api_key={SECRET}%26x%3D1&x=2", "api_key=REDACTED&x=2"),
    (f"api_key={SECRET}={SECRET}", "api_key=REDACTED"),
]


#: Targets without a token: they must come out byte for byte.
HARMLESS = [
    "/plain/path",
    "/Items?searchTerm=api_key&api=key",
    "/Items?searchTerm=api%5Fkey&SortBy=Name%2CYear",
    "/Items?apikeys=1&api_key_x=2&my_token=3",
    "/Items?api+key=1",  # "+" is a space: the key is "api key"
    "/web/api_key=1/index.html",  # a path is no query
    "/Items?api_key",  # no value, nothing to hide
    "/Items?%41%3D1%26b%3D2",  # one encoded item, no token key in it
    "/Items?Name=%E2%82%AC%20%ZZ&Empty=&&x",
    "/web/#/details?id=1",
]


@pytest.mark.parametrize(
    ("target", "expected"),
    [(f"/Videos/1/stream.mp4?{query}", f"/Videos/1/stream.mp4?{redacted}") for query, redacted in ENCODED]
    + [
        (f"http://jf/web/index.html?{query}", f"http://jf/web/index.html?{redacted}")
        for query, redacted in ENCODED
    ]
    + [(target, target) for target in HARMLESS],
)
def test_token_values_are_redacted_in_any_encoding_and_nothing_else_changes(
    target: str, expected: str
) -> None:
    assert redact_target(target) == expected
    assert SECRET not in redact_target(target)


def test_the_fragment_keeps_its_bytes_and_a_hash_route_is_redacted_too() -> None:
    assert redact_target(f"/x?access_token={SECRET}#frag") == "/x?access_token=REDACTED#frag"
    assert (
        redact_target(f"http://jf/web/#/details?id=1&api%5Fkey={SECRET}")
        == "http://jf/web/#/details?id=1&api%5Fkey=REDACTED"
    )


async def test_the_access_log_never_shows_a_token_in_any_encoding(
    http: aiohttp.ClientSession, gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for query, _ in ENCODED:
        headers = {"Referer": f"http://jf/web/index.html?{query}"}
        async with http.get(server_url(gateway, f"/echo?{query}"), headers=headers) as resp:
            assert resp.status == 200
    await wait_until(lambda: sum(r.name == "gateway.access" for r in caplog.records) == len(ENCODED))
    access = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert len(access) == len(ENCODED)
    assert all(SECRET not in line and "REDACTED" in line for line in access)
    assert all(SECRET not in r.getMessage() for r in caplog.records if r.name.startswith("gateway"))


async def test_a_failing_upstream_logs_no_token_in_any_encoding(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateway_factory(f"http://127.0.0.1:{free_port()}")
    caplog.set_level(logging.DEBUG)
    for query, _ in ENCODED:
        for path in ("/Users/Me", "/torrent/Test1"):
            async with http.get(server_url(gateway, f"{path}?{query}")) as resp:
                # 401 where the gateway (as Jellyfin) sees no token in that key
                assert resp.status in (401, 502)
                assert SECRET not in await resp.text()
    await wait_until(lambda: sum(r.name == "gateway.access" for r in caplog.records) == 2 * len(ENCODED))
    ours = [r for r in caplog.records if r.name.startswith("gateway")]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert sum("/Users/Me?" in line for line in warnings) == len(ENCODED)
    assert sum(r.name == "gateway.access" for r in ours) == 2 * len(ENCODED)
    assert all(SECRET not in r.getMessage() for r in ours)
