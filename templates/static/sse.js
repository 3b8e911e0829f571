// Server-Sent Events read from a fetch() body: EventSource cannot send the Authorization header.
// A module of its own, without imports, so that jellyfin-web.js (inside Jellyfin's page) can load it.

/** The events of a text/event-stream body as {type, data} (the SSE rules: "field: value" lines, a
 * blank line dispatches, ":" comments and unknown fields ignored). Leaving the loop early cancels
 * the body. */
export async function* readEventStream(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let type = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      // A lone "\r" at the end may be the first half of "\r\n": wait for the next chunk.
      const pattern = /\r\n|\r(?!$)|\n/g;
      let start = 0;
      let match;
      while ((match = pattern.exec(buffer)) !== null) {
        const text = buffer.slice(start, match.index);
        start = pattern.lastIndex;
        if (text === "") {
          if (data.length) yield { type: type || "message", data: data.join("\n") };
          type = "";
          data = [];
          continue;
        }
        if (text.startsWith(":")) continue;
        const colon = text.indexOf(":");
        const field = colon === -1 ? text : text.slice(0, colon);
        let fieldValue = colon === -1 ? "" : text.slice(colon + 1);
        if (fieldValue.startsWith(" ")) fieldValue = fieldValue.slice(1);
        if (field === "event") type = fieldValue;
        else if (field === "data") data.push(fieldValue);
        // "id" and "retry" are not needed: every reconnect starts from a fresh snapshot.
      }
      buffer = buffer.slice(start);
      if (done) return;
    }
  } finally {
    reader.cancel().catch(() => {}); // already closed or failed: nothing left to cancel
  }
}
