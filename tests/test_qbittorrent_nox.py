"""The test harness for real qbittorrent-nox 4.5 and 5.1 works, and shows the facts the gateway relies on.

Missing binaries make these tests fail (not skip): CI must not go green without qBittorrent.
"""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp

from tests.conftest import QbtFactory, wait_until
from tests.qbittorrent_nox import QbtInstance

# A torrent that was never paused/stopped reports one of these; both spellings (≤ 4.6 / ≥ 5.0).
STOPPED_STATES = {"pausedDL", "pausedUP", "stoppedDL", "stoppedUP"}


async def wait_for_stopped(qbt: QbtInstance, info_hash: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll ``torrents/info`` until the torrent is listed with a stopped state.

    Both steps lag: ``Ok.`` comes before the magnet is in the session (and after a restart the
    torrents are loaded after the WebUI answers), and ``state`` is refreshed every 1.5 s.
    """
    seen: list[dict[str, Any]] = []

    async def stopped() -> bool:
        seen[:] = await qbt.torrents(hashes=info_hash)
        return bool(seen) and seen[0]["state"] in STOPPED_STATES

    assert await wait_until(stopped, timeout, interval=0.1), (
        f"{info_hash} not stopped after {timeout} s: {seen}"
    )
    assert [t["hash"] for t in seen] == [info_hash]
    return seen[0]


async def test_starts_and_reports_versions(qbt_binary: tuple[str, str], qbt_factory: QbtFactory) -> None:
    """4.5 speaks WebAPI 2.8.19 and 5.1 speaks 2.11.x: the gateway switches verbs on this."""
    version, _ = qbt_binary
    qbt = await qbt_factory()
    assert qbt.running
    assert qbt.version.startswith(f"v{version}.")
    if version == "4.5":
        assert qbt.webapi_version == "2.8.19"
    else:
        assert qbt.webapi_version.startswith("2.11.")
    # Only auth/login is public: without the cookie even the version is 403.
    async with aiohttp.ClientSession() as fresh, fresh.get(f"{qbt.url}/api/v2/app/version") as response:
        assert response.status == 403
    status, body = await qbt.api("GET", "app/preferences")
    assert status == 200
    assert '"save_path"' in body


async def test_wrong_password_fails(qbt_factory: QbtFactory) -> None:
    """A bad password is ``200 Fails.`` (not 401), and one failure does not ban the right one."""
    qbt = await qbt_factory()  # its own instance: failed logins count towards the IP ban
    login = f"{qbt.url}/api/v2/auth/login"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as fresh:
        async with fresh.post(login, data={"username": qbt.username, "password": "wrong"}) as response:
            assert (response.status, await response.text()) == (200, "Fails.")
        assert len(fresh.cookie_jar) == 0
        async with fresh.post(login, data={"username": qbt.username, "password": qbt.password}) as response:
            assert (response.status, await response.text()) == (200, "Ok.")
        assert len(fresh.cookie_jar) == 1


async def test_add_stopped_magnet_survives_restart(qbt_factory: QbtFactory) -> None:
    """``paused=true&stopped=true`` adds stopped on both versions, and the torrent is persisted."""
    qbt = await qbt_factory()
    info_hash = secrets.token_hex(20)
    magnet = f"magnet:?xt=urn:btih:{info_hash}&dn=test"
    status, body = await qbt.api("POST", "torrents/add", urls=magnet, paused=True, stopped=True)
    assert (status, body) == (200, "Ok.")

    torrent = await wait_for_stopped(qbt, info_hash)
    assert torrent["name"] == "test"

    await qbt.restart()
    await wait_for_stopped(qbt, info_hash)
    assert [t["hash"] for t in await qbt.torrents()] == [info_hash]
