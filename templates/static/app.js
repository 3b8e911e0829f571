// Browser side of the gateway's admin pages (sign-in, search, downloads, libraries).
//
// Rules this file keeps (see the page templates and the CSP the gateway sends):
// - upstream text (torrent names, paths, errors) only ever goes into the page through textContent
//   or element properties, never parsed as HTML;
// - the Jellyfin token travels only in the Authorization header, never in a URL or a cookie;
// - no inline scripts or styles: behaviour is wired up here, looks come from classes in app.css.

const config = {
  api: document.body.dataset.api ?? "/torrent",
  base: document.body.dataset.base ?? "",
  ui: document.body.dataset.ui ?? "/torrent/ui",
  page: document.body.dataset.page ?? "",
  version: document.body.dataset.version ?? "",
};

const KEYS = {
  deviceId: "jellyfin-gateway.device-id",
  token: "jellyfin-gateway.token",
  signedOut: "jellyfin-gateway.signed-out",
  jellyfinWeb: "jellyfin_credentials", // Jellyfin's own web client; read, never written
};

const $ = (selector, root = document) => root.querySelector(selector);

// ---------------------------------------------------------------------------------------------
// Storage: localStorage can throw (disabled storage, some private modes); the pages keep working
// for the current page view instead of failing with a console error.

const memoryStore = new Map();

function storageGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return memoryStore.get(key) ?? null;
  }
}

function storageSet(key, value) {
  memoryStore.set(key, value);
  try {
    localStorage.setItem(key, value);
  } catch {
    /* kept in memory only */
  }
}

function storageRemove(key) {
  memoryStore.delete(key);
  try {
    localStorage.removeItem(key);
  } catch {
    /* nothing stored */
  }
}

// ---------------------------------------------------------------------------------------------
// Identity and token

function deviceId() {
  let id = storageGet(KEYS.deviceId);
  if (!id) {
    // getRandomValues works on plain http too (randomUUID needs a secure context).
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    id = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
    storageSet(KEYS.deviceId, id);
  }
  return id;
}

function browserName() {
  const agent = navigator.userAgent;
  if (/\bEdg(e|A|iOS)?\//.test(agent)) return "Edge";
  if (/\bOPR\//.test(agent)) return "Opera";
  if (/\b(Firefox|FxiOS)\//.test(agent)) return "Firefox";
  if (/\b(HeadlessChrome|Chrome|Chromium|CriOS)\//.test(agent)) return "Chrome";
  if (/\bSafari\//.test(agent)) return "Safari";
  return "Browser";
}

/** The MediaBrowser Authorization header Jellyfin expects; values are URL-encoded because
 * Jellyfin URL-decodes them (a comma or quote in a value would otherwise break the list). */
function authorizationHeader(token) {
  const parts = [
    ["Client", "Jellyfin Torrent Gateway"],
    ["Device", browserName()],
    ["DeviceId", deviceId()],
    ["Version", config.version],
  ];
  if (token) parts.push(["Token", token]);
  return "MediaBrowser " + parts.map(([key, value]) => `${key}="${encodeURIComponent(value)}"`).join(", ");
}

/** The token of Jellyfin's web client on this origin: the most recently used server with one. */
function jellyfinWebToken() {
  let servers;
  try {
    servers = JSON.parse(storageGet(KEYS.jellyfinWeb) ?? "null")?.Servers;
  } catch {
    return null; // malformed: behave as if the web client never signed in
  }
  if (!Array.isArray(servers)) return null;
  let best = null;
  let bestTime = -Infinity;
  for (const server of servers) {
    const token = server?.AccessToken;
    if (typeof token !== "string" || !token) continue;
    const raw = server.DateLastAccessed;
    const time = Number.isFinite(Number(raw)) ? Number(raw) : Date.parse(raw) || 0;
    if (best === null || time > bestTime) {
      best = token;
      bestTime = time;
    }
  }
  return best;
}

function currentToken() {
  const own = storageGet(KEYS.token);
  if (own) return own;
  if (storageGet(KEYS.signedOut) === "1") return null; // the user signed out here: do not reuse
  return jellyfinWebToken();
}

function goToSignin() {
  location.assign(config.ui + "/signin");
}

// ---------------------------------------------------------------------------------------------
// Feedback and small DOM helpers

const feedback = $("#feedback");

function setFeedback(text, kind = "") {
  feedback.className = kind;
  feedback.textContent = text;
}

/** createElement with a class and text; the only way data reaches the page. */
function el(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null && text !== undefined) node.textContent = String(text);
  return node;
}

function setText(node, text) {
  // Only touch the DOM when the text changed: live updates then leave screen readers alone.
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

// ---------------------------------------------------------------------------------------------
// API calls

/** Thrown after a 401/403 was handled (redirect or "Administrators only"); callers just stop. */
class AuthHandled extends Error {}

function showAdminOnly() {
  const main = $("#main");
  if (main) main.hidden = true;
  const loading = $("#loading");
  if (loading) loading.hidden = true;
  $("#admin-only").hidden = false;
}

function revealMain() {
  const loading = $("#loading");
  if (loading) loading.hidden = true;
  $("#main").hidden = false;
}

async function apiFetch(path, { method = "GET", json, accept = "application/json", signal } = {}) {
  const headers = { Authorization: authorizationHeader(currentToken()), Accept: accept };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(config.api + path, {
    method,
    headers,
    body,
    signal,
    cache: "no-store",
    credentials: "omit", // the token is the only credential; never send cookies
  });
  if (response.status === 401) {
    storageRemove(KEYS.token);
    goToSignin();
    throw new AuthHandled("401");
  }
  if (response.status === 403) {
    showAdminOnly();
    throw new AuthHandled("403");
  }
  return response;
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** The reason in an error body ({"error"} or {"message"}), else the HTTP status. */
function errorText(response, data) {
  if (data && typeof data === "object") {
    if (typeof data.error === "string" && data.error) return data.error;
    if (typeof data.message === "string" && data.message) return data.message;
  }
  return `The gateway answered HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}.`;
}

/** Report a failed call in #feedback; auth failures were already handled, aborts are silent. */
function reportFailure(error) {
  if (error instanceof AuthHandled || error?.name === "AbortError") return;
  setFeedback("Could not reach the gateway. Check the connection and try again.", "error");
}

/** Pages other than sign-in: a usable admin token, or leave (401) / explain (403). */
async function requireAdmin() {
  if (!currentToken()) {
    goToSignin();
    return false;
  }
  try {
    const response = await apiFetch("/Test1");
    if (!response.ok) {
      const loading = $("#loading");
      if (loading) loading.hidden = true;
      setFeedback(errorText(response, await readJson(response)), "error");
      return false;
    }
  } catch (error) {
    const loading = $("#loading");
    if (loading && !(error instanceof AuthHandled)) loading.hidden = true;
    reportFailure(error);
    return false;
  }
  revealMain();
  return true;
}

// ---------------------------------------------------------------------------------------------
// Formatting

const SIZE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

function humanSize(bytes) {
  let value = Number(bytes);
  if (!Number.isFinite(value) || value < 0) return "";
  let unit = 0;
  while (value >= 1024 && unit < SIZE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${SIZE_UNITS[unit]}`;
}

function humanDuration(seconds) {
  const total = Math.floor(Number(seconds));
  if (!Number.isFinite(total) || total < 0 || total >= 8640000) return "∞"; // qBittorrent's "unknown"
  const parts = [
    [Math.floor(total / 86400), "d"],
    [Math.floor((total % 86400) / 3600), "h"],
    [Math.floor((total % 3600) / 60), "m"],
    [total % 60, "s"],
  ];
  const first = parts.findIndex(([amount]) => amount > 0);
  if (first === -1) return "0s";
  return parts
    .slice(first, first + 2)
    .filter(([amount]) => amount > 0)
    .map(([amount, unit]) => `${amount}${unit}`)
    .join(" ");
}

/** A unix time as YYYY-MM-DD (UTC, so every viewer sees the same date apibay shows). */
function isoDate(unixSeconds) {
  const seconds = Number(unixSeconds);
  if (!unixSeconds || !Number.isFinite(seconds)) return "";
  return new Date(seconds * 1000).toISOString().slice(0, 10);
}

function localDateTime(unixSeconds) {
  const date = new Date(Number(unixSeconds) * 1000);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

// ---------------------------------------------------------------------------------------------
// Sign-in page

async function initSignin() {
  $("#signout").hidden = true;
  const form = $("#signin-form");
  const submit = $("#signin-submit");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    setFeedback("Signing in…");
    try {
      const response = await fetch(config.base + "/Users/AuthenticateByName", {
        method: "POST",
        headers: {
          Authorization: authorizationHeader(null),
          "Content-Type": "application/json",
          Accept: "application/json",
        },
        body: JSON.stringify({ Username: $("#username").value, Pw: $("#password").value }),
        cache: "no-store",
        credentials: "omit",
      });
      if (response.status === 200) {
        const token = (await readJson(response))?.AccessToken;
        if (typeof token === "string" && token) {
          storageSet(KEYS.token, token);
          storageRemove(KEYS.signedOut);
          location.assign(config.ui + "/search");
          return;
        }
        setFeedback("Jellyfin accepted the sign-in but sent no access token.", "error");
      } else if (response.status === 401) {
        setFeedback("Wrong user name or password.", "error");
      } else {
        setFeedback(`Sign-in failed: Jellyfin answered HTTP ${response.status}.`, "error");
      }
    } catch {
      setFeedback("Could not reach Jellyfin. Check the connection and try again.", "error");
    }
    submit.disabled = false;
  });

  // Already signed in with a working token (ours or Jellyfin web's)? Skip the form.
  const token = currentToken();
  if (!token) return;
  try {
    const response = await fetch(config.api + "/Test1", {
      headers: { Authorization: authorizationHeader(token), Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 200) {
      location.assign(config.ui + "/search");
    } else if (response.status === 401 && storageGet(KEYS.token) === token) {
      storageRemove(KEYS.token); // expired; unless a new sign-in replaced it meanwhile
    }
  } catch {
    /* the form is there; its own errors will tell */
  }
}

// ---------------------------------------------------------------------------------------------
// Search page

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

const SORT_KEYS = {
  name: (row) => String(row.name ?? "").toLocaleLowerCase(),
  size: (row) => Number(row.size) || 0,
  seeders: (row) => Number(row.seeders) || 0,
  leechers: (row) => Number(row.leechers) || 0,
  added: (row) => Number(row.added) || 0,
};

async function initSearch() {
  const form = $("#search-form");
  const query = $("#q");
  const category = $("#category");
  const codeField = $("#category-code-field");
  const code = $("#category-code");
  const submit = $("#search-submit");
  const table = $("#results");
  const tbody = $("#results tbody");
  const noResults = $("#no-results");

  const results = new WeakMap(); // row element -> its search result
  let sort = null; // {key, direction: 1 | -1}
  let searchNumber = 0;
  let libraryNames = Promise.resolve([]);

  category.addEventListener("change", () => {
    // Disabled when hidden so its pattern cannot block a submit nobody can fix.
    const custom = category.value === "custom";
    codeField.hidden = !custom;
    code.disabled = !custom;
    code.required = custom;
    if (custom) code.focus();
  });

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
    tbody.append(...rows); // moves the existing rows: chosen libraries and paths stay
  }

  table.querySelector("thead").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-sort]");
    if (!button) return;
    const key = button.dataset.sort;
    sort = { key, direction: sort?.key === key ? -sort.direction : 1 };
    applySort();
  });

  function resultRow(result, index, libraries) {
    const row = el("tr", "result");
    row.dataset.hash = String(result.info_hash ?? "");
    row.dataset.index = String(index);
    results.set(row, result);
    const nameId = `result-${index}-name`;

    const name = el("td", "name", result.name ?? "");
    name.id = nameId;
    const cells = [
      name,
      el("td", "size", humanSize(result.size)),
      el("td", "seeders", result.seeders ?? ""),
      el("td", "leechers", result.leechers ?? ""),
      el("td", "status", result.status ?? ""),
      el("td", "added", isoDate(result.added)),
    ];
    // Card labels on phones (the name is the card's title and needs none).
    const labels = [null, "Size", "Seeders", "Leechers", "Uploader", "Added"];
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
    noResults.hidden = rows.length !== 0;
    applySort();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const number = ++searchNumber;
    const cat = category.value === "custom" ? code.value.trim() || "0" : category.value;
    const params = new URLSearchParams({ q: query.value, cat });
    submit.disabled = true;
    table.setAttribute("aria-busy", "true");
    setFeedback("Searching…");
    try {
      const response = await apiFetch("/search?" + params.toString());
      const data = await readJson(response);
      if (number !== searchNumber) return; // a newer search owns the table
      if (!response.ok || !Array.isArray(data)) {
        setFeedback(errorText(response, data), "error");
        return;
      }
      showResults(data, await libraryNames);
      const count = tbody.rows.length;
      setFeedback(`${count} ${count === 1 ? "result" : "results"} found.`, "ok");
    } catch (error) {
      if (number === searchNumber) reportFailure(error);
    } finally {
      if (number === searchNumber) {
        submit.disabled = false;
        table.removeAttribute("aria-busy");
      }
    }
  });

  tbody.addEventListener("click", async (event) => {
    const button = event.target.closest("button.download");
    if (!button) return;
    const row = button.closest("tr.result");
    const result = results.get(row);
    if (!result) return;
    const body = { Info_hash: result.info_hash, Name: result.name };
    const library = $("select.library", row).value;
    const savePath = $("input.save-path", row).value.trim();
    if (library) body.Library = library;
    if (savePath) body.SavePath = savePath;
    button.disabled = true;
    try {
      const response = await apiFetch("/download", { method: "POST", json: body });
      const data = await readJson(response);
      if (response.ok) {
        setFeedback(typeof data?.Message === "string" ? data.Message : "Download started.", "ok");
      } else {
        setFeedback(errorText(response, data), "error");
      }
    } catch (error) {
      reportFailure(error);
    } finally {
      button.disabled = false;
    }
  });

  if (await requireAdmin()) {
    libraryNames = loadLibraryNames();
    query.focus();
  }
}

// ---------------------------------------------------------------------------------------------
// Downloads page

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

/** Reads a text/event-stream body and calls onEvent(type, data) per event (the SSE rules:
 * "field: value" lines, a blank line dispatches, ":" comments and unknown fields ignored). */
async function readEventStream(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let type = "";
  let data = [];

  const line = (text) => {
    if (text === "") {
      if (data.length) onEvent(type || "message", data.join("\n"));
      type = "";
      data = [];
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
    // "id" and "retry" are not needed: every reconnect starts from a fresh snapshot.
  };

  for (;;) {
    const { value, done } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    // A lone "\r" at the end may be the first half of "\r\n": wait for the next chunk.
    const pattern = /\r\n|\r(?!$)|\n/g;
    let start = 0;
    let match;
    while ((match = pattern.exec(buffer)) !== null) {
      line(buffer.slice(start, match.index));
      start = pattern.lastIndex;
    }
    buffer = buffer.slice(start);
    if (done) return;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function initDownloads() {
  const table = $("#downloads");
  const tbody = $("#downloads tbody");
  const empty = $("#no-downloads");
  const live = $("#live-status");
  const dialog = $("#confirm-delete");
  const dialogName = $("#confirm-delete-name");
  const deleteFiles = $("#delete-files");

  const torrents = new Map(); // hash -> latest fields
  const rows = new Map(); // hash -> <tr>
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
    row.append(name, progressCell, el("td", "state"), el("td", "speed"), el("td", "eta"), actions);
    const labels = [null, "Progress", "State", "Speed", "Time left", null];
    Array.from(row.cells).forEach((cell, i) => {
      if (labels[i]) cell.dataset.label = labels[i];
    });
    return row;
  }

  function updateRow(row, torrent) {
    const [name, progressCell, state, speed, eta] = row.cells;
    setText(name, torrent.name ?? torrent.hash);
    const fraction = Math.min(1, Math.max(0, Number(torrent.progress) || 0));
    const bar = $("progress", progressCell);
    if (bar.value !== fraction) bar.value = fraction;
    setText($(".percent", progressCell), `${Math.floor(fraction * 100)}%`);
    setText(state, stateWord(torrent.state));
    row.dataset.state = stateWord(torrent.state);
    setText(speed, `↓ ${humanSize(torrent.dlspeed ?? 0)}/s ↑ ${humanSize(torrent.upspeed ?? 0)}/s`);
    setText(eta, humanDuration(torrent.eta ?? 8640000));
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

  function onEvent(type, text) {
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      return; // not ours to show
    }
    if (type === "snapshot") {
      torrents.clear();
      for (const torrent of Array.isArray(data?.torrents) ? data.torrents : []) {
        if (torrent && typeof torrent.hash === "string") torrents.set(torrent.hash, { ...torrent });
      }
      render();
    } else if (type === "delta") {
      const changed = data?.torrents && typeof data.torrents === "object" ? data.torrents : {};
      for (const [hash, fields] of Object.entries(changed)) {
        if (fields && typeof fields === "object") torrents.set(hash, { ...torrents.get(hash), ...fields, hash });
      }
      for (const hash of Array.isArray(data?.removed) ? data.removed : []) torrents.delete(hash);
      render();
    }
  }

  async function follow() {
    // fetch, not EventSource: EventSource cannot send the Authorization header.
    for (;;) {
      let problem = "Live updates lost; reconnecting…";
      try {
        const response = await apiFetch("/events", { accept: "text/event-stream" });
        if (response.ok && response.body) {
          setText(live, "Live updates on.");
          await readEventStream(response.body, onEvent);
        } else {
          problem = `Live updates failed (${errorText(response, await readJson(response))}); retrying…`;
        }
      } catch (error) {
        if (error instanceof AuthHandled) return;
      }
      setText(live, problem);
      await sleep(2000);
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

  if (await requireAdmin()) follow();
}

// ---------------------------------------------------------------------------------------------
// Libraries page

function libraryCard(library, index) {
  const section = el("section", "library");
  const headingId = `library-${index}`;
  section.setAttribute("aria-labelledby", headingId);
  const heading = el("h2", "", library?.Name ?? "");
  heading.id = headingId;
  section.append(heading);

  const folders = Array.isArray(library?.Folders) ? library.Folders : [];
  if (folders.length === 0) {
    section.append(el("p", "muted", "This library has no folders."));
    return section;
  }
  const table = el("table", "folders cards");
  const head = el("thead");
  const headRow = el("tr");
  for (const title of ["In Jellyfin", "In qBittorrent"]) {
    const th = el("th", "", title);
    th.scope = "col";
    headRow.append(th);
  }
  head.append(headRow);
  const body = el("tbody");
  for (const folder of folders) {
    const row = el("tr", "folder");
    const jellyfin = el("td", "jellyfin-path", folder?.Jellyfin ?? "");
    jellyfin.dataset.label = "In Jellyfin";
    const mapped = folder?.QBittorrent;
    const qbittorrent = el("td", mapped ? "qbittorrent-path" : "qbittorrent-path unmapped", mapped || "not mapped");
    qbittorrent.dataset.label = "In qBittorrent";
    row.append(jellyfin, qbittorrent);
    body.append(row);
  }
  table.append(head, body);
  section.append(table);
  return section;
}

const UPSTREAMS = [
  ["jellyfin", "Jellyfin"],
  ["qbittorrent", "qBittorrent"],
  ["apibay", "apibay"],
];

function healthItem(key, title, check) {
  const item = el("li", "health-item");
  item.dataset.check = key;
  const head = el("div", "health-head");
  head.append(el("strong", "health-name", title), el("code", "health-key", key));
  const ok = check?.ok === true;
  const status = el("span", ok ? "health-status ok" : "health-status failed", ok ? "ok" : "failed");
  head.append(status);
  item.append(head);
  const details = el("p", "health-details");
  const facts = [];
  if (Number.isFinite(Number(check?.latency_ms)) && check?.latency_ms !== null) facts.push(`${Math.round(check.latency_ms)} ms`);
  if (check?.version) facts.push(`version ${check.version}`);
  if (check?.webapi_version) facts.push(`WebAPI ${check.webapi_version}`);
  if (check?.server_name) facts.push(`server ${check.server_name}`);
  details.textContent = facts.join(" · ");
  if (facts.length) item.append(details);
  if (check?.error) item.append(el("p", "health-error", check.error));
  return item;
}

function watcherItem(watcher) {
  const item = el("li", "health-item");
  item.dataset.check = "watcher";
  const head = el("div", "health-head");
  head.append(el("strong", "health-name", "Completion watcher"), el("code", "health-key", "watcher"));
  // Not running just means idle: nobody watches live progress and notifications are off.
  const [state, word] = watcher?.last_error ? ["failed", "failing"] : watcher?.running ? ["ok", "running"] : ["idle", "idle"];
  head.append(el("span", `health-status ${state}`, word));
  item.append(head);

  const facts = el("ul", "health-facts");
  facts.append(
    el("li", "", watcher?.notifications ? "Jellyfin notifications: on" : "Jellyfin notifications: off (no JELLYFIN_API_KEY)"),
  );
  if (Number.isFinite(Number(watcher?.pending)) && watcher?.pending !== null) {
    facts.append(el("li", "", `Waiting to be announced: ${watcher.pending}`));
  }
  const last = watcher?.last_notification;
  if (last && typeof last === "object") {
    const entry = el("li", "last-notification", "Last notification: ");
    entry.append(el("span", "path", last.path ?? ""));
    if (last.at) {
      const time = el("time", "", localDateTime(last.at));
      const date = new Date(Number(last.at) * 1000);
      if (!Number.isNaN(date.getTime())) time.dateTime = date.toISOString();
      entry.append(" at ", time);
    }
    if (last.call) entry.append(` (${last.call})`);
    facts.append(entry);
  } else {
    facts.append(el("li", "last-notification", "Last notification: none yet"));
  }
  facts.append(el("li", watcher?.last_error ? "health-error" : "", `Last error: ${watcher?.last_error || "none"}`));
  item.append(facts);
  return item;
}

async function initLibraries() {
  const container = $("#libraries");
  const health = $("#health");
  const refresh = $("#health-refresh");

  async function loadLibraries() {
    try {
      const response = await apiFetch("/libraries/mapped");
      const data = await readJson(response);
      if (!response.ok || !Array.isArray(data)) {
        container.replaceChildren(el("p", "error-text", errorText(response, data)));
        return;
      }
      container.replaceChildren(
        ...(data.length ? data.map(libraryCard) : [Object.assign(el("p", "empty", "No libraries."), { id: "no-libraries" })]),
      );
    } catch (error) {
      if (!(error instanceof AuthHandled)) container.replaceChildren(el("p", "error-text", "Could not reach the gateway."));
      reportFailure(error);
    } finally {
      container.removeAttribute("aria-busy");
    }
  }

  async function loadHealth() {
    refresh.disabled = true;
    health.setAttribute("aria-busy", "true");
    try {
      const response = await apiFetch("/health");
      const data = await readJson(response);
      if (!response.ok || !data || typeof data !== "object") {
        setFeedback(errorText(response, data), "error");
        return false;
      }
      const items = UPSTREAMS.map(([key, title]) => healthItem(key, title, data[key]));
      if (data.watcher) items.push(watcherItem(data.watcher));
      health.replaceChildren(...items);
      return true;
    } catch (error) {
      reportFailure(error);
      return false;
    } finally {
      health.removeAttribute("aria-busy");
      refresh.disabled = false;
    }
  }

  refresh.addEventListener("click", async () => {
    if (await loadHealth()) setFeedback("Health checked again.", "ok");
  });

  if (await requireAdmin()) {
    await Promise.all([loadLibraries(), loadHealth()]);
  }
}

// ---------------------------------------------------------------------------------------------
// Start

const LOGOUT_TIMEOUT_MS = 5000;

/** Ends the Jellyfin session behind `token` (POST /Sessions/Logout, the token in the header as
 * always). Best effort: unreachable, slow or already expired all end quietly, as the token is
 * forgotten here either way. */
async function endJellyfinSession(token) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), LOGOUT_TIMEOUT_MS);
  try {
    await fetch(config.base + "/Sessions/Logout", {
      method: "POST",
      headers: { Authorization: authorizationHeader(token), Accept: "application/json" },
      signal: controller.signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    /* not revoked; Jellyfin expires it in time, and this browser no longer has it */
  } finally {
    clearTimeout(timer);
  }
}

$("#signout").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  if (button.disabled) return;
  button.disabled = true;
  // Only the token our own form signed in with is ours to end. Jellyfin web's (borrowed from
  // jellyfin_credentials) is only forgotten: signing out here must not sign the user out there.
  const own = storageGet(KEYS.token);
  // Forget first, so an interrupted sign-out (tab closed, Jellyfin slow) still signed out here.
  storageRemove(KEYS.token);
  storageSet(KEYS.signedOut, "1"); // keeps Jellyfin web's token from signing us straight back in
  if (own && own !== jellyfinWebToken()) {
    setFeedback("Signing out…");
    await endJellyfinSession(own);
  }
  goToSignin();
});

const PAGES = { signin: initSignin, search: initSearch, downloads: initDownloads, libraries: initLibraries };
(PAGES[config.page] ?? requireAdmin)();
