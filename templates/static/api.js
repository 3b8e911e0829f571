// The API client of the admin pages: the Jellyfin token, the one fetch every call goes through, and
// the one answer to a 401 or 403.
//
// Rule kept here (all rules: top of main.js): the Jellyfin token travels only in the Authorization
// header, never in a URL or a cookie. send() is the only caller of fetch(); it never sends cookies.

import { $, config, revealMain, setFeedback, showAdminOnly } from "./dom.js";
import { KEYS, storageGet, storageRemove, storageSet } from "./storage.js";

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

/** The token the pages use: the one our sign-in form got, else Jellyfin web's (unless signed out here). */
export function currentToken() {
  const own = storageGet(KEYS.token);
  if (own) return own;
  if (storageGet(KEYS.signedOut) === "1") return null; // the user signed out here: do not reuse
  return jellyfinWebToken();
}

function goToSignin() {
  location.assign(config.ui + "/signin");
}

// ---------------------------------------------------------------------------------------------
// Calls

/** fetch with the MediaBrowser Authorization header (`token`, or none when null), no cookies and no
 * cache. Every request of the pages, to the gateway's API or to Jellyfin, goes through here. */
export function send(url, { token = currentToken(), method = "GET", json, accept = "application/json", signal } = {}) {
  const headers = { Authorization: authorizationHeader(token), Accept: accept };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  return fetch(url, {
    method,
    headers,
    body,
    signal,
    cache: "no-store",
    credentials: "omit", // the token is the only credential; never send cookies
  });
}

/** Thrown after a 401/403 was handled (redirect or "Administrators only"); callers just stop. */
export class AuthHandled extends Error {}

/** The one answer to a refusal by the gateway: 401 forgets our token and goes to sign-in, 403 shows
 * "Administrators only". Returns whether `status` was one of them. */
export function handleRefusal(status) {
  if (status === 401) {
    storageRemove(KEYS.token);
    goToSignin();
    return true;
  }
  if (status === 403) {
    showAdminOnly();
    return true;
  }
  return false;
}

/** A call to the gateway's /torrent API (`path` below it); 401 and 403 are handled here and throw
 * AuthHandled. */
export async function apiFetch(path, options = {}) {
  const response = await send(config.api + path, options);
  if (handleRefusal(response.status)) throw new AuthHandled(String(response.status));
  return response;
}

export async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** The reason in an error body ({"error"} or {"message"}), else the HTTP status. */
export function errorText(response, data) {
  if (data && typeof data === "object") {
    if (typeof data.error === "string" && data.error) return data.error;
    if (typeof data.message === "string" && data.message) return data.message;
  }
  return `The gateway answered HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}.`;
}

/** Report a failed call in #feedback; auth failures were already handled, aborts are silent. */
export function reportFailure(error) {
  if (error instanceof AuthHandled || error?.name === "AbortError") return;
  setFeedback("Could not reach the gateway. Check the connection and try again.", "error");
}

/** Pages other than sign-in: a usable admin token, or leave (401) / explain (403). */
export async function requireAdmin() {
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
// Sign-out

const LOGOUT_TIMEOUT_MS = 5000;

/** Ends the Jellyfin session behind `token` (POST /Sessions/Logout, the token in the header as
 * always). Best effort: unreachable, slow or already expired all end quietly, as the token is
 * forgotten here either way. */
async function endJellyfinSession(token) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), LOGOUT_TIMEOUT_MS);
  try {
    await send(config.base + "/Sessions/Logout", { token, method: "POST", signal: controller.signal });
  } catch {
    /* not revoked; Jellyfin expires it in time, and this browser no longer has it */
  } finally {
    clearTimeout(timer);
  }
}

/** Forgets the token here, ends the Jellyfin session only if our own form started it, and goes to
 * the sign-in page. */
export async function signOut() {
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
}

/** After a sign-in through our form: the pages use `token` from now on. */
export function keepToken(token) {
  storageSet(KEYS.token, token);
  storageRemove(KEYS.signedOut);
}

/** Forgets `token` if it is still ours (a newer sign-in may have replaced it meanwhile). */
export function forgetToken(token) {
  if (storageGet(KEYS.token) === token) storageRemove(KEYS.token);
}
