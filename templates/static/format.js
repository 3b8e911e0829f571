// Formatting of sizes, durations and dates for the admin pages (plain strings: callers show them
// with textContent, see main.js).

const SIZE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function humanSize(bytes) {
  let value = Number(bytes);
  if (!Number.isFinite(value) || value < 0) return "";
  let unit = 0;
  while (value >= 1024 && unit < SIZE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${SIZE_UNITS[unit]}`;
}

export function humanDuration(seconds) {
  const total = Math.floor(Number(seconds));
  if (!Number.isFinite(total) || total < 0 || total >= 8640000) return "∞"; // qBittorrent's "unknown"
  const parts = [
    [Math.floor(total / 86400), "d"],
    [Math.floor((total % 86400) / 3600), "h"],
    [Math.floor((total % 3600) / 60), "m"],
    [total % 60, "s"],
  ];
  const first = parts.findIndex(([amount]) => amount > 0);
  if (first === -1) return "0s";
  return parts
    .slice(first, first + 2)
    .filter(([amount]) => amount > 0)
    .map(([amount, unit]) => `${amount}${unit}`)
    .join(" ");
}

/** A unix time as YYYY-MM-DD (UTC, so every viewer sees the same date apibay shows). */
export function isoDate(unixSeconds) {
  const seconds = Number(unixSeconds);
  if (!unixSeconds || !Number.isFinite(seconds)) return "";
  return new Date(seconds * 1000).toISOString().slice(0, 10);
}

export function localDateTime(unixSeconds) {
  const date = new Date(Number(unixSeconds) * 1000);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}
