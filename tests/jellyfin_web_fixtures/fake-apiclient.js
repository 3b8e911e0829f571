// A stand-in for jellyfin-web's window.ApiClient (jellyfin-apiclient's ApiClient, as the bundle
// exposes it): only what the gateway's script uses, answered by the Jellyfin stand-in through the
// gateway (same origin). Signed in as jellyfin-web keeps it: localStorage "jellyfin_credentials",
// {"Servers": [{"AccessToken": …}]}. Like the real one, ApiClient exists before the user is known:
// getCurrentUserId() is null until /Users/Me answered. window.__signInAs(token) signs another user in
// (the app rebuilds its drawer or menu on the "fixture-signedin" event, as a sign-in does).
"use strict";

(function () {
  const server = new URL("..", location.href).href.replace(/\/$/, ""); // <origin><BaseUrl>

  function storedToken() {
    try {
      const servers = JSON.parse(localStorage.getItem("jellyfin_credentials") || "null")?.Servers;
      const token = Array.isArray(servers) ? servers.find((s) => s && s.AccessToken)?.AccessToken : null;
      return typeof token === "string" ? token : null;
    } catch {
      return null;
    }
  }

  let token = storedToken();
  let user = null;

  function authorization() {
    const parts = ['Client="Jellyfin Web"', 'Device="Chrome"', 'DeviceId="fixture"', 'Version="10.11.0"'];
    if (token) parts.push(`Token="${token}"`);
    return "MediaBrowser " + parts.join(", ");
  }

  async function getJSON(path) {
    const response = await fetch(server + path, { headers: { Authorization: authorization(), Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.json();
  }

  window.ApiClient = {
    serverAddress: () => server,
    accessToken: () => token,
    getCurrentUserId: () => (user ? user.Id : null),
    getCurrentUser: () => (user ? Promise.resolve(user) : Promise.reject(new Error("not signed in"))),
    getItem: (userId, itemId) => getJSON(`/Users/${encodeURIComponent(userId)}/Items/${encodeURIComponent(itemId)}`),
  };

  // What the fixture's "app" waits for: the signed-in user, or null (no token, or refused).
  window.__signedIn = token
    ? getJSON("/Users/Me").then(
        (me) => {
          user = me;
          return me;
        },
        () => null,
      )
    : Promise.resolve(null);

  window.__signInAs = async (newToken) => {
    user = null;
    token = newToken;
    user = await getJSON("/Users/Me");
    document.dispatchEvent(new CustomEvent("fixture-signedin", { detail: user }));
  };
})();
