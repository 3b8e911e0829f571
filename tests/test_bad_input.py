"""Bad but well-formed input to the /torrent API is a 400 with a reason, and reaches no upstream.

Lone surrogates (``"\\ud800"`` in JSON, ``%ED%A0%80`` in a query), JSON nested deeper than 64 levels
and bodies that are not UTF-8 parse without complaint in Python and then fail somewhere deep inside a
handler; they are refused where bodies and query values are read.
"""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.apibay_standin import ApibayState, create_apibay_standin
from tests.conftest import GatewayFactory, RunningGateway, ServerFactory, server_url, wait_until
from tests.jellyfin_standin import StandinState
from tests.qbittorrent_stub import StubQbittorrent, create_stub_qbittorrent

HASH = "0123456789abcdef0123456789abcdef01234567"
#: A UTF-8-encoded surrogate (invalid UTF-8) and a byte that starts no UTF-8 character.
SURROGATE_IN_URL = "%ED%A0%80"


@pytest.fixture
def qbt_stub() -> StubQbittorrent:
    return StubQbittorrent()


@pytest.fixture
def apibay_state() -> ApibayState:
    return ApibayState()


@pytest.fixture
async def gateway(
    aiohttp_server: ServerFactory,
    jellyfin: TestServer,
    qbt_stub: StubQbittorrent,
    apibay_state: ApibayState,
    gateway_factory: GatewayFactory,
) -> RunningGateway:
    qbittorrent = await aiohttp_server(create_stub_qbittorrent(qbt_stub))
    apibay = await aiohttp_server(create_apibay_standin(apibay_state))
    started = await gateway_factory(
        server_url(jellyfin), qbittorrent_url=server_url(qbittorrent), apibay_url=server_url(apibay)
    )
    # A started gateway asks once for downloads still waiting to be organized; the rest is the test's.
    assert await wait_until(lambda: any("tag=jellyfin-gateway-organize" in r for r in qbt_stub.requests))
    qbt_stub.requests.clear()
    return started


@pytest.fixture
def admin(standin_state: StandinState) -> dict[str, str]:
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    return {"Authorization": f'MediaBrowser Token="{token}"'}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (f'{{"Info_hash": "{HASH}", "Name": "\\ud800"}}'.encode(), "surrogate"),
        (f'{{"Info_hash": "{HASH}", "Name": "ok \\udfff"}}'.encode(), "surrogate"),
        (f'{{"Info_hash": "{HASH}\\ud800"}}'.encode(), "surrogate"),
        (f'{{"Info_hash": "{HASH}", "Library": "Movies\\ud800"}}'.encode(), "surrogate"),
        (f'{{"Info_hash": "{HASH}", "SavePath": "/media/movies/\\ud800"}}'.encode(), "surrogate"),
        (f'{{"Info_hash": "{HASH}", "\\udc00": 1}}'.encode(), "surrogate"),
        (f'{{"Info_hash": "{HASH}", "Extra": [{{"deep": ["\\ud800"]}}]}}'.encode(), "surrogate"),
        (f'{{"Info_hash": "{HASH}", "Extra": {_nested(64)}}}'.encode(), "64"),
        (f'{{"Info_hash": "{HASH}", "Extra": {_nested(100_000)}}}'.encode(), "64"),
        (json.dumps({"Info_hash": HASH, "Name": "Amélie"}, ensure_ascii=False).encode("latin-1"), "UTF-8"),
        (json.dumps({"Info_hash": HASH}).encode("utf-16"), "UTF-8"),
        (json.dumps({"Info_hash": HASH}).encode("utf-32"), "UTF-8"),
        (f'{{"Info_hash": "{HASH}", "Name": "\ud800"}}'.encode("utf-16-le", "surrogatepass"), "UTF-8"),
    ],
    ids=[
        "name-high-surrogate",
        "name-low-surrogate",
        "hash-surrogate",
        "library-surrogate",
        "savepath-surrogate",
        "key-surrogate",
        "nested-surrogate",
        "65-levels",
        "100000-levels",
        "latin-1",
        "utf-16",
        "utf-32",
        "utf-16-surrogate",
    ],
)
async def test_a_download_body_with_bad_text_or_nesting_is_a_400_and_reaches_nothing(
    http: aiohttp.ClientSession,
    gateway: RunningGateway,
    admin: dict[str, str],
    qbt_stub: StubQbittorrent,
    standin_state: StandinState,
    body: bytes,
    reason: str,
) -> None:
    headers = {**admin, "Content-Type": "application/json"}
    async with http.post(server_url(gateway, "/torrent/download"), data=body, headers=headers) as resp:
        assert resp.status == 400, await resp.text()
        assert reason in (await resp.json())["error"]
    assert qbt_stub.requests == []
    assert standin_state.calls["GET /library/virtualfolders"] == 0


@pytest.mark.parametrize(
    ("method", "target", "name"),
    [
        ("GET", f"/torrent/search?q={SURROGATE_IN_URL}", "q"),
        ("GET", "/torrent/search?q=%FF", "q"),
        ("GET", f"/torrent/search?q=ubuntu&cat={SURROGATE_IN_URL}", "cat"),
        ("GET", f"/torrent/search?Q=ubuntu{SURROGATE_IN_URL}", "q"),
        ("POST", f"/torrent/pause?hash={SURROGATE_IN_URL}", "hash"),
        ("POST", f"/torrent/resume?hash={HASH}{SURROGATE_IN_URL}", "hash"),
        ("POST", f"/torrent/delete?hash={HASH}&deleteFiles=true{SURROGATE_IN_URL}", "deleteFiles"),
    ],
)
async def test_a_query_value_that_is_not_utf_8_is_a_400_and_reaches_nothing(
    http: aiohttp.ClientSession,
    gateway: RunningGateway,
    admin: dict[str, str],
    qbt_stub: StubQbittorrent,
    apibay_state: ApibayState,
    method: str,
    target: str,
    name: str,
) -> None:
    async with http.request(method, server_url(gateway, target), headers=admin) as resp:
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
    assert name in error
    assert "UTF-8" in error
    assert qbt_stub.requests == []
    assert apibay_state.total_calls == 0
