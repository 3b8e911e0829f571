"""The admin pages in a real headless Chromium (Debian's), against the gateway, the Jellyfin and apibay
stand-ins and a real qbittorrent-nox.

Every test also fails on a JavaScript error, a console error or any dialog (an XSS payload that ran
would open one).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Route,
    async_playwright,
    expect,
)
from yarl import URL

from gateway.pages import CONTENT_SECURITY_POLICY
from tests.apibay_standin import DEFAULT_ROW_COUNT, ApibayState, info_hash
from tests.conftest import RunningGateway, StackFactory, server_url, wait_until
from tests.jellyfin_standin import StandinState
from tests.qbittorrent_nox import QbtInstance, binaries, require_binary

CHROMIUM = "/usr/bin/chromium"
XSS_NAME = "<img src=x onerror=alert(1)>"
TIMEOUT_MS = 15_000
#: The apibay stand-in's row for Schindler's List has this IMDb id (tests/apibay_standin.py).
SCHINDLERS_LIST_IMDB = "tt0108052"


@dataclass
class Site:
    gateway: RunningGateway
    qbt: QbtInstance
    standin: StandinState
    #: The Jellyfin stand-in itself (not through the gateway), to ask it whether a token still works.
    jellyfin: URL
    #: The apibay stand-in's state (its rows, the searches it received).
    apibay: ApibayState
    problems: list[str] = field(default_factory=list)
    #: Console lines a test provokes on purpose (Chromium logs every 4xx answer as an error).
    expected: list[str] = field(default_factory=list)

    @property
    def ui(self) -> str:
        return str(server_url(self.gateway, "/torrent/ui"))

    @property
    def library(self) -> Path:
        """Jellyfin's /media as qBittorrent (and this machine) sees it (PATH_MAP)."""
        return self.qbt.downloads.parent / "library"

    def token(self, user: str) -> str:
        return self.standin.issue_token(self.standin.user_by_name(user))

    async def token_works(self, token: str) -> bool:
        """Whether Jellyfin (the stand-in, asked directly) still accepts ``token``."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                self.jellyfin / "Users" / "Me", headers={"Authorization": f'MediaBrowser Token="{token}"'}
            ) as response,
        ):
            assert response.status in (200, 401), response.status
            return response.status == 200

    def logout_calls(self) -> list[str]:
        """The Authorization headers of every POST /Sessions/Logout Jellyfin received."""
        return [
            r.headers.get("Authorization", "")
            for r in self.standin.requests
            if r.method == "POST" and r.path_qs.split("?")[0] == "/Sessions/Logout"
        ]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield browser
        await browser.close()


@pytest.fixture
def qbt_binary() -> tuple[str, str]:
    """The pages run against qBittorrent 4.5 only (the API tests cover both versions)."""
    binary = binaries()["4.5"]
    require_binary(binary)
    return "4.5", binary


@pytest.fixture
def gateway_settings() -> dict[str, Any]:
    """Settings of the site's gateway beyond the defaults; a test parametrizes this to change them."""
    return {}


@pytest.fixture
async def site(stack_factory: StackFactory, gateway_settings: dict[str, Any]) -> Site:
    stack = await stack_factory(watch_interval=0.2, **gateway_settings)
    return Site(stack.gateway, stack.qbt, stack.jellyfin, stack.jellyfin_url, stack.apibay)


@pytest.fixture
async def context(browser: Browser, site: Site) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    await context.close()
    assert site.problems == [], site.problems


def _watch(page: Page, site: Site) -> Page:
    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not any(text in message.text for text in site.expected):
            site.problems.append(f"console error: {message.text}")

    async def dialog(d: Dialog) -> None:
        site.problems.append(f"dialog opened: {d.type} {d.message}")
        await d.dismiss()

    page.on("console", console)
    page.on("pageerror", lambda error: site.problems.append(f"page error: {error}"))
    page.on("dialog", dialog)
    return page


async def _signed_in_page(context: BrowserContext, site: Site, user: str = "admin") -> Page:
    """A page whose Jellyfin web client already signed in (it keeps jellyfin_credentials)."""
    credentials = {
        "Servers": [{"Id": "x", "AccessToken": site.token(user), "DateLastAccessed": "2026-11-26T20:00:00Z"}]
    }
    await context.add_init_script(
        f"window.localStorage.setItem('jellyfin_credentials', {json.dumps(json.dumps(credentials))});"
    )
    return _watch(await context.new_page(), site)


async def _screenshot(page: Page, name: str, tmp_path: Path, *, full_page: bool = True) -> None:
    target = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 5_000


async def test_signing_in_through_the_form_opens_the_search_page(
    context: BrowserContext, site: Site, tmp_path: Path
) -> None:
    page = _watch(await context.new_page(), site)
    await page.goto(site.ui + "/search")
    await expect(page).to_have_url(site.ui + "/signin")
    await expect(page.locator("#signout")).to_be_hidden()
    await _screenshot(page, "signin", tmp_path)
    await page.locator("#username").fill("admin")
    site.expected.append("the server responded with a status of 401")
    await page.locator("#password").fill("wrong")
    await page.locator("#signin-submit").click()
    await expect(page.locator("#feedback")).to_contain_text("Wrong user name or password")
    await page.locator("#password").fill("adminpw")
    await page.locator("#signin-submit").click()
    await expect(page).to_have_url(site.ui + "/search")
    await expect(page.locator("#search-form")).to_be_visible()
    site.expected.clear()
    token = await page.evaluate("localStorage.getItem('jellyfin-gateway.token')")
    assert token in site.standin.tokens
    # The token travels in headers only: no request of the page put it in a URL.
    assert all(token not in r.path_qs for r in site.standin.requests)
    await page.locator("#signout").click()
    await expect(page).to_have_url(site.ui + "/signin")


async def _sign_in_through_the_form(page: Page, site: Site) -> str:
    """Sign in as admin with the page's own form; returns the token the page keeps for itself."""
    await page.goto(site.ui + "/signin")
    await page.locator("#username").fill("admin")
    await page.locator("#password").fill("adminpw")
    await page.locator("#signin-submit").click()
    await expect(page).to_have_url(site.ui + "/search")
    await expect(page.locator("#search-form")).to_be_visible()
    token = await page.evaluate("localStorage.getItem('jellyfin-gateway.token')")
    assert isinstance(token, str)
    assert token in site.standin.tokens
    return token


async def _own_token(page: Page) -> Any:
    return await page.evaluate("localStorage.getItem('jellyfin-gateway.token')")


async def _jellyfin_web_token(page: Page) -> str:
    credentials = json.loads(await page.evaluate("localStorage.getItem('jellyfin_credentials')"))
    token = credentials["Servers"][0]["AccessToken"]
    assert isinstance(token, str)
    return token


@pytest.mark.parametrize("where", ["search", "downloads"])  # downloads: with its live stream open
async def test_signing_out_ends_the_jellyfin_session_the_form_started(
    context: BrowserContext, site: Site, where: str
) -> None:
    page = _watch(await context.new_page(), site)
    token = await _sign_in_through_the_form(page, site)
    assert await site.token_works(token)
    if where == "downloads":
        await page.locator("#nav a", has_text="Downloads").click()
        await expect(page.locator("#live-status")).to_have_text("Live updates on.")

    await page.locator("#signout").click()
    await expect(page).to_have_url(site.ui + "/signin")
    await expect(page.locator("#signin-form")).to_be_visible()
    assert await wait_until(lambda: token not in site.standin.tokens)
    assert not await site.token_works(token)  # Jellyfin itself no longer accepts it
    assert await _own_token(page) is None
    # Revoked with the same MediaBrowser header the pages send, the token in it and nowhere else.
    [authorization] = site.logout_calls()
    assert authorization.startswith('MediaBrowser Client="Jellyfin%20Torrent%20Gateway"')
    assert f'Token="{token}"' in authorization
    assert all(token not in r.path_qs for r in site.standin.requests)
    # Signed out means signed out: reloading the sign-in page does not get back in.
    await page.reload()
    await expect(page.locator("#signin-form")).to_be_visible()
    await expect(page).to_have_url(site.ui + "/signin")


async def test_signing_out_leaves_a_borrowed_jellyfin_web_sign_in_alone(
    context: BrowserContext, site: Site
) -> None:
    page = await _signed_in_page(context, site)
    await page.goto(site.ui + "/search")
    await expect(page.locator("#search-form")).to_be_visible()
    token = await _jellyfin_web_token(page)
    assert await _own_token(page) is None  # borrowed, not the page's own

    await page.locator("#signout").click()
    await expect(page).to_have_url(site.ui + "/signin")
    await expect(page.locator("#signin-form")).to_be_visible()
    await asyncio.sleep(0.3)  # a stray logout call would have arrived by now
    assert site.logout_calls() == []
    assert token in site.standin.tokens
    assert await site.token_works(token)  # Jellyfin web stays signed in
    # Jellyfin web's entry is read, never written.
    assert await _jellyfin_web_token(page) == token


async def test_signing_out_revokes_only_the_form_token_when_jellyfin_web_is_signed_in_too(
    context: BrowserContext, site: Site
) -> None:
    # Jellyfin web is signed in as a non-admin; the admin then signs in through the page's form.
    site.expected.append("the server responded with a status of 403")  # alice's admin check
    page = await _signed_in_page(context, site, user="alice")
    own = await _sign_in_through_the_form(page, site)
    web_token = await _jellyfin_web_token(page)
    assert own != web_token

    await page.locator("#signout").click()
    await expect(page).to_have_url(site.ui + "/signin")
    await expect(page.locator("#signin-form")).to_be_visible()
    assert await wait_until(lambda: own not in site.standin.tokens)
    assert not await site.token_works(own)
    assert await site.token_works(web_token)
    assert len(site.logout_calls()) == 1


async def test_signing_out_forgets_the_token_when_jellyfin_already_ended_the_session(
    context: BrowserContext, site: Site
) -> None:
    page = _watch(await context.new_page(), site)
    token = await _sign_in_through_the_form(page, site)
    site.standin.revoke_token(token)  # expired or revoked elsewhere meanwhile
    site.expected.append("the server responded with a status of 401")  # Chromium logs the logout's 401
    await page.locator("#signout").click()
    await expect(page).to_have_url(site.ui + "/signin")
    await expect(page.locator("#signin-form")).to_be_visible()
    assert await _own_token(page) is None
    assert len(site.logout_calls()) == 1


async def test_signing_out_forgets_the_token_when_jellyfin_cannot_be_reached(
    context: BrowserContext, site: Site
) -> None:
    page = _watch(await context.new_page(), site)
    token = await _sign_in_through_the_form(page, site)

    async def unreachable(route: Route) -> None:
        await route.abort("connectionrefused")

    await page.route("**/Sessions/Logout", unreachable)
    site.expected.append("net::ERR_CONNECTION_REFUSED")  # Chromium logs the failed request itself
    await page.locator("#signout").click()
    await expect(page).to_have_url(site.ui + "/signin")
    await expect(page.locator("#signin-form")).to_be_visible()
    assert await _own_token(page) is None
    assert token in site.standin.tokens  # never reached Jellyfin; forgotten here all the same
    await page.reload()
    await expect(page.locator("#signin-form")).to_be_visible()
    await expect(page).to_have_url(site.ui + "/signin")


async def test_a_jellyfin_web_sign_in_is_reused_without_a_second_password(
    context: BrowserContext, site: Site
) -> None:
    page = await _signed_in_page(context, site)
    await page.goto(site.ui + "/search")
    await expect(page.locator("#search-form")).to_be_visible()
    await expect(page).to_have_url(site.ui + "/search")


async def test_a_non_admin_sees_administrators_only(context: BrowserContext, site: Site) -> None:
    site.expected.append("the server responded with a status of 403")  # the admin check, as designed
    page = await _signed_in_page(context, site, user="alice")
    await page.goto(site.ui + "/downloads")
    await expect(page.locator("#admin-only")).to_be_visible()
    await expect(page.locator("#admin-only")).to_contain_text("Administrators only")
    await expect(page.locator("#downloads")).to_be_hidden()


async def test_search_download_into_a_library_then_pause_resume_and_delete(
    context: BrowserContext, site: Site, tmp_path: Path
) -> None:
    page = await _signed_in_page(context, site)
    await page.goto(site.ui + "/search")
    await page.locator("#q").fill("ubuntu")
    await page.locator("#search-submit").click()
    rows = page.locator("tr.result")
    await expect(rows).to_have_count(DEFAULT_ROW_COUNT)  # every apibay row: "Anything", up to 50
    await expect(page.locator("#feedback")).to_have_text(f"{DEFAULT_ROW_COUNT} results found.")
    await expect(page.locator("#sources-status li")).to_have_text([f"apibay {DEFAULT_ROW_COUNT}"])
    await expect(page.locator("#filter-summary")).to_have_text(f"Showing all {DEFAULT_ROW_COUNT} results.")
    # The XSS payload is shown as text, inert.
    await expect(page.locator("td.name", has_text=XSS_NAME)).to_have_count(1)
    assert await page.locator("#results img").count() == 0
    await _screenshot(page, "search", tmp_path)

    row = rows.filter(has=page.locator("td.name", has_text="Schindler's List"))
    await expect(row.locator(".release-name")).to_have_text("Schindler's List (1993) [1080p]")
    await expect(row.locator(".chip")).to_have_text(["1080p"])
    await expect(row.locator("td.sources")).to_have_text("apibay")
    await expect(row.locator(".library-badge")).to_have_count(0)  # Jellyfin has no such movie here
    info_hash = str(await row.get_attribute("data-hash")).lower()
    await row.locator("select.library").select_option("Movies")
    await row.locator("button.download").click()
    await expect(page.locator("#feedback")).to_contain_text("Started downloading: Schindler's List")
    # Organized by default: a folder named for Jellyfin, with the IMDb id of apibay's row.
    folder = f"Schindler's List (1993) [imdbid-{SCHINDLERS_LIST_IMDB}]"
    await expect(page.locator("#feedback")).to_contain_text(f"Saving to /media/movies/{folder}")
    torrent_info = await _listed_by_qbittorrent(site, info_hash)
    assert torrent_info["save_path"].rstrip("/") == str(site.library / "movies" / folder)
    assert f"jellyfin-gateway-imdb:{SCHINDLERS_LIST_IMDB}" in _tags(torrent_info)

    await page.locator("#nav a", has_text="Downloads").click()
    torrent = page.locator(f'tr.torrent[data-hash="{info_hash}"]')
    await expect(torrent.locator("td.name")).to_have_text("Schindler's List (1993) [1080p]")
    await expect(torrent.locator("td.state")).to_have_text("downloading metadata")
    await expect(torrent.locator("td.landing")).to_have_text("")  # nothing to say while downloading
    await _screenshot(page, "downloads", tmp_path)

    await torrent.locator("button.pause").click()
    await expect(torrent.locator("td.state")).to_have_text("paused")
    await torrent.locator("button.resume").click()
    await expect(torrent.locator("td.state")).to_have_text("downloading metadata")
    await torrent.locator("button.delete").click()
    await expect(page.locator("#confirm-delete")).to_be_visible()
    await page.locator("#delete-files").check()
    await page.locator("#confirm-delete-yes").click()
    await expect(torrent).to_have_count(0)
    assert await site.qbt.torrents(hashes=info_hash) == []


async def _listed_by_qbittorrent(site: Site, info_hash: str) -> dict[str, Any]:
    """The torrent as qBittorrent lists it (it says "Ok." to an add a few ms before it lists it)."""
    torrents: list[dict[str, Any]] = []
    for _ in range(50):
        torrents = await site.qbt.torrents(hashes=info_hash)
        if torrents:
            break
        await asyncio.sleep(0.05)
    assert len(torrents) == 1, info_hash
    return torrents[0]


def _tags(torrent: dict[str, Any]) -> set[str]:
    return {tag.strip() for tag in str(torrent.get("tags", "")).split(",") if tag.strip()}


#: What the apibay stand-in lacks: a 2160p release (of a title its rows have at 1080p). Added by
#: :func:`_a_2160p_release_on_apibay`, as apibay would send it (HTML-escaped name, every value a string).
SCHINDLERS_LIST_2160P = "Schindler's List 1993 2160p UHD BluRay REMUX HDR HEVC-GRP"
#: The folder the gateway names for Schindler's List (and where the Jellyfin stand-in has it).
SCHINDLERS_LIST_FOLDER = f"Schindler's List (1993) [imdbid-{SCHINDLERS_LIST_IMDB}]"
#: The stand-in's own row for it (the third of its default rows), at 1080p.
SCHINDLERS_LIST_1080P_HASH = info_hash("standin-row-2").lower()


def _a_2160p_release_on_apibay(site: Site) -> str:
    """Schindler's List at 2160p on apibay, with more seeders than any other row; its info hash."""
    row = {
        "id": "49999999",
        "name": SCHINDLERS_LIST_2160P.replace("'", "&#039;"),
        "info_hash": info_hash("standin-schindlers-list-2160p"),
        "leechers": "42",
        "seeders": "1500",
        "num_files": "3",
        "size": str(62 * 1024**3),
        "username": "UHDgroup",
        "added": "1732600000",
        "status": "vip",
        "category": "207",
        "imdb": SCHINDLERS_LIST_IMDB,
    }
    site.apibay.rows.append(row)
    # The library index is built at the first search, alongside the sources; a slower apibay makes
    # sure it is there when the results are marked (the gateway waits 100 ms for it, no more).
    site.apibay.delay = 0.5
    return row["info_hash"].lower()


def _schindlers_list_in_jellyfin(site: Site) -> str:
    """Schindler's List in the Movies library at 1080p, its folder named with the IMDb id as the
    gateway names it (so Jellyfin's item carries the id); the item's id."""
    site.standin.filesystem["/media"] = site.library
    local = site.library / "movies" / SCHINDLERS_LIST_FOLDER
    local.mkdir(parents=True, exist_ok=True)
    (local / f"{SCHINDLERS_LIST_FOLDER}.mkv").write_bytes(b"\0" * 4096)
    [movie] = [
        item for item in site.standin.scan(f"/media/movies/{SCHINDLERS_LIST_FOLDER}") if item.type == "Movie"
    ]
    assert movie.provider_ids.get("Imdb") == SCHINDLERS_LIST_IMDB
    movie.video_size = (1920, 1080)
    return movie.id


def _finds_asked(page: Page) -> list[URL]:
    """Every /torrent/find request the page makes from now on (a list that grows)."""
    asked: list[URL] = []
    page.on(
        "request", lambda request: asked.append(URL(request.url)) if "/torrent/find" in request.url else None
    )
    return asked


async def test_search_filters_to_2160p_shows_an_upgrade_of_a_title_in_the_library_and_downloads_it(
    context: BrowserContext, site: Site, tmp_path: Path
) -> None:
    item_id = _schindlers_list_in_jellyfin(site)
    upgrade_hash = _a_2160p_release_on_apibay(site)
    page = await _signed_in_page(context, site)
    asked = _finds_asked(page)
    await page.goto(site.ui + "/search")
    await page.locator("#q").fill("schindler")
    await page.locator("#type").select_option("movie")
    await page.locator("#search-submit").click()
    rows = page.locator("tr.result")
    await expect(rows.first).to_have_attribute("data-hash", upgrade_hash)  # sorted by seeders
    total = await rows.count()
    assert total > 1
    [find] = asked
    assert (find.query["q"], find.query["type"]) == ("schindler", "movie")

    # The 1080p release Jellyfin already has: marked, but no upgrade.
    owned = page.locator(f'tr.result[data-hash="{SCHINDLERS_LIST_1080P_HASH}"]')
    await expect(owned.get_by_role("link")).to_have_text("In library: 1080p")

    # Filtered here, without asking the gateway again: only the 2160p release is left.
    await page.locator("#resolution").select_option("2160p")
    shown = page.locator("tr.result:visible")
    await expect(shown).to_have_count(1)
    await expect(page.locator("#filter-summary")).to_have_text(f"Showing 1 of {total} results.")
    row = page.locator(f'tr.result[data-hash="{upgrade_hash}"]')
    await expect(row).to_be_visible()
    await expect(row.locator(".release-name")).to_have_text(SCHINDLERS_LIST_2160P)
    await expect(row.locator(".chip")).to_have_text(["2160p", "REMUX", "HDR", "x265"])
    await expect(row.locator("td.size")).to_have_text("62.0 GiB")
    await expect(row.locator("td.seeders")).to_have_text("1500")
    await expect(row.locator("td.added")).to_have_text("2024-11-26")
    badge = row.get_by_role("link")
    await expect(badge).to_have_text("In library: 1080p Upgrade to 2160p")
    await expect(badge).to_have_attribute("href", _item_url(site, item_id))
    await _screenshot(page, "search-in-library", tmp_path)

    # "Hide titles already in the library" hides the copy Jellyfin has, never the upgrade of it.
    await page.locator("#resolution").select_option("")
    await page.locator("#hide-owned").check()
    await expect(owned).to_be_hidden()
    await expect(row).to_be_visible()
    await expect(page.locator("#filter-summary")).to_have_text(f"Showing {total - 1} of {total} results.")
    await page.locator("#min-seeders").fill("1400")
    await expect(shown).to_have_count(1)
    await page.locator("#max-size").fill("50")
    await expect(shown).to_have_count(0)
    await expect(page.locator("#filter-summary")).to_have_text(
        f"No results match the filters ({total} hidden)."
    )
    await page.locator("#clear-filters").click()
    await expect(shown).to_have_count(total)
    assert len(asked) == 1

    # Downloaded into Movies, the IMDb id handed on: the organized folder Jellyfin already knows.
    await row.locator("select.library").select_option("Movies")
    await row.locator("button.download").click()
    await expect(page.locator("#feedback")).to_contain_text(
        f"Saving to /media/movies/{SCHINDLERS_LIST_FOLDER}"
    )
    torrent = await _listed_by_qbittorrent(site, upgrade_hash)
    assert torrent["save_path"].rstrip("/") == str(site.library / "movies" / SCHINDLERS_LIST_FOLDER)
    assert f"jellyfin-gateway-imdb:{SCHINDLERS_LIST_IMDB}" in _tags(torrent)


async def test_a_search_handed_over_in_the_address_runs_at_once(context: BrowserContext, site: Site) -> None:
    page = await _signed_in_page(context, site)
    asked = _finds_asked(page)
    await page.goto(site.ui + f"/search?q=schindler&imdb={SCHINDLERS_LIST_IMDB}&type=movie")
    await expect(page.locator("tr.result").first).to_be_visible()
    await expect(page.locator("#q")).to_have_value("schindler")
    await expect(page.locator("#type")).to_have_value("movie")
    await expect(page.locator("#imdb-id")).to_have_text(SCHINDLERS_LIST_IMDB)
    [find] = asked
    assert dict(find.query) == {"q": "schindler", "imdb": SCHINDLERS_LIST_IMDB, "type": "movie"}

    # The id can be dropped; the next search is by the text alone, and the address says so.
    await page.locator("#imdb-clear").click()
    await expect(page.locator("#imdb-only")).to_be_hidden()
    await expect(page.locator("#q")).to_be_focused()
    await page.keyboard.press("Enter")
    assert await wait_until(lambda: len(asked) == 2)
    assert dict(asked[1].query) == {"q": "schindler", "type": "movie"}
    await expect(page).to_have_url(site.ui + "/search?q=schindler&type=movie")


def _release(name: str, **fields: Any) -> dict[str, Any]:
    """A /torrent/find result with every key, null where ``fields`` says nothing."""
    keys = (
        "InfoHash Size Seeders Leechers Added Sources Imdb Title Year Season Episode Resolution Source"
        " Codec Hdr InLibrary"
    )
    return {"Name": name} | dict.fromkeys(keys.split()) | fields


async def test_the_sources_line_names_every_source_and_marks_the_failing_ones(
    context: BrowserContext, site: Site, tmp_path: Path
) -> None:
    answer = {
        "Results": [
            _release(
                "Some.Show.S02E05.720p.WEB-DL.x264-GRP",
                InfoHash="a" * 40,
                Size=1_500_000_000,
                Seeders=12,
                Leechers=3,
                Added="2025-02-03T04:05:06+00:00",
                Sources=["prowlarr", "jackett"],
                Season=2,
                Episode=5,
                Resolution="720p",
                Source="WEB-DL",
                Codec="x264",
            ),
            # Whatever the indexers send stays text, and only a same-origin address becomes a link.
            _release(
                XSS_NAME,
                InfoHash="b" * 40,
                Sources=[XSS_NAME],
                Resolution=XSS_NAME,
                InLibrary={
                    "ItemId": "x",
                    "Name": XSS_NAME,
                    "Year": None,
                    "Resolution": XSS_NAME,
                    "Url": "javascript:alert(1)",
                },
            ),
        ],
        "Sources": [
            {"Name": "apibay", "Ok": True, "Count": 100, "Ms": 120, "Error": None},
            {"Name": "prowlarr", "Ok": True, "Count": 37, "Ms": 800, "Error": None},
            {"Name": "jackett", "Ok": False, "Count": 0, "Ms": None, "Error": "timed out"},
            {"Name": XSS_NAME, "Ok": False, "Count": 0, "Ms": 3, "Error": XSS_NAME},
        ],
    }

    async def canned(route: Route) -> None:
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    page = await _signed_in_page(context, site)
    await page.route("**/torrent/find?*", canned)
    await page.goto(site.ui + "/search")
    await page.locator("#q").fill("some show")
    await page.locator("#search-submit").click()
    await expect(page.locator("tr.result")).to_have_count(2)
    items = page.locator("#sources-status li")
    await expect(items).to_have_text(
        ["apibay 100", "prowlarr 37", "✗ jackett failed: timed out", f"✗ {XSS_NAME} failed: {XSS_NAME}"]
    )
    await expect(page.locator("#sources-status li.failed")).to_have_count(2)
    show = page.locator(f'tr.result[data-hash="{"a" * 40}"]')
    await expect(show.locator(".chip")).to_have_text(["S02E05", "720p", "WEB-DL", "x264"])
    await expect(show.locator("td.sources")).to_have_text("prowlarr, jackett")
    await expect(show.locator("td.added")).to_have_text("2025-02-03")
    odd = page.locator(f'tr.result[data-hash="{"b" * 40}"]')
    await expect(odd.locator(".library-badge")).to_have_text(f"In library: {XSS_NAME}")
    await expect(odd.get_by_role("link")).to_have_count(0)
    assert await page.locator("#main img").count() == 0
    # Long odd values wrap inside their cells: the table stays within the window.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 1280
    await _screenshot(page, "search-sources", tmp_path)


@dataclass
class Landing:
    """A gateway download arranged for the landing tests: its hash, and its folder as Jellyfin sees it."""

    name: str
    hash: str
    folder: str


async def _download_into_movies(site: Site, name: str, imdb: str | None = None) -> Landing:
    """A gateway download into the Movies library, through the gateway's API. Nobody seeds it, so it
    stays in metaDL; the landing tests set its tags themselves."""
    info_hash = hashlib.sha256(name.encode()).hexdigest()[:40]  # made up, shaped as a v1 info hash
    body = {"Info_hash": info_hash, "Name": name, "Library": "Movies"} | ({"Imdb": imdb} if imdb else {})
    headers = {"Authorization": f'MediaBrowser Token="{site.token("admin")}"'}
    async with (
        aiohttp.ClientSession() as http,
        http.post(server_url(site.gateway, "/torrent/download"), headers=headers, json=body) as response,
    ):
        answer = await response.json()
        assert response.status == 200, answer
    torrent = await _listed_by_qbittorrent(site, info_hash)
    assert "jellyfin-gateway" in _tags(torrent)
    return Landing(name, info_hash, answer["Folder"])


async def _add_tags(site: Site, landing: Landing, *tags: str) -> None:
    """Tags set on qBittorrent directly, as the gateway's watcher would set them."""
    status, body = await site.qbt.api("POST", "torrents/addTags", hashes=landing.hash, tags=",".join(tags))
    assert status == 200, body


def _movie_in_jellyfin(site: Site, landing: Landing) -> str:
    """A movie file in the download's folder, scanned by the Jellyfin stand-in; the item's id."""
    site.standin.filesystem["/media"] = site.library
    local = site.library / landing.folder.removeprefix("/media/")
    local.mkdir(parents=True, exist_ok=True)
    (local / f"{local.name}.mkv").write_bytes(b"\0" * 4096)
    [movie] = [item for item in site.standin.scan(landing.folder) if item.type == "Movie"]
    return movie.id


@dataclass
class Landings:
    """Three gateway downloads: in Jellyfin, not picked up by Jellyfin, and waiting for Jellyfin."""

    alien: Landing
    alien_item: str
    solaris: Landing
    heat: Landing


async def _arrange_landings(site: Site) -> Landings:
    alien = await _download_into_movies(site, "Alien.1979.REMASTERED.1080p.BluRay.x264-GRP", "tt0078748")
    solaris = await _download_into_movies(site, "Solaris.1972.1080p.BluRay.x264-GRP")
    heat = await _download_into_movies(site, "Heat.1995.1080p.BluRay.x264-GRP")
    assert alien.folder == "/media/movies/Alien (1979) [imdbid-tt0078748]"
    alien_item = _movie_in_jellyfin(site, alien)
    await _add_tags(site, alien, "jellyfin-gateway-notified", f"jellyfin-gateway-landed:{alien_item}")
    await _add_tags(site, solaris, "jellyfin-gateway-notified", "jellyfin-gateway-not-landed")
    await _add_tags(site, heat, "jellyfin-gateway-notified")
    return Landings(alien, alien_item, solaris, heat)


def _item_url(site: Site, item_id: str) -> str:
    """Jellyfin web's page of an item, through the gateway (the stand-in's server id in it)."""
    details = f"#/details?id={item_id}&serverId={site.standin.server_id}"
    return str(server_url(site.gateway, "/web/")) + details


# Without an API key the gateway names the items only when asked (GET /torrent/landings, with the
# caller's token); with one, its watcher names them in the live events too.
@pytest.mark.parametrize("gateway_settings", [{}, {"api_key": True}], ids=["no-api-key", "api-key"])
async def test_the_downloads_page_shows_whether_jellyfin_picked_each_download_up(
    context: BrowserContext, site: Site, tmp_path: Path, gateway_settings: dict[str, Any]
) -> None:
    landings = await _arrange_landings(site)
    page = await _signed_in_page(context, site)
    await page.goto(site.ui + "/downloads")
    await expect(page.locator("#live-status")).to_have_text("Live updates on.")

    alien = page.locator(f'tr.torrent[data-hash="{landings.alien.hash}"] td.landing')
    link = alien.get_by_role("link")
    await expect(link).to_have_text("In Jellyfin ✓ Alien (1979)")
    await expect(link).to_have_attribute("href", _item_url(site, landings.alien_item))
    solaris = page.locator(f'tr.torrent[data-hash="{landings.solaris.hash}"] td.landing')
    await expect(solaris).to_have_text(f"Jellyfin has not picked it up — check {landings.solaris.folder}")
    await expect(solaris.locator("code")).to_have_text("/media/movies/Solaris (1972)")
    heat = page.locator(f'tr.torrent[data-hash="{landings.heat.hash}"] td.landing')
    await expect(heat).to_have_text("Waiting for Jellyfin…")
    if not gateway_settings:
        await _screenshot(page, "downloads-landings", tmp_path)

    # Jellyfin shows Heat now: the page says so live, without a reload.
    await page.evaluate("window.stillTheSamePage = true")
    heat_item = _movie_in_jellyfin(site, landings.heat)
    await _add_tags(site, landings.heat, f"jellyfin-gateway-landed:{heat_item}")
    await expect(heat.get_by_role("link")).to_have_text("In Jellyfin ✓ Heat (1995)")
    await expect(heat.get_by_role("link")).to_have_attribute("href", _item_url(site, heat_item))
    await expect(page.locator("#landing-news")).to_have_text(re.compile(r"^Heat\.1995\S* is in Jellyfin"))
    assert await page.evaluate("window.stillTheSamePage") is True
    asked = [r.path_qs for r in site.standin.requests if r.path_qs.startswith("/Items?")]
    assert any(landings.alien_item in query and heat_item not in query for query in asked), asked
    assert any(heat_item in query for query in asked), asked
    await expect(link).to_have_text("In Jellyfin ✓ Alien (1979)")  # the others stay as they were
    await expect(solaris).to_contain_text("Jellyfin has not picked it up")

    # Following the link opens the item in Jellyfin web, on the same origin.
    async def jellyfin_web(route: Route) -> None:
        body = "<!doctype html><title>Jellyfin</title>"
        await route.fulfill(status=200, content_type="text/html", body=body)

    await page.route("**/web/", jellyfin_web)
    await link.click()
    await expect(page).to_have_url(_item_url(site, landings.alien_item))


async def test_the_downloads_page_fits_a_phone_with_landings_shown(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    landings = await _arrange_landings(site)
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = await _signed_in_page(context, site)
        await page.goto(site.ui + "/downloads")
        row = page.locator(f'tr.torrent[data-hash="{landings.alien.hash}"]')
        await expect(row.get_by_role("link")).to_have_text("In Jellyfin ✓ Alien (1979)")
        await expect(page.locator("td.landing code")).to_have_text(landings.solaris.folder)
        # Nothing wider than the screen, the long folder path included.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await _screenshot(page, "downloads-phone", tmp_path, full_page=False)
    finally:
        await context.close()
    assert site.problems == [], site.problems


@pytest.mark.parametrize("gateway_settings", [{"elevation_cache_ttl": 0.5}])  # re-checked within ~1 s
@pytest.mark.parametrize("lose_access", ["demoted", "revoked"])
async def test_the_downloads_page_answers_the_error_event_that_ends_the_live_stream(
    context: BrowserContext, site: Site, lose_access: str
) -> None:
    page = _watch(await context.new_page(), site)
    token = await _sign_in_through_the_form(page, site)
    await page.locator("#nav a", has_text="Downloads").click()
    await expect(page.locator("#live-status")).to_have_text("Live updates on.")

    if lose_access == "demoted":
        site.standin.user_by_name("admin").is_administrator = False
        # 403: the reason and the page's own "Administrators only", and no reconnect (its 403
        # would be a console error).
        await expect(page.locator("#admin-only")).to_be_visible()
        reason = "Only Jellyfin administrators may use the torrent API"  # the gateway's, as sent
        await expect(page.locator("#feedback")).to_have_text(reason)
        await expect(page.locator("#main")).to_be_hidden()
        await asyncio.sleep(2.5)  # past the reconnect delay
        await expect(page).to_have_url(site.ui + "/downloads")
    else:
        site.standin.revoke_token(token)
        # 401: as for any API call, the dead token is forgotten and the sign-in page opens.
        await expect(page).to_have_url(site.ui + "/signin")
        await expect(page.locator("#signin-form")).to_be_visible()
        assert await _own_token(page) is None


async def test_a_live_stream_error_other_than_401_or_403_is_shown_and_the_stream_reopened(
    context: BrowserContext, site: Site
) -> None:
    page = await _signed_in_page(context, site)
    opened = 0

    async def failing_stream(route: Route) -> None:
        nonlocal opened
        opened += 1
        body = 'event: error\ndata: {"error":"Jellyfin could not be asked","status":502}\n\n'
        await route.fulfill(status=200, content_type="text/event-stream", body=body)

    await page.route("**/torrent/events", failing_stream)
    await page.goto(site.ui + "/downloads")
    await expect(page.locator("#live-status")).to_have_text(
        "Live updates failed (Jellyfin could not be asked); retrying…"
    )
    assert await wait_until(lambda: opened >= 2)
    await expect(page.locator("#main")).to_be_visible()
    await expect(page.locator("#admin-only")).to_be_hidden()


async def test_every_script_module_loads_under_the_policy(context: BrowserContext, site: Site) -> None:
    """Each file of templates/static/*.js is served as JavaScript and imports cleanly, CSP and all."""
    names = sorted(path.name for path in (Path(__file__).parent.parent / "templates" / "static").glob("*.js"))
    assert "main.js" in names
    page = _watch(await context.new_page(), site)
    await page.goto(site.ui + "/signin")
    await expect(page.locator("#signin-form")).to_be_visible()
    for name in names:
        response = await page.request.get(f"{site.ui}/static/{name}")
        assert response.status == 200, name
        assert response.headers["content-type"].startswith("text/javascript"), name
    exports = await page.evaluate(
        """async (urls) => {
            const modules = await Promise.all(urls.map((url) => import(url)));
            return modules.map((module) => Object.keys(module));
        }""",
        [f"{site.ui}/static/{name}" for name in names],
    )
    by_name = dict(zip(names, exports, strict=True))
    for name in ("signin", "search", "downloads", "libraries"):  # the page modules main.js starts
        assert "init" in by_name[f"{name}.js"], name


async def test_the_libraries_page_shows_both_views_and_health(
    context: BrowserContext, site: Site, tmp_path: Path
) -> None:
    page = await _signed_in_page(context, site)
    await page.goto(site.ui + "/libraries")
    movies = page.locator("section.library", has_text="Movies")
    await expect(movies).to_contain_text("/media/movies")
    await expect(movies).to_contain_text(str(site.qbt.downloads.parent / "library" / "movies"))
    await expect(page.locator("#health")).to_contain_text(site.qbt.version)
    await _screenshot(page, "libraries", tmp_path)


async def test_pages_send_a_strict_content_security_policy(context: BrowserContext, site: Site) -> None:
    page = _watch(await context.new_page(), site)
    response = await page.goto(site.ui + "/signin")
    assert response is not None
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    html = await response.text()
    assert "<script>" not in html
    assert re.search(r"\son[a-z]+\s*=", html) is None  # no inline event handlers


async def test_the_search_page_fits_a_phone(browser: Browser, site: Site, tmp_path: Path) -> None:
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        _schindlers_list_in_jellyfin(site)
        upgrade_hash = _a_2160p_release_on_apibay(site)
        page = await _signed_in_page(context, site)
        await page.goto(site.ui + "/search?q=movie")  # a handed-over search runs at once
        row = page.locator(f'tr.result[data-hash="{upgrade_hash}"]')
        await expect(row.get_by_role("link")).to_have_text("In library: 1080p Upgrade to 2160p")
        # The filters wait behind their summary on a phone, a tap (or Enter) away.
        await expect(page.locator("#resolution")).to_be_hidden()
        await page.locator("#filters summary").click()
        await page.locator("#resolution").select_option("2160p")
        await expect(page.locator("#filters summary")).to_have_text("Filter results (1 on)")
        await expect(page.locator("tr.result:visible")).to_have_count(1)
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await _screenshot(page, "search-phone", tmp_path, full_page=False)
        await row.scroll_into_view_if_needed()
        await _screenshot(page, "search-phone-result", tmp_path, full_page=False)
    finally:
        await context.close()
    assert site.problems == [], site.problems
