// The downloads page: qBittorrent's torrents, kept current by the live events, with pause, resume
// and delete, and for the gateway's own downloads whether Jellyfin shows them yet (their landing).
// Rules: top of main.js.

import { apiFetch, errorText, readJson, reportFailure, requireAdmin } from "./api.js";
import { $, el, setFeedback, setText } from "./dom.js";
import { humanDuration, humanSize } from "./format.js";
import { followLiveEvents } from "./live-events.js";

const STATE_WORDS = {
  metaDL: "downloading metadata",
  forcedMetaDL: "downloading metadata",
  downloading: "downloading",
  forcedDL: "downloading",
  stalledDL: "stalled",
  pausedDL: "paused",
  stoppedDL: "paused",
  queuedDL: "queued",
  queuedUP: "queued",
  uploading: "seeding",
  stalledUP: "seeding",
  forcedUP: "seeding",
  pausedUP: "completed",
  stoppedUP: "completed",
  checkingDL: "checking",
  checkingUP: "checking",
  checkingResumeData: "checking",
  moving: "moving",
  error: "error",
  missingFiles: "error",
};

function stateWord(state) {
  return Object.prototype.hasOwnProperty.call(STATE_WORDS, state) ? STATE_WORDS[state] : String(state ?? "");
}

// A gateway download's landing: downloading → announced (Jellyfin was told) → in_jellyfin (the
// item it became) or not_in_jellyfin (Jellyfin did not show it in time).
const LANDING_STATES = new Set(["downloading", "announced", "in_jellyfin", "not_in_jellyfin"]);

/** A landing entry of the gateway ({Hash, Name, Library, Folder, State, Item}), or null. */
function landingEntry(value) {
  if (!value || typeof value !== "object" || typeof value.Hash !== "string") return null;
  if (!LANDING_STATES.has(value.State)) return null;
  return { ...value, Hash: value.Hash.toLowerCase() };
}

/** "Alien (1979)", "Alien", or null when Jellyfin's item is not described (yet). */
function itemTitle(item) {
  const name = typeof item?.Name === "string" ? item.Name.trim() : "";
  if (!name) return null;
  const year = Number(item.ProductionYear);
  return Number.isInteger(year) && year > 0 ? `${name} (${year})` : name;
}

/** The item's page in Jellyfin web: a link on this origin only (the gateway sends a relative one). */
function sameOriginUrl(value) {
  if (typeof value !== "string" || !value) return null;
  try {
    const url = new URL(value, location.href);
    return url.origin === location.origin ? url.href : null;
  } catch {
    return null;
  }
}

/** What a landing cell shows, as plain values (compared to leave an unchanged cell untouched). */
function landingView(entry) {
  switch (entry?.State) {
    case "in_jellyfin":
      return { state: "in_jellyfin", title: itemTitle(entry.Item), href: sameOriginUrl(entry.Item?.Url) };
    case "not_in_jellyfin":
      return { state: "not_in_jellyfin", folder: typeof entry.Folder === "string" && entry.Folder ? entry.Folder : null };
    case "announced":
      return { state: "announced" };
    default:
      return { state: "downloading" }; // nothing to say yet, as for torrents the gateway did not add
  }
}

function landingNodes(view) {
  if (view.state === "in_jellyfin") {
    const mark = el("span", "", "✓");
    mark.setAttribute("aria-hidden", "true"); // "In Jellyfin" says it
    const parts = ["In Jellyfin ", mark, ...(view.title ? [" ", el("span", "item-title", view.title)] : [])];
    const node = view.href ? el("a", "landing-link") : el("span");
    if (view.href) node.href = view.href;
    node.append(...parts);
    return [node];
  }
  if (view.state === "not_in_jellyfin") {
    if (!view.folder) return ["Jellyfin has not picked it up — PATH_MAP does not cover its folder"];
    return ["Jellyfin has not picked it up — check ", el("code", "folder", view.folder)];
  }
  if (view.state === "announced") return ["Waiting for Jellyfin…"];
  return [];
}

/** What the live region says when a download's landing settles while the page is open. */
function landingNews(entry, view) {
  const name = typeof entry.Name === "string" && entry.Name ? entry.Name : entry.Hash;
  if (view.state === "in_jellyfin") return `${name} is in Jellyfin${view.title ? ` as ${view.title}` : ""}.`;
  if (view.state === "not_in_jellyfin") return `Jellyfin has not picked up ${name}.`;
  return null;
}

export async function init() {
  const table = $("#downloads");
  const tbody = $("#downloads tbody");
  const empty = $("#no-downloads");
  const live = $("#live-status");
  const dialog = $("#confirm-delete");
  const dialogName = $("#confirm-delete-name");
  const deleteFiles = $("#delete-files");
  const news = $("#landing-news");

  const torrents = new Map(); // hash -> latest fields
  const rows = new Map(); // hash -> <tr>
  const landings = new Map(); // hash -> latest landing entry (the gateway's downloads only)
  const shown = new WeakMap(); // landing cell -> the view it shows
  const described = new Set(); // item ids already asked for with GET /torrent/landings
  let describing = false;
  let pendingDelete = null;
  let returnFocus = null;

  function newRow(hash) {
    const row = el("tr", "torrent");
    row.dataset.hash = hash;
    const nameId = `torrent-${hash}-name`;
    const name = el("td", "name");
    name.id = nameId;
    const progressCell = el("td", "progress");
    const bar = el("progress");
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute("aria-labelledby", nameId);
    progressCell.append(bar, el("span", "percent", "0%"));
    const actions = el("td", "actions");
    const controls = el("div", "row-controls");
    for (const [className, label] of [["pause", "Pause"], ["resume", "Resume"], ["delete", "Delete"]]) {
      const button = el("button", className, label);
      button.type = "button";
      button.setAttribute("aria-describedby", nameId);
      controls.append(button);
    }
    actions.append(controls);
    row.append(name, progressCell, el("td", "state"), el("td", "landing"), el("td", "speed"), el("td", "eta"), actions);
    // The landing cell needs no card label: what it says names Jellyfin, and it is empty otherwise.
    const labels = [null, "Progress", "State", null, "Speed", "Time left", null];
    Array.from(row.cells).forEach((cell, i) => {
      if (labels[i]) cell.dataset.label = labels[i];
    });
    return row;
  }

  /** `entry`, keeping the description of its item the page already has when `entry` has none
   * (a later event, or another gateway process, may not know the name). */
  function keepDescription(entry) {
    const known = landings.get(entry.Hash)?.Item;
    if (entry.Item && known && known.Id === entry.Item.Id && itemTitle(entry.Item) === null) {
      return { ...entry, Item: { ...entry.Item, ...known } };
    }
    return entry;
  }

  function showLanding(row, cell, entry) {
    const view = landingView(entry);
    row.dataset.landing = view.state;
    const before = shown.get(cell);
    if (before && JSON.stringify(before) === JSON.stringify(view)) return; // leave it (and focus) alone
    shown.set(cell, view);
    cell.replaceChildren(...landingNodes(view));
  }

  function updateRow(row, torrent) {
    const [name, progressCell, state, landing, speed, eta] = row.cells;
    setText(name, torrent.name ?? torrent.hash);
    const fraction = Math.min(1, Math.max(0, Number(torrent.progress) || 0));
    const bar = $("progress", progressCell);
    if (bar.value !== fraction) bar.value = fraction;
    setText($(".percent", progressCell), `${Math.floor(fraction * 100)}%`);
    setText(state, stateWord(torrent.state));
    row.dataset.state = stateWord(torrent.state);
    setText(speed, `↓ ${humanSize(torrent.dlspeed ?? 0)}/s ↑ ${humanSize(torrent.upspeed ?? 0)}/s`);
    setText(eta, humanDuration(torrent.eta ?? 8640000));
    showLanding(row, landing, landings.get(String(torrent.hash).toLowerCase()));
  }

  /** Items Jellyfin showed but the live events could not name (a gateway without an API key
   * describes them only when asked, with the caller's token): asked for once each. */
  async function describeItems() {
    const unnamed = Array.from(landings.values()).filter(
      (entry) =>
        entry.State === "in_jellyfin" &&
        typeof entry.Item?.Id === "string" &&
        itemTitle(entry.Item) === null &&
        !described.has(entry.Item.Id),
    );
    if (describing || unnamed.length === 0) return;
    describing = true;
    for (const entry of unnamed) described.add(entry.Item.Id);
    try {
      const response = await apiFetch("/landings");
      const data = await readJson(response);
      if (!response.ok || !Array.isArray(data)) return; // the link works without the name
      for (const fresh of data.map(landingEntry)) {
        const known = fresh && landings.get(fresh.Hash);
        if (known && fresh.Item && known.Item?.Id === fresh.Item.Id && itemTitle(fresh.Item) !== null) {
          known.Item = fresh.Item; // only the description: the live events stay in charge of the state
        }
      }
      render();
    } catch {
      return; // best effort: "In Jellyfin ✓" is true without the name (a 401 or 403 was handled)
    } finally {
      describing = false;
    }
    describeItems(); // items that landed meanwhile
  }

  function render() {
    for (const [hash, row] of rows) {
      if (!torrents.has(hash)) {
        row.remove();
        rows.delete(hash);
      }
    }
    // Newest first; existing rows are only moved when out of place, so focus usually stays put.
    const ordered = Array.from(torrents.values()).sort(
      (a, b) =>
        (Number(b.added_on) || 0) - (Number(a.added_on) || 0) ||
        String(a.name ?? "").localeCompare(String(b.name ?? "")) ||
        String(a.hash).localeCompare(String(b.hash)),
    );
    ordered.forEach((torrent, index) => {
      let row = rows.get(torrent.hash);
      if (!row) {
        row = newRow(torrent.hash);
        rows.set(torrent.hash, row);
      }
      updateRow(row, torrent);
      if (tbody.rows[index] !== row) tbody.insertBefore(row, tbody.rows[index] ?? null);
    });
    table.hidden = torrents.size === 0;
    empty.hidden = torrents.size !== 0;
  }

  function onEvent(type, data) {
    if (type === "snapshot") {
      torrents.clear();
      for (const torrent of Array.isArray(data?.torrents) ? data.torrents : []) {
        if (torrent && typeof torrent.hash === "string") torrents.set(torrent.hash, { ...torrent });
      }
      const entries = Array.isArray(data?.landings) ? data.landings.map(landingEntry).filter(Boolean) : [];
      const kept = entries.map(keepDescription);
      landings.clear();
      for (const entry of kept) landings.set(entry.Hash, entry);
      render();
      describeItems();
    } else if (type === "delta") {
      const changed = data?.torrents && typeof data.torrents === "object" ? data.torrents : {};
      for (const [hash, fields] of Object.entries(changed)) {
        if (fields && typeof fields === "object") torrents.set(hash, { ...torrents.get(hash), ...fields, hash });
      }
      for (const hash of Array.isArray(data?.removed) ? data.removed : []) {
        torrents.delete(hash);
        if (typeof hash === "string") landings.delete(hash.toLowerCase());
      }
      render();
    } else if (type === "landing") {
      const entry = landingEntry(data);
      if (!entry) return;
      const before = landingView(landings.get(entry.Hash));
      const kept = keepDescription(entry);
      const after = landingView(kept);
      landings.set(entry.Hash, kept);
      render();
      if (after.state !== before.state) {
        const text = landingNews(entry, after);
        if (text) setText(news, text);
      }
      describeItems();
    }
  }

  async function act(action, hash, extra = "") {
    try {
      const response = await apiFetch(`/${action}?hash=${encodeURIComponent(hash)}${extra}`, { method: "POST" });
      const data = await readJson(response);
      if (response.ok && data?.success !== false) {
        setFeedback(typeof data?.message === "string" ? data.message : "Done.", "ok");
      } else {
        setFeedback(errorText(response, data), "error");
      }
    } catch (error) {
      reportFailure(error);
    }
  }

  tbody.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    const hash = button?.closest("tr.torrent")?.dataset.hash;
    if (!hash) return;
    if (button.classList.contains("pause")) act("pause", hash);
    else if (button.classList.contains("resume")) act("resume", hash);
    else if (button.classList.contains("delete")) {
      pendingDelete = hash;
      returnFocus = button;
      dialogName.textContent = torrents.get(hash)?.name ?? hash;
      deleteFiles.checked = false;
      dialog.showModal();
      $("#confirm-delete-no").focus(); // the safe choice is the default
    }
  });

  $("#confirm-delete-yes").addEventListener("click", () => {
    const hash = pendingDelete;
    const files = deleteFiles.checked;
    dialog.close();
    if (hash) act("delete", hash, `&deleteFiles=${files ? "true" : "false"}`);
  });
  $("#confirm-delete-no").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    pendingDelete = null;
    if (returnFocus?.isConnected) returnFocus.focus();
    else $("#main").focus();
    returnFocus = null;
  });

  if (await requireAdmin()) followLiveEvents({ onEvent, onStatus: (text) => setText(live, text) });
}
