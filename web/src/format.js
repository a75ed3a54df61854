// Formatting helpers: durations, times, ids.

/** 850 ms, 4.2 s, 1m 05s, 1h 02m */
export function formatDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const total = Math.floor(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
  return `${m}m ${String(sec).padStart(2, '0')}s`;
}

const pad2 = (n) => (n < 10 ? '0' : '') + n;

/** HH:MM:SS.mmm in local time. */
export function formatClock(ms) {
  const d = new Date(ms);
  const milli = d.getMilliseconds();
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}`;
}

/** "just now", "5 min ago", "3 h ago", or a date. */
export function formatAgo(ms, now = Date.now()) {
  if (ms == null || !Number.isFinite(ms)) return '–';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 10) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

/** The readable tail of a job id (uuid v7: the random end). */
export function shortId(id) {
  return id.length > 12 ? id.slice(-8) : id;
}
