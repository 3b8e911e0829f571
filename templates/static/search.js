// The search page: apibay results through the gateway, sortable, each with a library (or save path)
// to download into. Rules: top of main.js.

import { apiFetch, errorText, readJson, reportFailure, requireAdmin } from "./api.js";
import { $, el, setFeedback } from "./dom.js";
import { humanSize, isoDate } from "./format.js";

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

/** An IMDb title id as the gateway accepts it (apibay's `imdb` field, when it has one). */
const IMDB_ID = /^tt\d{7,10}$/i;

const SORT_KEYS = {
  name: (row) => String(row.name ?? "").toLocaleLowerCase(),
  size: (row) => Number(row.size) || 0,
  seeders: (row) => Number(row.seeders) || 0,
  leechers: (row) => Number(row.leechers) || 0,
  added: (row) => Number(row.added) || 0,
};

export async function init() {
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
    // apibay's IMDb id ("" when it has none) goes into the library folder's name, for Jellyfin.
    // Only a well-formed one: the gateway refuses anything else, and the download matters more.
    const imdb = typeof result.imdb === "string" ? result.imdb.trim() : "";
    if (IMDB_ID.test(imdb)) body.Imdb = imdb;
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

  if (await requireAdmin()) {
    libraryNames = loadLibraryNames();
    query.focus();
  }
}
