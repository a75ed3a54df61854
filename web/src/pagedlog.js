// A log too big for the tab: lines are read from the server by number
// (`GET /api/jobs/<id>/lines?from=N`) a page at a time as the view needs them,
// and at most MAX_PAGES pages are kept, so memory stays bounded however long the
// log is. Lines recorded while the page is open arrive through the socket and are
// numbered on from the total the server gave with its snapshot.
//
// PagedLog is the data (pages, the total, live lines); PagedView draws it:
// fixed 20 px rows, only those in view in the DOM, and a scroll range mapped onto
// the lines when the log is taller than a browser can scroll (about 2^24 px).
//
// Line numbers are the server's: every log line the job printed counts, section
// markers too (this view shows no sections), and a line the log cap dropped keeps
// its number (shown as not kept).

import { parseAnsi, segmentsToHtml, plainText } from './ansi.js';
import { formatClock, formatDuration } from './format.js';
import { ROW_HEIGHT, STALL_MS, findRanges, formatStall } from './logview.js';
import { onRowClick, selectByClick } from './rowclick.js';

/** Lines per page read from the server. */
export const PAGE_LINES = 1000;
/** Pages kept at most (the ones around the view are never dropped). */
export const MAX_PAGES = 24;
/** Tallest scroll range used: beyond it, a pixel of scrolling is several rows. */
const MAX_SCROLL_PX = 4_000_000;
const STREAM_CODE = { stdout: 0, stderr: 1, system: 2 };

export class PagedLog {
  /** `fetchLines(from, limit)` resolves to the `/lines` answer. */
  constructor(fetchLines, { total = 0, pageLines = PAGE_LINES, maxPages = MAX_PAGES } = {}) {
    this.fetchLines = fetchLines;
    this.total = total;
    this.pageLines = pageLines;
    this.maxPages = maxPages;
    /** page number -> { lines: [], loaded, loading, used } */
    this.pages = new Map();
    this.onLoad = () => {};
    this.errors = 0;
    this.requests = 0;
  }

  pageOf(n) {
    return Math.floor((n - 1) / this.pageLines);
  }

  /** Line n (1-based): { seq, stream, text, time }, null if not kept, undefined if not read yet. */
  line(n) {
    const page = this.pages.get(this.pageOf(n));
    if (!page) return undefined;
    const entry = page.lines[(n - 1) % this.pageLines];
    if (entry !== undefined) return entry;
    return page.loaded && n <= page.knownTotal ? null : undefined;
  }

  /** Reads the pages holding lines [from, to] that are not here yet; drops the oldest beyond the bound. */
  ensure(from, to) {
    from = Math.max(1, from);
    to = Math.min(this.total, to);
    const now = performance.now();
    const keep = new Set();
    for (let p = this.pageOf(from); from <= to && p <= this.pageOf(to); p++) {
      keep.add(p);
      let page = this.pages.get(p);
      if (!page) {
        page = { lines: [], loaded: false, loading: false, knownTotal: 0, used: now };
        this.pages.set(p, page);
      }
      page.used = now;
      if (!page.loaded && !page.loading) this.load(p, page);
    }
    if (this.pages.size > this.maxPages) {
      const old = [...this.pages.entries()].filter(([p]) => !keep.has(p)).sort((a, b) => a[1].used - b[1].used);
      for (const [p] of old.slice(0, this.pages.size - this.maxPages)) this.pages.delete(p);
    }
  }

  async load(p, page) {
    page.loading = true;
    this.requests += 1;
    try {
      const res = await this.fetchLines(p * this.pageLines + 1, this.pageLines);
      for (const l of res.lines) this.put(page, l.line, l.data);
      page.knownTotal = Math.min(res.totalLines, (p + 1) * this.pageLines);
      page.loaded = true;
    } catch {
      this.errors += 1;
      this.pages.delete(p);
    } finally {
      page.loading = false;
    }
    this.onLoad();
  }

  put(page, n, d) {
    page.lines[(n - 1) % this.pageLines] = { seq: d.seq, stream: STREAM_CODE[d.stream] ?? 0, text: d.message, time: Date.parse(d.timestamp) };
  }

  /** A live `job:log` event: the next line. */
  append(d) {
    this.total += 1;
    const n = this.total;
    const p = this.pageOf(n);
    let page = this.pages.get(p);
    // The tail's page is kept up to date once it is here (or being read).
    if (!page && this.pages.has(p - 1) && n % this.pageLines === 1) {
      page = { lines: [], loaded: true, loading: false, knownTotal: n, used: performance.now() };
      this.pages.set(p, page);
    }
    if (page) {
      this.put(page, n, d);
      page.knownTotal = Math.max(page.knownTotal, n);
    }
  }

  /** Lines held in memory now. */
  get held() {
    let n = 0;
    for (const page of this.pages.values()) n += page.lines.length;
    return n;
  }
}

export class PagedView {
  constructor(log, { onChange } = {}) {
    this.log = log;
    this.onChange = onChange ?? (() => {});
    this.viewport = document.createElement('div');
    this.viewport.className = 'log-viewport paged';
    this.viewport.tabIndex = 0;
    this.viewport.setAttribute('role', 'log');
    this.viewport.setAttribute('aria-label', 'Build log');
    this.spacer = document.createElement('div');
    this.spacer.className = 'log-spacer';
    this.rowsEl = document.createElement('div');
    this.rowsEl.className = 'log-rows';
    this.viewport.append(this.spacer, this.rowsEl);
    this.follow = false;
    this.showTimes = false;
    this.selection = null;
    this.onSelect = null;
    this.query = '';
    this.matches = [];
    this.more = false;
    this.current = -1;
    /** The top of the view in content pixels (rows * ROW_HEIGHT). */
    this.top = 0;
    this.setTop = -1;
    this.frame = 0;
    log.onLoad = () => this.schedule();

    this.viewport.addEventListener(
      'scroll',
      () => {
        const st = this.viewport.scrollTop;
        // Moved by the scroll bar or keys (not by us): take its position.
        if (Math.abs(st - this.setTop) >= 1) {
          this.top = st * this.ratio();
          this.setTop = st;
          if (this.follow && !this.atBottom()) {
            this.follow = false;
            this.onChange();
          }
        }
        this.schedule();
      },
      { passive: true },
    );
    // With a scaled range, the wheel moves by content pixels, as in a short log.
    this.viewport.addEventListener('wheel', (e) => {
      if (this.ratio() <= 1) return;
      e.preventDefault();
      const dy = e.deltaMode === 1 ? e.deltaY * ROW_HEIGHT : e.deltaMode === 2 ? e.deltaY * this.viewport.clientHeight : e.deltaY;
      if (dy < 0 && this.follow) {
        this.follow = false;
        this.onChange();
      }
      this.scrollToPx(this.top + dy);
    });
    // Keys too: the browser's own steps would be scaled like the wheel's.
    this.viewport.addEventListener('keydown', (e) => {
      if (this.ratio() <= 1 || e.ctrlKey || e.metaKey || e.altKey) return;
      const page = (this.viewport.clientHeight || 600) - ROW_HEIGHT;
      const steps = { ArrowDown: 3 * ROW_HEIGHT, ArrowUp: -3 * ROW_HEIGHT, PageDown: page, PageUp: -page, ' ': e.shiftKey ? -page : page };
      if (e.key === 'End') {
        e.preventDefault();
        this.setFollow(true);
        return;
      }
      const dy = e.key === 'Home' ? -Infinity : steps[e.key];
      if (dy === undefined) return;
      e.preventDefault();
      if (dy < 0 && this.follow) {
        this.follow = false;
        this.onChange();
      }
      this.scrollToPx(dy === -Infinity ? 0 : this.top + dy);
    });
    onRowClick(this.rowsEl, (row, e) => {
      if (row.line !== undefined) selectByClick(this, row.line, e);
    });
    if (typeof ResizeObserver !== 'undefined') new ResizeObserver(() => this.schedule()).observe(this.viewport);
  }

  contentHeight() {
    return this.log.total * ROW_HEIGHT;
  }

  /** Content pixels per scroll pixel. */
  ratio() {
    const h = this.viewport.clientHeight || 600;
    const content = this.contentHeight();
    if (content <= MAX_SCROLL_PX) return 1;
    return (content - h) / Math.max(1, MAX_SCROLL_PX - h);
  }

  maxTop() {
    return Math.max(0, this.contentHeight() - (this.viewport.clientHeight || 600));
  }

  scrollToPx(px) {
    this.sizeSpacer();
    this.top = Math.max(0, Math.min(this.maxTop(), px));
    this.viewport.scrollTop = Math.round(this.top / this.ratio());
    // What the browser took (it may round): its scroll event is not the reader's.
    this.setTop = this.viewport.scrollTop;
    this.schedule();
  }

  sizeSpacer() {
    const h = Math.min(this.contentHeight(), MAX_SCROLL_PX);
    if (h !== this.spacerH) {
      this.spacer.style.height = `${h}px`;
      this.spacerH = h;
    }
  }

  atBottom() {
    return this.top >= this.maxTop() - ROW_HEIGHT;
  }

  /** Shows line n (1-based) in the middle of the view. */
  reveal(n) {
    if (!(n >= 1)) return;
    this.follow = false;
    const h = this.viewport.clientHeight || 600;
    this.scrollToPx((n - 1) * ROW_HEIGHT - (h - ROW_HEIGHT) / 2);
    this.render();
    this.onChange();
  }

  setFollow(on) {
    this.follow = on;
    if (on) this.scrollToPx(this.maxTop());
    this.render();
    this.onChange();
  }

  setShowTimes(on) {
    this.showTimes = on;
    this.rowsEl.classList.toggle('with-times', on);
    this.render();
  }

  /** Selects lines by index (line - 1), like LogView. */
  select(from, to = from) {
    this.selection = from === null || from < 0 ? null : [from, to];
    this.selectionAnchor = from;
    this.render();
  }

  /** Server-side matches: line numbers, in order; `more` when the server has more. */
  setMatches(query, lines, more) {
    this.query = query.toLowerCase();
    this.regex = null;
    this.matches = lines;
    this.more = more;
    this.current = -1;
    this.render();
  }

  /** Line numbers to highlight a regex query in (null: plain query). */
  setRegex(re) {
    this.regex = re;
    this.render();
  }

  goToMatch(k) {
    this.current = k;
    this.reveal(this.matches[k]);
  }

  /** Takes in new lines (live), then renders. */
  sync() {
    if (this.follow) this.scrollToPx(this.maxTop());
    this.render();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    const v = this.viewport;
    const log = this.log;
    this.sizeSpacer();
    if (this.top > this.maxTop()) this.top = this.maxTop();
    const h = v.clientHeight || 600;
    const first = Math.floor(this.top / ROW_HEIGHT) + 1;
    const offset = this.top - (first - 1) * ROW_HEIGHT;
    const last = Math.min(log.total, first + Math.ceil(h / ROW_HEIGHT) + 1);
    // Read what is in view and a page either side.
    log.ensure(first - log.pageLines / 2, last + log.pageLines / 2);
    const digits = String(Math.max(log.total, 1)).length;
    this.rowsEl.style.setProperty('--ln-w', `${Math.max(digits, 3) + 1}ch`);
    this.rowsEl.style.transform = `translateY(${v.scrollTop - offset}px)`;
    const current = this.current >= 0 ? this.matches[this.current] : -1;
    let html = '';
    for (let n = first; n <= last; n++) html += this.lineHtml(n, current);
    this.rowsEl.innerHTML = html;
    this.first = first;
    this.last = last;
  }

  lineHtml(n, current) {
    const e = this.log.line(n);
    const sel = this.selection;
    let cls = 'r l';
    if (sel && n - 1 >= sel[0] && n - 1 <= sel[1]) cls += n - 1 === sel[0] ? ' sel sel-first' : ' sel';
    if (!e) {
      const text = e === null ? 'this line was not kept (log cap)' : '…';
      return `<div class="${cls} ${e === null ? 'gone' : 'loading'}" data-i="${n - 1}" data-line="${n}"><span class="g"></span><span class="n">${n}</span><span class="x">${text}</span></div>`;
    }
    if (e.stream === 1) cls += ' err';
    else if (e.stream === 2) cls += ' sys';
    let ranges;
    if (this.query) {
      const plain = plainText(e.text);
      ranges = this.regex ? regexRanges(plain, this.regex) : findRanges(plain.toLowerCase(), this.query);
      if (ranges.length) cls += n === current ? ' m cur' : ' m';
    }
    const prev = this.log.line(n - 1);
    const gap = prev ? e.time - prev.time : 0;
    const stall = gap >= STALL_MS ? `<span class="g" title="${formatDuration(gap)} without output before this line">+${formatStall(gap)}</span>` : '<span class="g"></span>';
    const ts = this.showTimes ? `<span class="t">${formatClock(e.time)}</span>` : '';
    return `<div class="${cls}" data-i="${n - 1}" data-line="${n}">${stall}<span class="n">${n}</span>${ts}<span class="x">${segmentsToHtml(parseAnsi(e.text), ranges)}</span></div>`;
  }
}

/** [from, to) of each match of a global regex in text. */
function regexRanges(text, re) {
  const out = [];
  re.lastIndex = 0;
  for (let m = re.exec(text); m && out.length < 100; m = re.exec(text)) {
    if (m[0].length === 0) {
      re.lastIndex += 1;
      continue;
    }
    out.push([m.index, m.index + m[0].length]);
  }
  return out;
}
