// How the UI writes sizes, times and progress: binary units as the CLI prints them.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `bytes` with a binary unit: 0 B, 512 B, 1.5 GiB, 64 MiB. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 || Number.isInteger(value) ? 0 : value >= 10 ? 1 : 2;
  return `${Number(value.toFixed(digits))} ${UNITS[unit]}`;
}

const SIZE = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$/i;

/**
 * A size the user typed (`10G`, `512MiB`, `1.5 TiB`, `4096`) in bytes, rounded up to the
 * store's 4 KiB granularity; `null` when it is not a size.
 */
export function parseSize(text: string): number | null {
  const match = SIZE.exec(text);
  if (!match) return null;
  const power = ' kmgtp'.indexOf((match[2] || ' ').toLowerCase());
  const bytes = Number(match[1]) * 1024 ** power;
  if (!Number.isFinite(bytes) || bytes <= 0) return null;
  return Math.ceil(bytes / 4096) * 4096;
}

/** How long ago `iso` was, from `now`: `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`. */
export function formatAgo(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return '—';
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return iso;
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** A time as the user's locale writes it, with seconds. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const time = new Date(iso);
  return Number.isNaN(time.getTime()) ? iso : time.toLocaleString();
}

/** How far a rebuild is, from the manager's `PHASE DONE/TOTAL bytes`: 0 to 1, or null. */
export function rebuildFraction(progress: string | null | undefined): number | null {
  if (!progress) return null;
  const match = /(\d+)\/(\d+) bytes/.exec(progress);
  if (!match) return null;
  const total = Number(match[2]);
  return total === 0 ? 1 : Math.min(1, Number(match[1]) / total);
}

/** How far a fill (restore, clone) is, from `40% (…)`: 0 to 1, or null. */
export function fillFraction(progress: string | null | undefined): number | null {
  const match = progress ? /^(\d+(?:\.\d+)?)%/.exec(progress) : null;
  return match ? Math.min(1, Number(match[1]) / 100) : null;
}

/** `0.42` as `42%`. */
export function formatPercent(fraction: number): string {
  return `${Math.floor(fraction * 100)}%`;
}
