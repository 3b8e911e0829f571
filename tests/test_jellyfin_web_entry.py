"""The gateway's script in Jellyfin web (templates/static/jellyfin-web.js), in a real headless Chromium.

Jellyfin web is played by the fixtures in tests/jellyfin_web_fixtures/ (its 10.11 legacy layout and its
12.0 React layout, built from jellyfin-web's sources; see their comments), served by the Jellyfin
stand-in as /web/index.html and reached through the gateway, which adds its script tag to the page as
it would to the real one. The fake ApiClient asks the stand-in (through the gateway) who is signed in
and what an item is; the live events come from the gateway and a real qbittorrent-nox.

As in tests/test_admin_pages.py, every test fails on a JavaScript error, a console error or a dialog.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
from playwright.async_api import BrowserContext, Page, expect
from yarl import URL

from tests import test_admin_pages as admin_pages
from tests.conftest import server_url, wait_until
from tests.jellyfin_standin import Item, jellyfin_item_id
from tests.test_admin_pages import SCHINDLERS_LIST_IMDB, Site, _download_into_movies, _screenshot

# The admin pages' fixtures (a real stack, Chromium, a context that fails on console errors).
browser = admin_pages.browser
qbt_binary = admin_pages.qbt_binary
gateway_settings = admin_pages.gateway_settings
site = admin_pages.site
context = admin_pages.context

FIXTURES = Path(__file__).resolve().parent / "jellyfin_web_fixtures"
LEGACY = "legacy-10.11.html"
MODERN = "modern-12.0.html"
ENTRY = "#jellyfinGatewayTorrents"
FIND_RELEASES = ".itemDetailPage:not(.hide) .mainDetailButtons button.jellyfinGatewayFindReleases"
#: Long enough for the script's checks (debounced 100 ms, sign-in polled every second) to have run.
SETTLE_MS = 1500


def _serve_jellyfin_web(site: Site, layout: str) -> None:
    """The stand-in serves the fixture as Jellyfin web's index.html, and its other files beside it."""
    site.standin.web_index_html = (FIXTURES / layout).read_text()
    site.standin.web_files = {p.name: p.read_bytes() for p in FIXTURES.iterdir() if p.suffix != ".html"}


def _add_item(site: Site, kind: str, name: str, year: int, path: str, **provider_ids: str) -> str:
    """An item the stand-in knows (as a library scan would have made it); its id."""
    item_id = jellyfin_item_id(kind, path)
    site.standin.items[item_id] = Item(
        type=kind, name=name, path=path, id=item_id, production_year=year, provider_ids=dict(provider_ids)
    )
    return item_id


def _schindlers_list(site: Site) -> str:
    path = "/media/movies/Schindler's List (1993)/Schindler's List (1993).mkv"
    return _add_item(site, "Movie", "Schindler's List", 1993, path, Imdb=SCHINDLERS_LIST_IMDB, Tmdb="424")


def _severance(site: Site) -> str:
    """A series Jellyfin knows no IMDb id of."""
    return _add_item(site, "Series", "Severance", 2022, "/media/shows/Severance", Tvdb="371980")


def _an_episode(site: Site) -> str:
    path = "/media/shows/Severance/Season 01/Severance S01E01.mkv"
    return _add_item(site, "Episode", "Good News About Hell", 2022, path)


def _event_streams_asked(page: Page, asked: list[str] | None = None) -> list[str]:
    """Every /torrent/events request the page makes from now on (a list that grows)."""
    streams = [] if asked is None else asked
    page.on(
        "request", lambda request: streams.append(request.url) if "/events" in URL(request.url).path else None
    )
    return streams


def _web_url(site: Site, hash_route: str = "#/home") -> str:
    return str(server_url(site.gateway, "/web/index.html")) + hash_route


def _details(site: Site, item_id: str) -> str:
    return f"#/details?id={item_id}&serverId={site.standin.server_id}"


async def _open_jellyfin_web(
    context: BrowserContext,
    site: Site,
    layout: str,
    *,
    user: str = "admin",
    hash_route: str = "#/home",
    streams: list[str] | None = None,
) -> Page:
    """Jellyfin web (the fixture) through the gateway, signed in as ``user``, once it has rendered;
    ``streams`` collects the page's requests for live events."""
    _serve_jellyfin_web(site, layout)
    page = await admin_pages._signed_in_page(context, site, user)
    _event_streams_asked(page, streams)
    await page.goto(_web_url(site, hash_route))
    await expect(page.locator("html[data-ready='1']")).to_be_attached()
    return page


async def test_the_gateway_adds_its_script_to_jellyfin_webs_page(context: BrowserContext, site: Site) -> None:
    page = await _open_jellyfin_web(context, site, LEGACY)
    script = page.locator("script[data-jellyfin-gateway]")
    await expect(script).to_have_count(1)
    src = await script.evaluate("element => element.src")
    assert URL(src).path == "/torrent/ui/static/jellyfin-web.js"
    async with aiohttp.ClientSession() as http, http.get(src) as response:
        assert response.status == 200
        assert "javascript" in response.content_type


async def test_an_admin_finds_one_torrents_entry_in_the_legacy_drawers_admin_section_even_after_a_rebuild(
    context: BrowserContext, site: Site, tmp_path: Path
) -> None:
    page = await _open_jellyfin_web(context, site, LEGACY)
    entry = page.locator(ENTRY)
    await expect(entry).to_have_count(1)
    # In the admin section, after Metadata Manager, looking like its siblings.
    admin_links = page.locator(".mainDrawer .adminMenuOptions > a.navMenuOption.lnkMediaFolder")
    await expect(admin_links).to_have_count(3)
    await expect(admin_links.nth(1)).to_have_attribute("href", "#/metadata")
    await expect(admin_links.nth(2)).to_have_id(ENTRY.removeprefix("#"))
    await expect(entry.locator("span.navMenuOptionIcon.material-icons")).to_have_count(1)
    await expect(entry.locator("span.navMenuOptionText")).to_have_text("Torrents")
    await expect(entry).to_have_attribute("href", site.ui + "/")
    await expect(page.get_by_role("link", name="Torrents", exact=True)).to_be_visible()
    await _screenshot(page, "jellyfin-web-legacy-drawer", tmp_path)

    # Every sign-in rebuilds the drawer: the entry comes back, once.
    for _ in range(3):
        await page.evaluate("window.__rebuildDrawer()")
        await expect(page.locator(".mainDrawer .adminMenuOptions " + ENTRY)).to_have_count(1)
    await page.wait_for_timeout(SETTLE_MS)
    await expect(entry).to_have_count(1)

    # Keyboard: the entry is a link in the tab order, and Enter opens the admin pages.
    await entry.focus()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(site.ui + "/search")  # the admin pages start at their search


async def test_an_admin_finds_the_torrents_entry_after_metadata_manager_in_the_12_0_profile_menu(
    context: BrowserContext, site: Site, tmp_path: Path
) -> None:
    page = await _open_jellyfin_web(context, site, MODERN)
    entry = page.locator(ENTRY)
    await expect(entry).to_have_count(1)
    await expect(page.locator(".mainDrawer " + ENTRY)).to_have_count(0)  # not in the hidden drawer
    items = page.locator("#app-user-menu [role='menu'] > [role='menuitem']")
    hrefs = [await item.get_attribute("href") for item in await items.all()]
    assert hrefs[hrefs.index("#/metadata") + 1] == site.ui + "/", hrefs
    metadata = page.locator("#app-user-menu a[href='#/metadata']")
    # A copy of the Metadata Manager item: the same MUI classes, its own label.
    assert await entry.get_attribute("class") == await metadata.get_attribute("class")
    await expect(entry.locator(".MuiListItemText-primary")).to_contain_text("Torrents")

    await page.locator("#app-user-menu-button").click()
    await expect(page.get_by_role("menuitem", name="Torrents")).to_be_visible()
    await _screenshot(page, "jellyfin-web-12-profile-menu", tmp_path)
    await page.get_by_role("menuitem", name="Torrents").click()
    await expect(page).to_have_url(site.ui + "/search")  # the admin pages start at their search


async def test_a_user_who_is_no_administrator_gets_neither_the_entry_nor_find_releases(
    context: BrowserContext, site: Site
) -> None:
    movie = _schindlers_list(site)
    for layout in (LEGACY, MODERN):
        streams: list[str] = []
        details = _details(site, movie)
        page = await _open_jellyfin_web(
            context, site, layout, user="alice", hash_route=details, streams=streams
        )
        await expect(page.locator(".itemDetailPage:not(.hide) .btnMoreCommands")).to_be_visible()
        await page.wait_for_timeout(SETTLE_MS)
        await expect(page.locator(ENTRY)).to_have_count(0)
        await expect(page.locator(".jellyfinGatewayFindReleases")).to_have_count(0)
        assert streams == []
        await page.close()


async def test_find_releases_appears_on_movies_and_series_only_and_follows_the_navigation(
    context: BrowserContext, site: Site, tmp_path: Path
) -> None:
    movie, series, episode = _schindlers_list(site), _severance(site), _an_episode(site)
    page = await _open_jellyfin_web(context, site, LEGACY, hash_route=_details(site, movie))
    find = page.locator(FIND_RELEASES)
    await expect(find).to_have_count(1)
    await expect(find).to_have_accessible_name("Find releases")
    # Styled as the row's buttons, just before "More".
    icon = find.locator(".detailButton-content > span.material-icons.detailButton-icon")
    await expect(icon).to_have_count(1)
    more = page.locator(".itemDetailPage:not(.hide) .mainDetailButtons > .btnMoreCommands")
    assert await more.evaluate("more => more.previousElementSibling.matches('.jellyfinGatewayFindReleases')")
    await _screenshot(page, "jellyfin-web-find-releases", tmp_path)

    # In-app navigation: an episode gets none, a series gets its own.
    await page.evaluate(f"location.hash = {_details(site, episode)!r}")
    await expect(page.locator(".itemDetailPage:not(.hide) h1.itemName")).to_have_text("Good News About Hell")
    await page.wait_for_timeout(SETTLE_MS)
    await expect(find).to_have_count(0)
    await page.evaluate(f"location.hash = {_details(site, series)!r}")
    await expect(find).to_have_count(1)
    await expect(find).to_have_attribute("data-item-id", series)
    await expect(page.locator(".jellyfinGatewayFindReleases")).to_have_count(1)  # none left on hidden pages

    await find.click()
    await expect(page).to_have_url(site.ui + "/search?q=Severance+2022&type=tv")


async def test_find_releases_hands_the_title_year_and_imdb_id_to_the_admin_search_which_runs_it(
    context: BrowserContext, site: Site
) -> None:
    movie = _schindlers_list(site)
    page = await _open_jellyfin_web(context, site, MODERN, hash_route=_details(site, movie))
    asked = admin_pages._finds_asked(page)
    find = page.locator(FIND_RELEASES)
    await find.focus()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(
        site.ui + f"/search?q=Schindler%27s+List+1993&imdb={SCHINDLERS_LIST_IMDB}&type=movie"
    )
    await expect(page.locator("#imdb-id")).to_have_text(SCHINDLERS_LIST_IMDB)
    await expect(page.locator("tr.result").first).to_be_visible()
    assert await wait_until(lambda: len(asked) == 1)
    handed_over = {"q": "Schindler's List 1993", "imdb": SCHINDLERS_LIST_IMDB, "type": "movie"}
    assert dict(asked[0].query) == handed_over


async def test_the_entrys_badge_counts_the_gateways_downloads_in_progress(
    context: BrowserContext, site: Site, tmp_path: Path
) -> None:
    page = await _open_jellyfin_web(context, site, LEGACY)
    badge = page.locator(ENTRY + " .jellyfinGatewayBadge")
    await expect(badge).to_be_attached()
    await expect(badge).to_be_hidden()

    # Nobody seeds it: it stays in qBittorrent, downloading its metadata.
    download = await _download_into_movies(site, "Solaris.1972.1080p.BluRay.x264-GRP")
    await expect(badge).to_be_visible()
    await expect(badge).to_have_text("1")
    await expect(badge).to_have_attribute("aria-label", "1 active download")
    await expect(page.get_by_role("link", name="Torrents 1 active download")).to_be_visible()
    await _screenshot(page, "jellyfin-web-badge", tmp_path)

    headers = {"Authorization": f'MediaBrowser Token="{site.token("admin")}"'}
    delete = server_url(site.gateway, "/torrent/delete").with_query(hash=download.hash, deleteFiles="true")
    async with aiohttp.ClientSession() as http, http.post(delete, headers=headers) as response:
        assert response.status == 200, await response.text()
    await expect(badge).to_be_hidden()


async def test_the_script_stays_quiet_without_an_api_client_and_before_sign_in(
    context: BrowserContext, site: Site
) -> None:
    # The fixture with nobody signed in: an ApiClient without a user.
    _serve_jellyfin_web(site, LEGACY)
    page = admin_pages._watch(await context.new_page(), site)
    streams = _event_streams_asked(page)
    await page.goto(_web_url(site))
    await expect(page.locator("script[data-jellyfin-gateway]")).to_have_count(1)
    await page.wait_for_timeout(SETTLE_MS)
    assert await page.evaluate("window.ApiClient.getCurrentUserId()") is None
    await expect(page.locator(ENTRY)).to_have_count(0)
    await page.close()

    # A Jellyfin web without ApiClient (its bundle not loaded), signed in.
    fixture = (FIXTURES / LEGACY).read_text()
    for name in ("fake-apiclient.js", "fake-app.js"):
        fixture = fixture.replace(f'<script defer src="{name}"></script>', "")
    site.standin.web_index_html = fixture
    page = await admin_pages._signed_in_page(context, site)
    _event_streams_asked(page, streams)
    await page.goto(_web_url(site))
    await expect(page.locator("script[data-jellyfin-gateway]")).to_have_count(1)
    assert await page.evaluate("typeof window.ApiClient") == "undefined"
    await page.wait_for_timeout(SETTLE_MS)
    await expect(page.locator(ENTRY)).to_have_count(0)
    assert streams == []


async def test_the_entry_goes_when_a_user_who_is_no_administrator_signs_in_instead(
    context: BrowserContext, site: Site
) -> None:
    for layout in (LEGACY, MODERN):
        page = await _open_jellyfin_web(context, site, layout)
        await expect(page.locator(ENTRY)).to_have_count(1)
        await page.evaluate("token => window.__signInAs(token)", site.token("alice"))
        await expect(page.locator(".mainDrawer .userMenuOptions, #app-user-menu").first).to_be_attached()
        await page.wait_for_timeout(SETTLE_MS)
        await expect(page.locator(ENTRY)).to_have_count(0)
        # And back: the administrator's entry returns (their answer was kept), once.
        await page.evaluate("token => window.__signInAs(token)", site.token("admin"))
        await expect(page.locator(ENTRY)).to_have_count(1)
        await page.close()
