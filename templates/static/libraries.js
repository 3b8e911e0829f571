// The libraries page: each Jellyfin library folder beside the same folder as qBittorrent sees it,
// and the health of the upstreams and the completion watcher. Rules: top of main.js.

import { AuthHandled, apiFetch, errorText, readJson, reportFailure, requireAdmin } from "./api.js";
import { $, el, setFeedback } from "./dom.js";
import { localDateTime } from "./format.js";

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

export async function init() {
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
