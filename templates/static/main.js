// Browser side of the gateway's admin pages (sign-in, search, downloads, libraries): the one script
// every page loads. It wires up the header and starts the module of the page named by data-page.
//
// Rules every module keeps (see the page templates and the CSP the gateway sends):
// - upstream text (torrent names, paths, errors) only ever goes into the page through textContent
//   or element properties, never parsed as HTML (dom.js: el, setText, setFeedback);
// - the Jellyfin token travels only in the Authorization header, never in a URL or a cookie
//   (api.js: send is the only fetch);
// - no inline scripts or styles: behaviour is wired up in these modules (same-origin ES modules,
//   no build step), looks come from classes in app.css.
//
// Modules: storage.js (localStorage), dom.js (page settings, text helpers), format.js (sizes,
// durations, dates), api.js (token, fetch, 401/403, sign-out), live-events.js (GET /events);
// one per page: signin.js, search.js, downloads.js, libraries.js (each exports init()).

import { requireAdmin, signOut } from "./api.js";
import { $, config, setFeedback } from "./dom.js";

const PAGES = {
  signin: () => import("./signin.js"),
  search: () => import("./search.js"),
  downloads: () => import("./downloads.js"),
  libraries: () => import("./libraries.js"),
};

$("#signout").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  if (button.disabled) return;
  button.disabled = true;
  await signOut();
});

async function start() {
  const load = PAGES[config.page];
  if (!load) {
    await requireAdmin();
    return;
  }
  let page;
  try {
    page = await load();
  } catch {
    const loading = $("#loading");
    if (loading) loading.hidden = true;
    setFeedback("Could not load this page's script. Reload the page to try again.", "error");
    return;
  }
  await page.init();
}

start();
