// The search page: every source the gateway knows (apibay, Torznab indexers) through /torrent/find,
// each release with its parsed quality and whether Jellyfin already has the title; filtered and
// sorted here without a new request, each result with a library (or save path) to download into.
// Rules: top of main.js.
//
// Hand-over: /torrent/ui/search?q=…&imdb=tt…&type=movie|tv|any runs that search at once.

import { apiFetch, errorText, readJson, reportFailure, requireAdmin } from "./api.js";
import { $, el, setFeedback } from "./dom.js";
import { humanSize } from "./format.js";

async function loadLibraryNames() {
  try {
    const response = await apiFetch("/libraries");
    const data = await readJson(response);
    if (!response.ok || !Array.isArray(data)) {
      setFeedback(errorText(response, data), "error");
      return [];
    }
    return data.map((library) => library?.Name).filter((name) => typeof name === "string");
  } catch (error) {
    reportFailure(error);
    return [];
  }
}

/** An IMDb title id as the gateway accepts it. */
const IMDB_ID = /^tt\d{7,10}$/i;
const KINDS = ["any", "movie", "tv"];
const GIB = 1024 ** 3;

const text = (value) => (typeof value === "string" ? value : "");
const count = (value) => (Number.isFinite(Number(value)) && value !== null ? Number(value) : null);

/** "2160p" → 2160; anything without a height (or none) → null. */
function height(resolution) {
  const match = /^(\d{3,4})[pi]$/i.exec(text(resolution));
  return match ? Number(match[1]) : null;
}

/** The resolution filter's bucket of a release: "2160p", "1080p", "720p", "sd" or "" (unknown). */
function bucket(resolution) {
  const h = height(resolution);
  if (h === null) return "";
  if (h >= 2160) return "2160p";
  if (h >= 1080) return "1080p";
  if (h >= 720) return "720p";
  return "sd";
}

/** "2024-11-26T20:00:00+00:00" → "2024-11-26" (UTC, as every viewer sees it); "" when unreadable. */
function addedDate(iso) {
  const time = Date.parse(text(iso));
  return Number.isNaN(time) ? "" : new Date(time).toISOString().slice(0, 10);
}

/** "S01E02", "Season 1" or "" for a release's season and episode. */
function episodeTag(result) {
  const season = count(result.Season);
  const episode = count(result.Episode);
  const pad = (n) => String(n).padStart(2, "0");
  if (season === null) return ""; // an episode number alone is too often a misread ("alert(1)")
  return episode !== null ? `S${pad(season)}E${pad(episode)}` : `Season ${season}`;
}

/** Whether the release is better than the copy Jellyfin has (only when both resolutions are known). */
function isUpgrade(result) {
  const have = height(result.InLibrary?.Resolution);
  const offered = height(result.Resolution);
  return have !== null && offered !== null && offered > have;
}

const SORT_KEYS = {
  name: (result) => text(result.Name).toLocaleLowerCase(),
  size: (result) => count(result.Size) ?? 0,
  seeders: (result) => count(result.Seeders) ?? 0,
  leechers: (result) => count(result.Leechers) ?? 0,
  added: (result) => Date.parse(text(result.Added)) || 0,
};

export async function init() {
  const form = $("#search-form");
  const query = $("#q");
  const kind = $("#type");
  const submit = $("#search-submit");
  const imdbOnly = $("#imdb-only");
  const imdbId = $("#imdb-id");
  const imdbClear = $("#imdb-clear");
  const sourcesStatus = $("#sources-status");
  const sourcesList = $("#sources-status ul");
  const filters = $("#filters");
  const minSeeders = $("#min-seeders");
  const maxSize = $("#max-size");
  const resolution = $("#resolution");
  const hideOwned = $("#hide-owned");
  const clearFilters = $("#clear-filters");
  const filterCount = $("#filter-count");
  const summary = $("#filter-summary");
  const table = $("#results");
  const tbody = $("#results tbody");
  const noResults = $("#no-results");

  const results = new WeakMap(); // row element -> its search result
  let sort = null; // {key, direction: 1 | -1}
  let searchNumber = 0;
  let libraryNames = Promise.resolve([]);
  let imdb = null; // the IMDb id the search is narrowed to (hand-over), or null

  function setImdb(value) {
    imdb = IMDB_ID.test(text(value).trim()) ? text(value).trim().toLowerCase() : null;
    imdbOnly.hidden = imdb === null;
    imdbId.textContent = imdb ?? "";
    // With an IMDb id the gateway needs no text: apibay is asked by the id then.
    query.required = imdb === null;
  }

  imdbClear.addEventListener("click", () => {
    setImdb(null);
    query.focus();
  });

  // ---- sorting ------------------------------------------------------------------------------

  function applySort() {
    for (const th of table.querySelectorAll("thead th")) {
      const button = $("button[data-sort]", th);
      if (sort && button?.dataset.sort === sort.key) {
        th.setAttribute("aria-sort", sort.direction === 1 ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    }
    const rows = Array.from(tbody.rows);
    if (sort) {
      const key = SORT_KEYS[sort.key];
      rows.sort((a, b) => {
        const x = key(results.get(a));
        const y = key(results.get(b));
        const order = typeof x === "string" ? x.localeCompare(y) : x - y;
        return order * sort.direction || Number(a.dataset.index) - Number(b.dataset.index);
      });
    } else {
      rows.sort((a, b) => Number(a.dataset.index) - Number(b.dataset.index));
    }
    tbody.append(...rows); // moves the existing rows: chosen libraries, paths and filters stay
  }

  table.querySelector("thead").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-sort]");
    if (!button) return;
    const key = button.dataset.sort;
    sort = { key, direction: sort?.key === key ? -sort.direction : 1 };
    applySort();
  });

  // ---- filtering (client-side: no new request) ----------------------------------------------

  function passes(result) {
    const seeders = Number(minSeeders.value);
    if (minSeeders.value !== "" && Number.isFinite(seeders) && (count(result.Seeders) ?? 0) < seeders) return false;
    const gib = Number(maxSize.value);
    if (maxSize.value !== "" && Number.isFinite(gib)) {
      const size = count(result.Size);
      if (size === null || size > gib * GIB) return false;
    }
    if (resolution.value && bucket(result.Resolution) !== resolution.value) return false;
    if (hideOwned.checked && result.InLibrary && !isUpgrade(result)) return false;
    return true;
  }

  function applyFilters() {
    const rows = Array.from(tbody.rows);
    let shown = 0;
    for (const row of rows) {
      row.hidden = !passes(results.get(row));
      if (!row.hidden) shown += 1;
    }
    const active = [minSeeders.value !== "", maxSize.value !== "", resolution.value !== "", hideOwned.checked];
    const on = active.filter(Boolean).length;
    const filtering = on > 0;
    clearFilters.disabled = !filtering;
    filterCount.textContent = filtering ? `(${on} on)` : "";
    if (rows.length === 0) {
      summary.hidden = true;
      summary.textContent = "";
      return;
    }
    summary.hidden = false;
    const noun = rows.length === 1 ? "result" : "results";
    summary.textContent = !filtering
      ? `Showing all ${rows.length} ${noun}.`
      : shown === 0
        ? `No results match the filters (${rows.length} hidden).`
        : `Showing ${shown} of ${rows.length} ${noun}.`;
    summary.classList.toggle("nothing", filtering && shown === 0);
  }

  for (const control of [minSeeders, maxSize, resolution, hideOwned]) {
    control.addEventListener(control.tagName === "INPUT" && control.type !== "checkbox" ? "input" : "change", applyFilters);
  }
  clearFilters.addEventListener("click", () => {
    minSeeders.value = "";
    maxSize.value = "";
    resolution.value = "";
    hideOwned.checked = false;
    applyFilters();
    minSeeders.focus();
  });

  // ---- rendering ----------------------------------------------------------------------------

  function sourcesLine(sources) {
    const items = [];
    for (const source of Array.isArray(sources) ? sources : []) {
      if (!source || typeof source !== "object") continue;
      const name = text(source.Name) || "source";
      const ok = source.Ok === true;
      const item = el("li", ok ? "source ok" : "source failed");
      item.dataset.source = name;
      if (ok) {
        item.textContent = `${name} ${count(source.Count) ?? 0}`;
        if (count(source.Ms) !== null) item.title = `answered in ${count(source.Ms)} ms`;
      } else {
        item.append(el("span", "mark", "✗ "));
        item.append(`${name} failed${text(source.Error) ? ": " + text(source.Error) : ""}`);
      }
      items.push(item);
    }
    sourcesList.replaceChildren(...items);
    sourcesStatus.hidden = items.length === 0;
  }

  function chips(result) {
    const list = el("ul", "chips");
    list.setAttribute("aria-label", "Release details");
    const add = (value, kind) => {
      if (value) list.append(el("li", `chip chip-${kind}`, value));
    };
    add(episodeTag(result), "episode");
    add(text(result.Resolution), "resolution");
    add(text(result.Source), "source");
    add(text(result.Hdr), "hdr");
    add(text(result.Codec), "codec");
    return list.childElementCount ? list : null;
  }

  function libraryBadge(result) {
    const owned = result.InLibrary;
    if (!owned || typeof owned !== "object") return null;
    const have = text(owned.Resolution);
    const label = el("span", "badge in-library", have ? `In library: ${have}` : "In library");
    const parts = [label];
    // The space keeps the two apart when read out (a flex container does not show it).
    if (isUpgrade(result)) parts.push(" ", el("span", "badge upgrade", `Upgrade to ${text(result.Resolution)}`));
    const url = text(owned.Url);
    // Same origin only (Jellyfin web through the gateway): never a javascript: or foreign link.
    let href = null;
    try {
      const parsed = new URL(url, location.href);
      if (url && parsed.origin === location.origin) href = parsed.href;
    } catch {
      href = null;
    }
    const badge = el(href ? "a" : "span", "library-badge");
    if (href) badge.href = href;
    const title = [text(owned.Name), count(owned.Year) !== null ? `(${owned.Year})` : ""].filter(Boolean).join(" ");
    if (title) badge.title = `Open ${title} in Jellyfin`;
    badge.append(...parts);
    return badge;
  }

  function resultRow(result, index, libraries) {
    const row = el("tr", "result");
    row.dataset.hash = text(result.InfoHash);
    row.dataset.index = String(index);
    if (result.InLibrary) row.dataset.inLibrary = isUpgrade(result) ? "upgrade" : "yes";
    results.set(row, result);
    const nameId = `result-${index}-name`;

    const name = el("td", "name");
    const title = el("span", "release-name", text(result.Name));
    title.id = nameId;
    name.append(title);
    const details = chips(result);
    const badge = libraryBadge(result);
    if (details || badge) {
      const line = el("div", "release-facts");
      if (details) line.append(details);
      if (badge) line.append(badge);
      name.append(line);
    }
    const seeders = count(result.Seeders);
    const leechers = count(result.Leechers);
    const sources = Array.isArray(result.Sources) ? result.Sources.filter((s) => typeof s === "string") : [];
    const cells = [
      name,
      el("td", "size", count(result.Size) === null ? "" : humanSize(result.Size)),
      el("td", "seeders", seeders ?? ""),
      el("td", "leechers", leechers ?? ""),
      el("td", "added", addedDate(result.Added)),
      el("td", "sources", sources.join(", ")),
    ];
    // Card labels on phones (the name is the card's title and needs none).
    const labels = [null, "Size", "Seeders", "Leechers", "Added", "Found on"];
    cells.forEach((cell, i) => {
      if (labels[i]) cell.dataset.label = labels[i];
    });

    const actions = el("td", "actions");
    const controls = el("div", "row-controls");
    const libraryId = `result-${index}-library`;
    const libraryLabel = el("label", "row-label", "Library");
    libraryLabel.htmlFor = libraryId;
    const select = el("select", "library");
    select.id = libraryId;
    const defaultOption = el("option", "", "Default folder");
    defaultOption.value = "";
    select.append(defaultOption);
    for (const library of libraries) {
      const option = el("option", "", library);
      option.value = library;
      select.append(option);
    }
    const pathId = `result-${index}-save-path`;
    const pathLabel = el("label", "row-label", "Save path");
    pathLabel.htmlFor = pathId;
    const path = el("input", "save-path");
    path.id = pathId;
    path.type = "text";
    path.placeholder = "Custom save path (optional)";
    path.autocomplete = "off";
    path.spellcheck = false;
    const download = el("button", "download primary", "Download");
    download.type = "button";
    download.setAttribute("aria-describedby", nameId);
    const libraryControl = el("span", "control");
    libraryControl.append(libraryLabel, select);
    const pathControl = el("span", "control");
    pathControl.append(pathLabel, path);
    controls.append(libraryControl, pathControl, download);
    actions.append(controls);

    row.append(...cells, actions);
    return row;
  }

  function showResults(list, libraries) {
    const rows = list.filter((item) => item && typeof item === "object").map((item, i) => resultRow(item, i, libraries));
    tbody.replaceChildren(...rows);
    table.hidden = rows.length === 0;
    filters.hidden = rows.length === 0;
    noResults.hidden = rows.length !== 0;
    applySort();
    applyFilters();
  }

  // ---- searching ----------------------------------------------------------------------------

  /** The page's address says what it shows: reload or share it to run the same search. */
  function rememberSearch(params) {
    try {
      history.replaceState(null, "", `${location.pathname}?${params.toString()}`);
    } catch {
      /* only a convenience */
    }
  }

  async function search() {
    const number = ++searchNumber;
    const params = new URLSearchParams();
    const q = query.value.trim();
    if (q) params.set("q", q);
    if (imdb) params.set("imdb", imdb);
    params.set("type", KINDS.includes(kind.value) ? kind.value : "any");
    rememberSearch(params);
    submit.disabled = true;
    table.setAttribute("aria-busy", "true");
    setFeedback("Searching…");
    try {
      const response = await apiFetch("/find?" + params.toString());
      const data = await readJson(response);
      if (number !== searchNumber) return; // a newer search owns the table
      if (!response.ok || !Array.isArray(data?.Results)) {
        setFeedback(errorText(response, data), "error");
        return;
      }
      sourcesLine(data.Sources);
      showResults(data.Results, await libraryNames);
      const found = tbody.rows.length;
      const sources = Array.isArray(data.Sources) ? data.Sources : [];
      const answered = sources.filter((s) => s?.Ok === true).length;
      if (sources.length && answered === 0) {
        setFeedback("No source answered; see the sources line for why.", "error");
      } else {
        setFeedback(`${found} ${found === 1 ? "result" : "results"} found.`, "ok");
      }
    } catch (error) {
      if (number === searchNumber) reportFailure(error);
    } finally {
      if (number === searchNumber) {
        submit.disabled = false;
        table.removeAttribute("aria-busy");
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });

  // ---- downloading --------------------------------------------------------------------------

  tbody.addEventListener("click", async (event) => {
    const button = event.target.closest("button.download");
    if (!button) return;
    const row = button.closest("tr.result");
    const result = results.get(row);
    if (!result) return;
    const body = { Info_hash: result.InfoHash, Name: result.Name };
    const library = $("select.library", row).value;
    const savePath = $("input.save-path", row).value.trim();
    if (library) body.Library = library;
    if (savePath) body.SavePath = savePath;
    // The IMDb id goes into the library folder's name, for Jellyfin. Only a well-formed one: the
    // gateway refuses anything else, and the download matters more.
    const imdbOfRow = text(result.Imdb).trim();
    if (IMDB_ID.test(imdbOfRow)) body.Imdb = imdbOfRow;
    button.disabled = true;
    try {
      const response = await apiFetch("/download", { method: "POST", json: body });
      const data = await readJson(response);
      if (response.ok) {
        const message = typeof data?.Message === "string" ? data.Message : "Download started.";
        // Folder: the library folder the download goes to, as Jellyfin sees it (library downloads).
        const folder = typeof data?.Folder === "string" && data.Folder ? data.Folder : null;
        setFeedback(folder ? `${message.replace(/\.?$/, ".")} Saving to ${folder}` : message, "ok");
      } else {
        setFeedback(errorText(response, data), "error");
      }
    } catch (error) {
      reportFailure(error);
    } finally {
      button.disabled = false;
    }
  });

  // ---- start --------------------------------------------------------------------------------

  const handedOver = new URLSearchParams(location.search);
  const wantedKind = text(handedOver.get("type")).toLowerCase();
  if (KINDS.includes(wantedKind)) kind.value = wantedKind;
  query.value = text(handedOver.get("q"));
  setImdb(handedOver.get("imdb"));
  // Filters start open where there is room for them; on a phone they wait behind their summary.
  filters.open = window.matchMedia("(min-width: 640px)").matches;
  applyFilters();

  if (await requireAdmin()) {
    libraryNames = loadLibraryNames();
    query.focus();
    if (query.value.trim() || imdb) search();
  }
}
