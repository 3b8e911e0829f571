// Jellyfin web's entry to the gateway: the gateway's proxy adds this file to Jellyfin web's index.html
// as a classic deferred script (<script src="…/torrent/ui/static/jellyfin-web.js?v=…" defer
// data-jellyfin-gateway>), so it is written as a plain script, not an ES module. For administrators
// only, it adds to Jellyfin web:
//
// - one "Torrents" entry opening the admin pages: in the legacy drawer's admin section (10.9–10.11's
//   default layout) when that drawer shows, else in the profile menu #app-user-menu right after
//   "Metadata Manager" (the React layout, 12.0's default), with a badge counting the gateway's
//   downloads still in progress (live, from /torrent/events);
// - a "Find releases" button on the details page of a movie or a series, opening the admin search
//   with the title, year and IMDb id handed over.
//
// Jellyfin web rebuilds its drawer on every sign-in, renders pages as it likes and navigates without
// reliable events: everything here is re-checked after DOM changes (debounced), on hashchange and
// popstate, and idempotently (fixed id and class, never two). It never throws into the page and logs
// nothing: no ApiClient, no user, a non-admin or a refused stream all simply leave Jellyfin as it is.
// Text goes in through textContent only; no inline code, so a strict CSP is fine.
(function () {
  "use strict";

  const script = document.currentScript;
  if (!script || !script.src) return;

  // <base>static/jellyfin-web.js?v=… → <base> (the …/torrent/ui/ URL); the API is one level up.
  const UI = new URL("../", script.src).href;
  const EVENTS = new URL("../events", UI).href;

  const ENTRY_ID = "jellyfinGatewayTorrents";
  const BADGE_CLASS = "jellyfinGatewayBadge";
  const FIND_CLASS = "jellyfinGatewayFindReleases";
  const GATEWAY_TAG = "jellyfin-gateway";
  const DEBOUNCE_MS = 100;
  const POLL_MS = 1000; // sign-in and sign-out need not touch the DOM at once
  const RECONNECT_MS = [2000, 5000, 15000, 30000];
  const REFUSED_RETRY_MS = 5 * 60 * 1000;
  const SVG = "http://www.w3.org/2000/svg";
  // Material "Download" icon (the same 24×24 set as the profile menu's MUI icons).
  const DOWNLOAD_PATH = "M5 20h14v-2H5v2zM19 9h-4V3H9v6H5l7 7 7-7z";

  /** Anything the page's ApiClient says, or undefined when it is missing or throws. */
  function ask(method, ...args) {
    try {
      const api = window.ApiClient;
      return api && typeof api[method] === "function" ? api[method](...args) : undefined;
    } catch {
      return undefined;
    }
  }

  const shown = (element) =>
    typeof element.checkVisibility === "function" ? element.checkVisibility() : element.getClientRects().length > 0;

  // -------------------------------------------------------------------------------------------
  // Who is signed in, and are they an administrator (asked once per user id)

  const adminByUser = new Map(); // user id → true | false | "pending"

  /** The signed-in user's id when they are an administrator; null otherwise (or not known yet). */
  function adminUserId() {
    const userId = ask("getCurrentUserId");
    if (typeof userId !== "string" || !userId) return null;
    const known = adminByUser.get(userId);
    if (known === undefined) {
      adminByUser.set(userId, "pending");
      Promise.resolve(ask("getCurrentUser"))
        .then((user) => {
          const admin = !!user && user.Id === userId && user.Policy?.IsAdministrator === true;
          adminByUser.set(userId, admin);
        })
        .catch(() => adminByUser.delete(userId)) // not known: ask again on the next check
        .finally(schedule);
      return null;
    }
    return known === true ? userId : null;
  }

  // -------------------------------------------------------------------------------------------
  // The "Torrents" entry

  let badgeCount = 0;

  function makeBadge() {
    const badge = document.createElement("span");
    badge.className = BADGE_CLASS;
    badge.setAttribute("role", "img");
    Object.assign(badge.style, {
      display: "none",
      minWidth: "1.5em",
      padding: "0 0.45em",
      marginLeft: "0.6em",
      borderRadius: "0.75em",
      boxSizing: "border-box",
      background: "#00a4dc",
      color: "#fff",
      fontSize: "0.75em",
      fontWeight: "600",
      lineHeight: "1.5em",
      textAlign: "center",
      verticalAlign: "middle",
    });
    paintBadge(badge);
    return badge;
  }

  function paintBadge(badge) {
    badge.textContent = String(badgeCount);
    badge.setAttribute("aria-label", `${badgeCount} active download${badgeCount === 1 ? "" : "s"}`);
    badge.style.display = badgeCount > 0 ? "inline-block" : "none";
    badge.hidden = badgeCount === 0;
  }

  function paintBadges() {
    document.querySelectorAll(`#${ENTRY_ID} .${BADGE_CLASS}`).forEach(paintBadge);
  }

  /** The legacy drawer's entry: a.navMenuOption.lnkMediaFolder as libraryMenu.js builds its links. */
  function drawerEntry() {
    const link = document.createElement("a");
    link.id = ENTRY_ID;
    link.className = "navMenuOption lnkMediaFolder";
    link.dataset.itemid = "torrents";
    link.dataset.layout = "drawer";
    link.href = UI;
    const icon = document.createElement("span");
    icon.className = "material-icons navMenuOptionIcon cloud_download";
    icon.setAttribute("aria-hidden", "true");
    const text = document.createElement("span");
    text.className = "navMenuOptionText";
    text.textContent = "Torrents";
    link.append(icon, text, makeBadge());
    return link;
  }

  /** The profile menu's entry: a copy of its Metadata Manager item (same MUI classes), relabelled. */
  function menuEntry(model) {
    const link = model.cloneNode(true);
    link.id = ENTRY_ID;
    link.dataset.layout = "menu";
    link.classList.remove("Mui-focusVisible", "Mui-selected", "Mui-disabled");
    link.removeAttribute("aria-disabled");
    link.setAttribute("href", UI);
    link.setAttribute("role", "menuitem");
    link.setAttribute("tabindex", "-1"); // MUI's MenuList moves the focus through items with a tabindex
    link.querySelectorAll(".MuiTouchRipple-root").forEach((ripple) => ripple.replaceChildren());
    const svg = link.querySelector("svg");
    if (svg) {
      svg.setAttribute("data-testid", "DownloadIcon");
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("d", DOWNLOAD_PATH);
      svg.replaceChildren(path);
    }
    const text =
      link.querySelector(".MuiListItemText-primary") ?? link.querySelector(".MuiListItemText-root") ?? link;
    text.textContent = "Torrents";
    text.append(makeBadge());
    return link;
  }

  /** Where the entry belongs now: {parent, model?, kind}, or null when there is no place for it. */
  function entryPlace() {
    const drawer = document.querySelector(".mainDrawer");
    if (drawer && shown(drawer)) {
      const section = drawer.querySelector(".adminMenuOptions") || drawer.querySelector(".customMenuOptions");
      return section ? { parent: section, kind: "drawer" } : null;
    }
    const menu = document.getElementById("app-user-menu");
    if (!menu) return null;
    const model = menu.querySelector('a[href="#/metadata"], a[href$="/metadata"]')
      || menu.querySelector('a[href="#/dashboard"], a[href$="/dashboard"]');
    return model?.parentElement ? { parent: model.parentElement, model, kind: "menu" } : null;
  }

  function placeEntry() {
    const place = entryPlace();
    const existing = document.querySelectorAll(`#${ENTRY_ID}`);
    if (!place) {
      existing.forEach((element) => element.remove());
      return;
    }
    let entry = existing[0];
    existing.forEach((element, index) => {
      if (index > 0) element.remove();
    });
    if (entry && entry.dataset.layout !== place.kind) {
      entry.remove();
      entry = undefined;
    }
    if (!entry) entry = place.kind === "drawer" ? drawerEntry() : menuEntry(place.model);
    if (place.kind === "drawer") {
      if (entry.parentElement !== place.parent) place.parent.append(entry); // last of its section
    } else if (entry.previousElementSibling !== place.model) {
      place.model.after(entry);
    }
  }

  function removeEntry() {
    document.querySelectorAll(`#${ENTRY_ID}`).forEach((element) => element.remove());
  }

  // -------------------------------------------------------------------------------------------
  // "Find releases" on a movie's or a series' details page

  const items = new Map(); // "user/item" → false while being read, then {item} (item null: unreadable)

  /** The item id of the details page the location shows (#/details?id=…), or null. */
  function detailsItemId() {
    const hash = location.hash;
    const question = hash.indexOf("?");
    if (question === -1 || !/\/details$/i.test(hash.slice(0, question))) return null;
    const id = new URLSearchParams(hash.slice(question + 1)).get("id");
    return id && /^[0-9a-f-]{32,36}$/i.test(id) ? id : null;
  }

  function searchUrl(item) {
    const name = typeof item.Name === "string" ? item.Name.trim() : "";
    const year = Number.isInteger(item.ProductionYear) ? ` ${item.ProductionYear}` : "";
    const params = new URLSearchParams({ q: name + year });
    const imdb = item.ProviderIds?.Imdb;
    if (typeof imdb === "string" && /^tt\d{7,10}$/i.test(imdb.trim())) params.set("imdb", imdb.trim());
    params.set("type", item.Type === "Series" ? "tv" : "movie");
    return new URL(`search?${params}`, UI).href;
  }

  function findButton(item, itemId) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `button-flat detailButton ${FIND_CLASS}`;
    button.dataset.itemId = itemId;
    button.dataset.href = searchUrl(item);
    button.title = "Find releases";
    button.setAttribute("aria-label", "Find releases");
    const content = document.createElement("div");
    content.className = "detailButton-content";
    const icon = document.createElement("span");
    icon.className = "material-icons detailButton-icon search";
    icon.setAttribute("aria-hidden", "true");
    content.append(icon);
    button.append(content);
    button.addEventListener("click", () => location.assign(button.dataset.href));
    return button;
  }

  /** The item (or null: unreadable, or not read yet; a check follows once it is). */
  function readItem(userId, itemId) {
    const key = `${userId}/${itemId}`;
    const known = items.get(key);
    if (known) return known.item ?? null;
    if (known === undefined) {
      items.set(key, false); // being read
      Promise.resolve(ask("getItem", userId, itemId))
        .then((item) => (item && typeof item === "object" ? item : null))
        .catch(() => null)
        .then((item) => {
          items.set(key, { item });
          if (item === null) setTimeout(() => items.delete(key), 30000); // try again later
          schedule();
        });
    }
    return null;
  }

  function placeFindButton(userId) {
    const page = document.querySelector(".itemDetailPage:not(.hide)");
    const row = page?.querySelector(".mainDetailButtons");
    const itemId = detailsItemId();
    // Stale buttons (another item, or pages no longer shown) go; hidden cached pages keep none.
    document.querySelectorAll(`.${FIND_CLASS}`).forEach((button) => {
      if (!row || button.parentElement !== row || button.dataset.itemId !== itemId) button.remove();
    });
    if (!row || !itemId) return;
    const item = readItem(userId, itemId);
    if (!item || (item.Type !== "Movie" && item.Type !== "Series")) return;
    const present = row.querySelectorAll(`.${FIND_CLASS}`);
    if (present.length === 1) return;
    present.forEach((button) => button.remove());
    const more = [...row.children].find((child) => child.classList.contains("btnMoreCommands")) ?? null;
    row.insertBefore(findButton(item, itemId), more);
  }

  function removeFindButtons() {
    document.querySelectorAll(`.${FIND_CLASS}`).forEach((button) => button.remove());
  }

  // -------------------------------------------------------------------------------------------
  // Live count of the gateway's active downloads (/torrent/events, read with fetch: EventSource
  // cannot send the Authorization header)

  let stream = null; // {userId, controller} while following

  const sleep = (ms, signal) =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });

  /** The admin pages' SSE reader (one module, loaded on demand: this script is a classic one). */
  let sseModule = null;
  const eventsOf = async function* (body) {
    sseModule = sseModule || import(new URL("static/sse.js", UI).href);
    yield* (await sseModule).readEventStream(body);
  };


  function isActive(torrent) {
    const tags = typeof torrent.tags === "string" ? torrent.tags.split(",").map((tag) => tag.trim()) : [];
    return tags.includes(GATEWAY_TAG) && Number(torrent.progress) < 1;
  }

  async function follow(signal) {
    let failures = 0;
    while (!signal.aborted) {
      const torrents = new Map();
      const recount = () => {
        let count = 0;
        torrents.forEach((torrent) => {
          if (isActive(torrent)) count += 1;
        });
        if (count !== badgeCount) {
          badgeCount = count;
          paintBadges();
        }
      };
      let wait = RECONNECT_MS[Math.min(failures, RECONNECT_MS.length - 1)];
      try {
        const token = ask("accessToken");
        if (typeof token !== "string" || !token) return;
        const response = await fetch(EVENTS, {
          headers: { Authorization: `MediaBrowser Token="${token}"`, Accept: "text/event-stream" },
          cache: "no-store",
          credentials: "omit",
          signal,
        });
        if (response.status === 401 || response.status === 403) {
          wait = REFUSED_RETRY_MS; // not for us (now): no retry storm, no noise
        } else if (response.ok && response.body) {
          for await (const event of eventsOf(response.body)) {
            let data;
            try {
              data = JSON.parse(event.data);
            } catch {
              continue;
            }
            if (event.type === "snapshot") {
              failures = 0;
              torrents.clear();
              for (const torrent of Array.isArray(data?.torrents) ? data.torrents : []) {
                if (torrent && typeof torrent.hash === "string") torrents.set(torrent.hash, torrent);
              }
            } else if (event.type === "delta") {
              const changed = data?.torrents && typeof data.torrents === "object" ? data.torrents : {};
              for (const [hash, fields] of Object.entries(changed)) {
                if (fields && typeof fields === "object") torrents.set(hash, { ...torrents.get(hash), ...fields });
              }
              for (const hash of Array.isArray(data?.removed) ? data.removed : []) torrents.delete(hash);
            } else if (event.type === "error") {
              const status = Number(data?.status);
              if (status === 401 || status === 403) wait = REFUSED_RETRY_MS;
              break;
            } else {
              continue;
            }
            recount();
          }
        }
      } catch {
        // lost connection or aborted: below
      }
      if (signal.aborted) return;
      failures += 1;
      await sleep(wait, signal);
    }
  }

  function followEvents(userId) {
    if (stream && stream.userId === userId) return;
    stopEvents();
    const controller = new AbortController();
    stream = { userId, controller };
    follow(controller.signal).catch(() => {});
  }

  function stopEvents() {
    if (stream) stream.controller.abort();
    stream = null;
    badgeCount = 0;
  }

  // -------------------------------------------------------------------------------------------
  // Checks: after DOM changes (debounced), navigation, and every second for sign-in/sign-out

  let timer = null;
  let observer = null;

  function check() {
    timer = null;
    observer?.takeRecords(); // our own changes below need no second check
    const userId = adminUserId();
    if (userId === null) {
      stopEvents();
      removeEntry();
      removeFindButtons();
    } else {
      placeEntry();
      placeFindButton(userId);
      followEvents(userId);
    }
    observer?.takeRecords();
  }

  function schedule() {
    if (timer === null) timer = setTimeout(() => {
      try {
        check();
      } catch {
        // never into the page's console
      }
    }, DEBOUNCE_MS);
  }

  function start() {
    observer = new MutationObserver(schedule);
    observer.observe(document.body, { childList: true, subtree: true, attributes: true, attributeFilter: ["class", "hidden"] });
    window.addEventListener("hashchange", schedule);
    window.addEventListener("popstate", schedule);
    setInterval(schedule, POLL_MS);
    schedule();
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start, { once: true });
})();
