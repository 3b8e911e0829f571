// The page around the scripts: its settings (data-* of <body>) and the only ways text reaches it.
//
// Rule kept here (all rules: top of main.js): upstream text (torrent names, paths, errors) only
// ever goes into the page through textContent or element properties, never parsed as HTML. el(),
// setText() and setFeedback() are how the other modules write text.

export const config = {
  api: document.body.dataset.api ?? "/torrent",
  base: document.body.dataset.base ?? "",
  ui: document.body.dataset.ui ?? "/torrent/ui",
  page: document.body.dataset.page ?? "",
  version: document.body.dataset.version ?? "",
};

export const $ = (selector, root = document) => root.querySelector(selector);

const feedback = $("#feedback");

export function setFeedback(text, kind = "") {
  feedback.className = kind;
  feedback.textContent = text;
}

/** createElement with a class and text; the only way data reaches the page. */
export function el(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null && text !== undefined) node.textContent = String(text);
  return node;
}

export function setText(node, text) {
  // Only touch the DOM when the text changed: live updates then leave screen readers alone.
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** The "Administrators only" section in place of the page (a 403 from the gateway). */
export function showAdminOnly() {
  const main = $("#main");
  if (main) main.hidden = true;
  const loading = $("#loading");
  if (loading) loading.hidden = true;
  $("#admin-only").hidden = false;
}

export function revealMain() {
  const loading = $("#loading");
  if (loading) loading.hidden = true;
  $("#main").hidden = false;
}
