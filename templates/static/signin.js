// The sign-in page: Jellyfin's AuthenticateByName, or straight on when a token already works
// (ours, or Jellyfin web's on this origin). Rules: top of main.js.

import { currentToken, forgetToken, keepToken, readJson, send } from "./api.js";
import { $, config, setFeedback } from "./dom.js";

export async function init() {
  $("#signout").hidden = true;
  const form = $("#signin-form");
  const submit = $("#signin-submit");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    setFeedback("Signing in…");
    try {
      const response = await send(config.base + "/Users/AuthenticateByName", {
        token: null,
        method: "POST",
        json: { Username: $("#username").value, Pw: $("#password").value },
      });
      if (response.status === 200) {
        const token = (await readJson(response))?.AccessToken;
        if (typeof token === "string" && token) {
          keepToken(token);
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
    const response = await send(config.api + "/Test1", { token });
    if (response.status === 200) {
      location.assign(config.ui + "/search");
    } else if (response.status === 401) {
      forgetToken(token); // expired; unless a new sign-in replaced it meanwhile
    }
  } catch {
    /* the form is there; its own errors will tell */
  }
}
