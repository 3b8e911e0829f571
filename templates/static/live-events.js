// Live events: the gateway's GET /torrent/events (Server-Sent Events) followed with fetch, because
// EventSource cannot send the Authorization header (rules: top of main.js).
//
// The stream sends a `snapshot` ({torrents, landings}: every torrent, and the landing of each of the
// gateway's downloads), then `delta`s of torrents and a `landing` event whenever a download's
// landing changes; all of them reach onEvent as they come. It may end with an `error` event
// ({"error": reason, "status": 401 | 403 | ...}) when the caller stopped being an admin: 401 and 403
// get the same answer as from any API call (sign-in, or "Administrators only"), anything else is
// shown and the stream is opened again, as after a lost connection.

import { AuthHandled, apiFetch, errorText, handleRefusal, readJson } from "./api.js";
import { setFeedback } from "./dom.js";
import { readEventStream } from "./sse.js";

const RECONNECT_MS = 2000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The reason and status of an `error` event. */
function refusal(data) {
  const status = Number(data?.status);
  const reason =
    typeof data?.error === "string" && data.error ? data.error : `The gateway ended live updates (HTTP ${data?.status ?? "?"}).`;
  return { status, reason };
}

/**
 * Follows the live events for as long as the page is open: onEvent(type, data) gets every event but
 * `error` with its JSON data parsed (events that are not JSON are skipped), onStatus(text) the state
 * of the connection. Reconnects after a lost or failed stream; returns only once the caller was
 * refused (401: gone to sign-in; 403: "Administrators only" shown).
 */
export async function followLiveEvents({ onEvent, onStatus }) {
  for (;;) {
    let problem = "Live updates lost; reconnecting…";
    try {
      const response = await apiFetch("/events", { accept: "text/event-stream" });
      if (response.ok && response.body) {
        onStatus("Live updates on.");
        for await (const event of readEventStream(response.body)) {
          let data;
          try {
            data = JSON.parse(event.data);
          } catch {
            continue; // not ours to show
          }
          if (event.type !== "error") {
            onEvent(event.type, data);
            continue;
          }
          const { status, reason } = refusal(data);
          onStatus(`Live updates ended: ${reason}`);
          if (status === 401 || status === 403) {
            setFeedback(reason, "error");
            handleRefusal(status);
            return;
          }
          problem = `Live updates failed (${reason}); retrying…`;
          break;
        }
      } else {
        problem = `Live updates failed (${errorText(response, await readJson(response))}); retrying…`;
      }
    } catch (error) {
      if (error instanceof AuthHandled) return;
    }
    onStatus(problem);
    await sleep(RECONNECT_MS);
  }
}
