// Storage of the admin pages: the keys they use and the only code that touches localStorage.
// (The rules every module keeps are at the top of main.js.)
//
// localStorage can throw (disabled storage, some private modes); the pages then keep working for
// the current page view instead of failing with a console error.

export const KEYS = {
  deviceId: "jellyfin-gateway.device-id",
  token: "jellyfin-gateway.token",
  signedOut: "jellyfin-gateway.signed-out",
  jellyfinWeb: "jellyfin_credentials", // Jellyfin's own web client; read, never written
};

const memoryStore = new Map();

export function storageGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return memoryStore.get(key) ?? null;
  }
}

export function storageSet(key, value) {
  memoryStore.set(key, value);
  try {
    localStorage.setItem(key, value);
  } catch {
    /* kept in memory only */
  }
}

export function storageRemove(key) {
  memoryStore.delete(key);
  try {
    localStorage.removeItem(key);
  } catch {
    /* nothing stored */
  }
}
