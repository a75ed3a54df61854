// The terminal-style log: a virtualized list of fixed-height rows (section headers
// and lines) over a JobLog. Only the rows in view (plus a margin) are in the DOM,
// so 200,000 lines scroll as smoothly as 20.
//
// Rows are kept in `rows`: a line index (>= 0), or -(section index) - 1 for a
// section header. Collapsing a section rebuilds that array; new lines append to it.
// Sections nest (log sections inside a step's): a collapsed section hides its
// lines and the sections inside it. A log section marked collapsed (GitHub groups,
// GitLab `collapsed=true`, Buildkite `---`/`~~~`) stays open while it runs and
// closes when it ends, unless it failed or the reader toggled it.
//
// Lines can be selected, one or a range (`#L12`, `#L12-L20`; shift-click extends),
// and a gutter shows how long the log was silent before a line when that was at
// least STALL_MS.

import { parseAnsi, segmentsToHtml, escapeHtml } from './ansi.js';
import { formatClock, formatDuration } from './format.js';
import { onRowClick, selectByClick } from './rowclick.js';

export const ROW_HEIGHT = 20;
const OVERSCAN = 30;
/** A line that came this long after the one before gets a stall mark. */
export const STALL_MS = 5000;

export class LogView {
  constructor(log, { onChange } = {}) {
    this.onChange = onChange ?? (() => {});
    this.viewport = document.createElement('div');
    this.viewport.className = 'log-viewport';
    this.viewport.tabIndex = 0;
    this.viewport.setAttribute('role', 'log');
    this.viewport.setAttribute('aria-label', 'Build log');
    this.spacer = document.createElement('div');
    this.spacer.className = 'log-spacer';
    this.rowsEl = document.createElement('div');
    this.rowsEl.className = 'log-rows';
    this.empty = document.createElement('div');
    this.empty.className = 'log-empty';
    this.empty.textContent = 'Waiting for output…';
    this.viewport.append(this.spacer, this.rowsEl, this.empty);

    this.follow = true;
    this.showTimes = false;
    /** Selected lines [from, to] (indices), or null. */
    this.selection = null;
    this.onSelect = null;
    this.query = '';
    this.matches = [];
    this.current = -1;
    this.first = -1;
    this.last = -1;
    this.spacerHeight = -1;
    this.frame = 0;
    this.lastTop = 0;
    this.setLog(log);

    this.viewport.addEventListener(
      'scroll',
      () => {
        // Following stops when the view moves up (the user scrolled), not when it
        // merely shrinks or the log grows, and resumes at the bottom.
        const top = this.viewport.scrollTop;
        const follow = this.atBottom() ? true : top < this.lastTop - 1 ? false : this.follow;
        this.lastTop = top;
        if (follow !== this.follow) {
          this.follow = follow;
          this.onChange();
        }
        this.schedule();
      },
      { passive: true },
    );
    // Scrolling up is a clear wish to stop following, even before the scroll lands.
    this.viewport.addEventListener(
      'wheel',
      (e) => {
        if (e.deltaY < 0 && this.follow) {
          this.follow = false;
          this.onChange();
        }
      },
      { passive: true },
    );
    this.viewport.addEventListener('keydown', (e) => {
      if (['PageUp', 'ArrowUp', 'Home'].includes(e.key) && this.follow) {
        this.follow = false;
        this.onChange();
      }
    });
    onRowClick(this.rowsEl, (row, e) => {
      if (row.section !== undefined) this.toggleSection(row.section);
      else selectByClick(this, row.line, e);
    });
    if (typeof ResizeObserver !== 'undefined') {
      new ResizeObserver(() => this.schedule()).observe(this.viewport);
    }
  }

  setLog(log) {
    this.log = log;
    this.resetRows();
  }

  resetRows() {
    this.generation = this.log.generation;
    this.rows = [];
    this.rowsLines = 0;
    this.rowsSecs = 0;
    /** The reader's choices: section -> collapsed. */
    this.override = new Map();
    /** Per section: whether its content is shown (it and every parent open). */
    this.vis = [];
    this.shape = this.log.shape;
    this.matches = [];
    this.matchesUpTo = 0;
    this.current = -1;
    this.dirty = true;
  }

  /** Whether section s is collapsed now. */
  isCollapsed(s) {
    const o = this.override.get(s);
    if (o !== undefined) return o;
    const sec = this.log.sections[s];
    return sec.kind === 'log' && sec.collapsed && sec.end !== null && !sec.failed;
  }

  /** Appends the header of section s (when its parent shows its content). */
  pushHeader(s) {
    const sec = this.log.sections[s];
    const parentShown = sec.parent < 0 || this.vis[sec.parent];
    this.vis[s] = parentShown && !this.isCollapsed(s);
    if (parentShown) this.rows.push(-1 - s);
  }

  /** Appends rows for lines [rowsLines, log.length) and the sections before them. */
  extendRows() {
    const log = this.log;
    const secs = log.sections;
    const n = log.length;
    const rows = this.rows;
    const vis = this.vis;
    for (let i = this.rowsLines; i < n; i++) {
      while (this.rowsSecs < secs.length && secs[this.rowsSecs].first <= i) this.pushHeader(this.rowsSecs++);
      if (vis[log.sec[i]]) rows.push(i);
    }
    this.rowsLines = n;
    while (this.rowsSecs < secs.length) this.pushHeader(this.rowsSecs++);
  }

  /** Takes in what the log gained since the last call, then renders. */
  sync() {
    const log = this.log;
    if (log.generation !== this.generation) {
      const q = this.query;
      this.resetRows();
      this.query = q;
    }
    const n = log.length;
    if (log.shape !== this.shape) {
      // A section ended, failed or was opened: what is collapsed may have changed.
      this.shape = log.shape;
      this.rebuildRows(false);
    } else {
      this.extendRows();
    }
    if (this.query) {
      const before = this.matches.length;
      log.search(this.query, this.matchesUpTo, this.matches);
      if (this.current < 0 && this.matches.length > before) this.current = before;
    }
    this.matchesUpTo = n;
    this.dirty = true;
    this.render();
  }

  /** Rebuilds `rows` (after collapsing or expanding), keeping the view in place. */
  rebuildRows(render = true) {
    const anchorRow = Math.floor(this.viewport.scrollTop / ROW_HEIGHT);
    const anchor = this.rows[anchorRow];
    const log = this.log;
    this.rows = [];
    this.vis = [];
    this.rowsSecs = 0;
    this.rowsLines = 0;
    this.extendRows();
    const rows = this.rows;
    this.dirty = true;
    if (!this.follow && anchor !== undefined) {
      let at = rows.indexOf(anchor);
      // A line now hidden: its innermost shown section's header.
      for (let s = anchor >= 0 ? log.sec[anchor] : -1; at < 0 && s >= 0; s = log.sections[s].parent) at = rows.indexOf(-1 - s);
      if (at >= 0) this.setScrollTop(at * ROW_HEIGHT);
    }
    if (render) this.render();
  }

  toggleSection(s, open) {
    const closed = this.isCollapsed(s);
    const wantOpen = open ?? closed;
    this.override.set(s, !wantOpen);
    if (wantOpen === closed) this.rebuildRows();
  }

  /** Opens section s and every section around it; whether anything changed. */
  openPath(s) {
    let changed = false;
    for (; s >= 0; s = this.log.sections[s].parent) {
      if (this.isCollapsed(s)) changed = true;
      this.override.set(s, false);
    }
    return changed;
  }

  /** Collapses or expands every section, and shows the log from its start. */
  setAllCollapsed(collapse) {
    this.override = new Map(this.log.sections.map((_, s) => [s, collapse]));
    this.follow = false;
    this.rebuildRows();
    this.setScrollTop(0);
    this.lastTop = 0;
    this.onChange();
  }

  setShowTimes(on) {
    this.showTimes = on;
    this.rowsEl.classList.toggle('with-times', on);
    this.dirty = true;
    this.render();
  }

  setFollow(on) {
    this.follow = on;
    this.dirty = true;
    this.render();
    this.onChange();
  }

  atBottom() {
    const v = this.viewport;
    return v.scrollTop + v.clientHeight >= v.scrollHeight - ROW_HEIGHT;
  }

  setScrollTop(top) {
    this.viewport.scrollTop = top;
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  // --- search ---------------------------------------------------------------

  setQuery(q) {
    this.query = q.toLowerCase();
    this.matches = this.query ? this.log.search(this.query) : [];
    this.matchesUpTo = this.log.length;
    this.current = -1;
    if (this.matches.length) {
      // the first match at or after the top of the view
      const top = this.rows[Math.floor(this.viewport.scrollTop / ROW_HEIGHT)] ?? 0;
      const from = top >= 0 ? top : (this.log.sections[-1 - top]?.first ?? 0);
      let k = this.matches.findIndex((i) => i >= from);
      if (k < 0 || this.follow) k = 0;
      this.goToMatch(k);
    }
    this.dirty = true;
    this.render();
    this.onChange();
  }

  step(delta) {
    if (!this.matches.length) return;
    const n = this.matches.length;
    this.goToMatch((((this.current < 0 ? (delta > 0 ? -1 : 0) : this.current) + delta) % n + n) % n);
    this.onChange();
  }

  goToMatch(k) {
    this.current = k;
    this.reveal(this.matches[k]);
  }

  /** Scrolls line i into the middle of the view (opening its section). */
  reveal(i) {
    if (i === undefined || i < 0 || i >= this.log.length) return;
    if (this.openPath(this.log.sec[i])) this.rebuildRows();
    const at = indexOfLine(this.rows, i);
    if (at < 0) return;
    this.follow = false;
    const v = this.viewport;
    this.setScrollTop(Math.max(0, at * ROW_HEIGHT - (v.clientHeight - ROW_HEIGHT) / 2));
    this.dirty = true;
    this.render();
  }

  /** Selects lines from..to (indices; -1 or null: none). */
  select(from, to = from) {
    this.selection = from === null || from < 0 ? null : [from, to];
    this.selectionAnchor = from;
    this.dirty = true;
    this.render();
  }

  /** Opens section s (and around it) and scrolls its header near the top. */
  revealSection(s, lastLine = true) {
    if (this.openPath(s)) this.rebuildRows();
    const sec = this.log.sections[s];
    let i = -1;
    // The section's last line: a failure's output ends there.
    if (lastLine) for (let k = this.log.length - 1; k >= sec.first; k--) if (this.isInside(k, s)) { i = k; break; }
    const header = this.rows.indexOf(-1 - s);
    const at = i >= 0 ? indexOfLine(this.rows, i) : header;
    if (at < 0 || header < 0) return;
    this.follow = false;
    const h = this.viewport.clientHeight || 600;
    // The header and the last line both in view if they fit, else the last line
    // near the bottom.
    const fits = (at + 1 - header) * ROW_HEIGHT <= h - 2 * ROW_HEIGHT;
    this.setScrollTop(Math.max(0, fits ? (header - 1) * ROW_HEIGHT : (at + 3) * ROW_HEIGHT - h));
    this.lastTop = this.viewport.scrollTop;
    this.dirty = true;
    this.render();
    this.onChange();
  }

  /** Whether line i is in section s (or one inside it). */
  isInside(i, s) {
    for (let k = this.log.sec[i]; k >= 0; k = this.log.sections[k].parent) if (k === s) return true;
    return false;
  }

  // --- rendering --------------------------------------------------------------

  render() {
    const v = this.viewport;
    const log = this.log;
    const total = this.rows.length;
    const height = total * ROW_HEIGHT;
    if (height !== this.spacerHeight) {
      this.spacer.style.height = `${height}px`;
      this.spacerHeight = height;
    }
    this.empty.hidden = log.length > 0 || log.finished;
    if (this.follow) {
      const bottom = Math.max(0, height - v.clientHeight);
      if (Math.abs(v.scrollTop - bottom) > 1) this.setScrollTop(bottom);
    }
    const top = v.scrollTop;
    const viewH = v.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(total, Math.ceil((top + viewH) / ROW_HEIGHT) + OVERSCAN);
    if (!this.dirty && first === this.first && last === this.last) return;
    this.first = first;
    this.last = last;
    this.dirty = false;

    const digits = String(Math.max(log.length, 1)).length;
    this.rowsEl.style.setProperty('--ln-w', `${Math.max(digits, 3) + 1}ch`);
    this.rowsEl.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    const current = this.current >= 0 ? this.matches[this.current] : -1;
    const now = Date.now();
    let html = '';
    for (let r = first; r < last; r++) {
      const row = this.rows[r];
      html += row >= 0 ? this.lineHtml(row, current) : this.headerHtml(-1 - row, now);
    }
    this.rowsEl.innerHTML = html;
  }

  lineHtml(i, current) {
    const log = this.log;
    const stream = log.stream[i];
    let cls = stream === 1 ? 'r l err' : stream === 2 ? 'r l sys' : 'r l';
    let ranges;
    if (this.query) {
      ranges = findRanges(log.plain(i).toLowerCase(), this.query);
      if (ranges.length) cls += i === current ? ' m cur' : ' m';
    }
    const sel = this.selection;
    if (sel && i >= sel[0] && i <= sel[1]) cls += i === sel[0] ? ' sel sel-first' : ' sel';
    const ts = this.showTimes ? `<span class="t">${formatClock(log.time[i])}</span>` : '';
    const gap = log.gapBefore(i);
    const stall = gap >= STALL_MS ? `<span class="g" title="${formatDuration(gap)} without output before this line">+${formatStall(gap)}</span>` : '<span class="g"></span>';
    const depth = log.sections[log.sec[i]].depth;
    return `<div class="${cls}" data-i="${i}"${depth ? ` style="--d:${depth}"` : ''}>${stall}<span class="n">${i + 1}</span>${ts}<span class="x">${segmentsToHtml(parseAnsi(log.text[i]), ranges)}</span></div>`;
  }

  headerHtml(s, now) {
    const log = this.log;
    const sec = log.sections[s];
    const running = sec.end === null && !log.finished;
    let cls = sec.kind === 'log' ? `r h sub${sec.dim ? ' dim' : ''}` : 'r h';
    const collapsed = this.isCollapsed(s);
    if (collapsed) cls += ' closed';
    if (sec.failed) cls += ' failed';
    else if (sec.cancelled) cls += ' cancelled';
    else if (running) cls += ' running';
    else cls += ' done';
    const skipped = log.sectionSkipped(s);
    if (skipped) cls += ' skipped';
    const lines = skipped ? 'not in this pipeline' : sec.count === 0 ? 'no output' : sec.count === 1 ? '1 line' : `${sec.count.toLocaleString('en-US')} lines`;
    const phase = sec.phase ? `<span class="ph ph-${sec.phase}">${sec.phase}</span>` : '';
    const depth = sec.depth ? ` style="--d:${sec.depth}"` : '';
    return `<div class="${cls}" data-s="${s}"${depth} title="Click to ${collapsed ? 'expand' : 'collapse'}"><span class="chev"></span><span class="st"></span>${phase}<span class="ti">${escapeHtml(sec.title)}</span><span class="meta">${lines}</span><span class="dur">${skipped ? '' : formatDuration(log.sectionDuration(s, now))}</span></div>`;
  }
}

/** A stall's length for the narrow gutter: 6s, 42s, 3m, 2h. */
export function formatStall(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  return `${Math.floor(s / 3600)}h`;
}

/** [from, to) of each occurrence of needle in hay (both lower case). */
export function findRanges(hay, needle) {
  const out = [];
  if (!needle) return out;
  let at = hay.indexOf(needle);
  while (at >= 0) {
    out.push([at, at + needle.length]);
    at = hay.indexOf(needle, at + needle.length);
  }
  return out;
}

/** Row index of line i: rows hold ascending line indices between headers. */
function indexOfLine(rows, i) {
  let lo = 0;
  let hi = rows.length - 1;
  // Binary search on the lines, stepping over headers (negative values).
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    let m = mid;
    while (m <= hi && rows[m] < 0) m++;
    if (m > hi) {
      hi = mid - 1;
      continue;
    }
    if (rows[m] === i) return m;
    if (rows[m] < i) lo = m + 1;
    else hi = mid - 1;
  }
  return -1;
}
