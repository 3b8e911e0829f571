"""The access log never contains tokens, whichever way a client sends them."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from gateway.logs import redact_target
from tests.conftest import RunningGateway, server_url, wait_until

SECRET = "f00dfacecafebabe0123456789abcdef"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"/Videos/1/stream?api_key={SECRET}&Static=true", "/Videos/1/stream?api_key=REDACTED&Static=true"),
        (f"/socket?ApiKey={SECRET}", "/socket?ApiKey=REDACTED"),
        (f"/socket?APIKEY={SECRET}&deviceId=x", "/socket?APIKEY=REDACTED&deviceId=x"),
        (f"/x?a=1&X-Emby-Token={SECRET}", "/x?a=1&X-Emby-Token=REDACTED"),
        (f"/x?access_token={SECRET}#frag", "/x?access_token=REDACTED#frag"),
        ("/Items?searchTerm=api_key", "/Items?searchTerm=api_key"),
        ("/plain/path", "/plain/path"),
    ],
)
def test_token_values_in_targets_are_redacted(target: str, expected: str) -> None:
    assert redact_target(target) == expected


async def test_requests_with_tokens_leave_no_token_in_any_log_line(
    http: aiohttp.ClientSession, gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {
        "Authorization": f'MediaBrowser Client="c", Token="{SECRET}"',
        "X-Emby-Token": SECRET,
        "X-MediaBrowser-Token": SECRET,
        "Referer": f"http://jf/web/index.html?api_key={SECRET}",
    }
    for target in (f"/echo?api_key={SECRET}", f"/echo?ApiKey={SECRET}", f"/status/500?api_key={SECRET}"):
        async with http.get(server_url(gateway, target), headers=headers) as resp:
            await resp.read()
    async with http.ws_connect(server_url(gateway, f"/ws?api_key={SECRET}"), headers=headers) as ws:
        await ws.send_str("x")
        await ws.receive_str(timeout=5)
    # the WebSocket's line is written when its handler returns
    await wait_until(lambda: sum(r.name == "gateway.access" for r in caplog.records) == 4)
    # Only the gateway's own records: the probe upstream logs like Jellyfin would, tokens and all.
    ours = [r for r in caplog.records if r.name.startswith("gateway")]
    access = [r.getMessage() for r in ours if r.name == "gateway.access"]
    assert len(access) == 4
    assert any("api_key=REDACTED" in line for line in access)
    assert all(SECRET not in r.getMessage() for r in ours)


async def test_upstream_errors_are_logged_without_tokens(
    http: aiohttp.ClientSession, gateway_factory: object, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import free_port

    gateway = await gateway_factory(f"http://127.0.0.1:{free_port()}")  # type: ignore[operator]
    caplog.set_level(logging.DEBUG)
    async with http.get(server_url(gateway, f"/Users/Me?api_key={SECRET}")) as resp:
        assert resp.status == 502
        assert SECRET not in await resp.text()
    ours = [r for r in caplog.records if r.name.startswith("gateway")]
    assert any(r.levelno == logging.WARNING for r in ours)
    assert all(SECRET not in r.getMessage() for r in ours)
