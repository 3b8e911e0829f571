// The downloads page: qBittorrent's torrents, kept current by the live events, with pause, resume
// and delete. Rules: top of main.js.

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

export async function init() {
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

  function onEvent(type, data) {
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
