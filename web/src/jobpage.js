// The build page: status, progress, phase steps, and the live log.
//
// Events are received into the JobFeed as they arrive (duplicates dropped by seq)
// and applied to the model and the view once per animation frame. On every
// (re)connect the page subscribes again with `since` = the last seq it saw.

import { api, download } from './api.js';
import { h, badge, setBadge, progressBar, setProgress } from './dom.js';
import { formatDuration, shortId } from './format.js';
import { PHASES, FINISHED } from './logmodel.js';
import { LogView } from './logview.js';
import { PagedLog, PagedView } from './pagedlog.js';

const TIMES_KEY = 'buildcast.showTimes';
/** Events applied per animation frame at most. */
const DRAIN_PER_FRAME = 20000;
/** When to read the history through REST instead of the socket (tests tune these). */
export const tuning = {
  /** Catch up through REST when at least this many events behind. */
  catchUpMin: 2000,
  /** Events per REST page. */
  catchUpPage: 10000,
  /** Catch up through REST when events arrive this much later than they did at first. */
  lagLimitMs: 3000,
  /** At most one such catch-up in this time. */
  resyncCooldownMs: 5000,
  /** Subscribe with `batch: true`: log lines as `job:logs` runs. */
  batchLogs: true,
  /** How often the page asks how many clients watch the job. */
  watchersMs: 5000,
  /**
   * A log this big is not held by the tab: a job with at least this many events
   * when the page opens, or a log that grows to this many lines while watched, is
   * read from the server by line number as the view needs it (pagedlog.js).
   */
  pagedMin: 300000,
  /** Matches one server-side search asks for. */
  searchLimit: 200,
};

/** #L12 or #L12-L20 as line indices { from, to }, or null. */
export function parsePermalink(hash) {
  const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash ?? '');
  if (!m) return null;
  let a = Number(m[1]);
  let b = Number(m[2] ?? m[1]);
  if (b < a) [a, b] = [b, a];
  if (a < 1) return null;
  return { from: a - 1, to: b - 1 };
}

export class JobPage {
  constructor(app, jobId) {
    this.app = app;
    this.conn = app.conn;
    this.jobId = jobId;
    this.feed = app.feedFor(jobId);
    this.meta = this.feed.snapshot;
    this.frame = 0;
    this.timer = 0;
    this.subscription = 0;
    this.lagCheck = false;
    this.minLag = Infinity;
    this.lastResync = 0;
    this.stats = { catchUps: 0, restEvents: 0, resyncs: 0 };
    this.disposers = [];
    this.view = new LogView(this.feed.log, { onChange: () => this.updateToolbar() });
    this.view.onSelect = (sel) => this.setPermalink(sel);
    this.el = this.build();
    this.view.setShowTimes(localStorage.getItem(TIMES_KEY) === '1');
    this.timesToggle.checked = this.view.showTimes;

    this.disposers.push(
      this.conn.routeJob(jobId, (name, d) => {
        if (this.feed.receive(name, d)) this.schedule();
        // Duplicates count too: a socket that still delivers old events is behind.
        if (this.lagCheck) this.checkLag(d);
      }),
    );
    // One request for the job's state: the header and the first catch-up share it.
    this.metaLoad = this.loadMeta();
    this.disposers.push(this.conn.onConnect(() => this.subscribe()));
    this.disposers.push(app.onMe(() => this.updateHeader()));
    this.fallback = setTimeout(() => this.loadWithoutSocket(), 3000);
    this.ticker = setInterval(() => this.tick(), 1000);
    this.watchTimer = setTimeout(() => this.pollWatchers(), tuning.watchersMs);
    this.onKey = (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key === 'f') {
        e.preventDefault();
        this.searchInput.focus();
        this.searchInput.select();
      }
    };
    document.addEventListener('keydown', this.onKey);
    this.wanted = parsePermalink(location.hash);
    this.flush();
  }

  destroy() {
    this.destroyed = true;
    clearInterval(this.ticker);
    clearTimeout(this.fallback);
    clearTimeout(this.watchTimer);
    cancelAnimationFrame(this.frame);
    clearTimeout(this.timer);
    document.removeEventListener('keydown', this.onKey);
    this.searchAbort?.abort();
    // A paged log's feed holds no lines: the next visit starts afresh.
    if (this.paged && this.app.feed === this.feed) this.app.feed = null;
    for (const d of this.disposers) d();
    this.conn.emit('unsubscribe:job', this.jobId);
  }

  // --- data -------------------------------------------------------------------

  /**
   * Follows the job from the last event seen: first through REST pages when far
   * behind (a page of 10,000 events is one request, where the socket would send
   * 10,000 messages), then `subscribe:job { since, epoch }`, which replays the
   * rest and goes live. Called on every (re)connect.
   */
  async subscribe({ behind = false } = {}) {
    const mine = ++this.subscription;
    this.lagCheck = false;
    this.feed.abandon();
    this.replaying = true;
    this.updateHeader();
    await this.catchUp(mine, behind ? 1 : tuning.catchUpMin);
    if (this.destroyed || this.notFound || mine !== this.subscription || !this.conn.socket.connected) return;
    // Events of this subscription (replayed, then live) are watched for lag.
    this.minLag = Infinity;
    this.lagCheck = true;
    const req = this.feed.subscribeRequest({ batch: tuning.batchLogs });
    const ack = await this.conn.request('subscribe:job', req);
    if (this.destroyed || mine !== this.subscription) return;
    this.replaying = false;
    const result = this.feed.acknowledge(ack);
    if (result.error) {
      if (result.error !== 'not connected') this.showNotice(`Cannot follow this build: ${result.error}`, 'error');
      return;
    }
    if (ack.job) this.meta = ack.job;
    if (result.rebuilt) {
      if (this.paged) await this.enterPaged();
      else this.showNotice(`The log was reloaded from the start: ${result.reason ?? 'history changed'}`, 'info');
    }
    this.schedule();
    this.pollWatchers();
  }

  /** Asks how many clients follow this job (`watchers:job`), now and every few seconds. */
  async pollWatchers() {
    clearTimeout(this.watchTimer);
    if (this.destroyed || this.notFound) return;
    if (this.conn.socket.connected && !this.replaying) {
      const ack = await this.conn.request('watchers:job', this.jobId);
      if (this.destroyed) return;
      if (ack?.ok && Number.isFinite(ack.watchers)) {
        this.watchers = ack.watchers;
        this.updateHeader();
      }
    }
    clearTimeout(this.watchTimer);
    this.watchTimer = setTimeout(() => this.pollWatchers(), tuning.watchersMs);
  }

  /** Reads the history through REST when at least `min` events behind. */
  async catchUp(mine, min) {
    const feed = this.feed;
    const base = `/api/jobs/${encodeURIComponent(this.jobId)}`;
    try {
      const first = this.metaLoad;
      this.metaLoad = null;
      const view = await (first ?? this.loadMeta());
      if (this.destroyed || !view || mine !== this.subscription) return;
      if (this.paged ? view.epoch !== feed.epoch : view.lastSeq >= tuning.pagedMin) {
        // Too big for the tab (or its history changed while paged): read by line.
        await this.enterPaged();
        return;
      }
      if (this.paged) return;
      if (feed.epoch && view.epoch !== feed.epoch) {
        // The server's history of this job is not the one this page holds.
        feed.abandon();
        feed.restart();
        feed.epoch = view.epoch;
        this.showNotice('The log was reloaded from the start: the server has a new history of this job.', 'info');
      }
      if (view.lastSeq - feed.lastSeq < min) return;
      this.stats.catchUps += 1;
      for (;;) {
        const since = feed.lastSeq;
        const page = await api(`${base}/events?since=${since}&limit=${tuning.catchUpPage}`);
        if (this.destroyed || mine !== this.subscription || this.paged) return;
        if (feed.epoch && page.epoch !== feed.epoch) {
          feed.restart();
          feed.epoch = page.epoch;
          continue;
        }
        feed.epoch = page.epoch;
        for (const e of page.events) feed.receive(e.event, e.data);
        this.stats.restEvents += page.events.length;
        this.schedule();
        if (!page.events.length || page.nextSince >= page.lastSeq || page.lastSeq - feed.lastSeq < min / 2) return;
        await new Promise((r) => requestAnimationFrame(r));
      }
    } catch {
      // the socket replays whatever REST could not give
    }
  }

  /**
   * An event of the current subscription: when events arrive later and later
   * after they were recorded, the socket is falling behind (it carries one message
   * per line): stop it, catch up through REST, and subscribe again from there.
   */
  checkLag(d) {
    const lag = Date.now() - Date.parse(d.timestamp);
    if (!(lag >= this.minLag)) this.minLag = lag; // clock skew plus transit, at best
    if (lag - this.minLag > tuning.lagLimitMs && Date.now() - this.lastResync > tuning.resyncCooldownMs && !this.feed.log.finished) {
      this.lastResync = Date.now();
      this.stats.resyncs += 1;
      this.conn.emit('unsubscribe:job', this.jobId);
      this.subscribe({ behind: true });
    }
  }

  /**
   * From now on the log is read from the server by line number, a page at a
   * time, and only the pages around the view are kept (a log too big for the
   * tab). Takes the server's snapshot (last line number and seq, together); live
   * events after that seq continue it.
   */
  async enterPaged() {
    const base = `/api/jobs/${encodeURIComponent(this.jobId)}`;
    let snap;
    try {
      snap = await api(`${base}/lines?limit=1`);
    } catch (e) {
      this.showNotice(`Cannot read this log: ${e.message}`, 'error');
      return;
    }
    if (this.destroyed) return;
    const feed = this.feed;
    feed.abandon();
    feed.queue.length = 0;
    feed.resetQueued = false;
    feed.lastSeq = Math.max(feed.lastSeq, snap.lastSeq);
    feed.epoch = snap.epoch;
    const fetchLines = (from, limit) => api(`${base}/lines?from=${from}&limit=${limit}`);
    if (!this.paged) {
      this.paged = new PagedLog(fetchLines, { total: snap.totalLines });
      this.pview = new PagedView(this.paged, { onChange: () => this.updateToolbar() });
      this.pview.onSelect = (sel) => this.setPermalink(sel);
      this.pview.setShowTimes(this.view.showTimes);
      this.view.viewport.replaceWith(this.pview.viewport);
      this.el.classList.add('paged');
      for (const el of this.memoryOnly) el.hidden = true;
      for (const el of this.pagedOnly) el.hidden = false;
      // Lines already searched for in memory are searched again on the server.
      if (this.searchInput.value) this.serverSearch(this.searchInput.value);
    } else {
      this.paged.total = snap.totalLines;
      this.paged.pages.clear();
    }
    feed.log.toPaged((d) => this.paged.append(d));
    const log = feed.log;
    const meta = this.meta;
    if (!log.status && meta) {
      // No event before the snapshot is replayed: the job's state is the server's.
      Object.assign(log, { status: meta.status, phase: meta.phase, progress: meta.progress, message: meta.message });
      if (FINISHED.has(meta.status)) log.finishedAt = Date.parse(meta.finishedAt);
    }
    this.view.resetRows();
    if (!this.wanted) this.pview.setFollow(!feed.log.finished || this.view.follow);
    this.schedule();
  }

  /**
   * Searches the whole log on the server (a paged log). The first match below the
   * view is asked for first and shown at once (a scan from the view on); then the
   * list of every match (a scan of the whole log) gives the count and the steps.
   */
  async serverSearch(q) {
    const mine = ++this.searchSeq;
    this.searchAbort?.abort();
    this.searchError = null;
    this.searchQuery = null;
    const pv = this.pview;
    if (!q) {
      pv.setMatches('', [], false);
      this.searching = false;
      this.updateToolbar();
      return;
    }
    const regex = this.regexToggle.checked;
    const ctrl = new AbortController();
    this.searchAbort = ctrl;
    this.searching = true;
    this.updateToolbar();
    const stale = () => mine !== this.searchSeq || this.destroyed;
    const highlight = () => {
      if (!regex) return;
      try {
        pv.setRegex(new RegExp(q, 'g'));
      } catch {
        // JavaScript reads this regex otherwise: the matching lines are still listed
      }
    };
    try {
      const top = Math.max(1, pv.first ?? 1);
      let shown = null;
      if (top > 1) {
        const near = await this.searchFrom(q, regex, top, ctrl.signal, 1);
        if (stale()) return;
        if (near.matches.length) {
          shown = near.matches[0].line;
          pv.setMatches(q, [shown], true);
          highlight();
          pv.goToMatch(0);
          this.updateToolbar();
        }
      }
      const res = await this.searchFrom(q, regex, 1, ctrl.signal);
      if (stale()) return;
      pv.setMatches(q, res.matches.map((m) => m.line), res.more);
      highlight();
      this.searchQuery = { q, regex };
      if (shown !== null) {
        // Stay on the match shown; the list may end before it (then no position).
        pv.current = pv.matches.indexOf(shown);
        pv.render();
      } else if (pv.matches.length) {
        pv.goToMatch(0);
      }
    } catch (e) {
      if (stale() || e.name === 'AbortError') return;
      pv.setMatches('', [], false);
      this.searchError = e.message;
    } finally {
      if (mine === this.searchSeq) this.searching = false;
    }
    this.updateToolbar();
  }

  searchFrom(q, regex, from, signal, limit = tuning.searchLimit) {
    const base = `/api/jobs/${encodeURIComponent(this.jobId)}/search`;
    return api(`${base}?q=${encodeURIComponent(q)}&limit=${limit}&from=${from}${regex ? '&regex=true' : ''}`, { signal });
  }

  /** Next or previous server-side match; reads more matches past the last one. */
  async pagedStep(delta) {
    const pv = this.pview;
    const n = pv.matches.length;
    if (!n) return;
    let k = pv.current + delta;
    if (pv.current < 0) {
      // No position (a match shown before the list came): from the view on.
      const after = pv.matches.findIndex((m) => m >= (pv.first ?? 1));
      k = (after < 0 ? n : after) - (delta > 0 ? 0 : 1);
    }
    if (k >= n && pv.more && this.searchQuery) {
      const mine = this.searchSeq;
      const { q, regex } = this.searchQuery;
      try {
        const res = await this.searchFrom(q, regex, pv.matches[n - 1] + 1);
        if (mine !== this.searchSeq || this.destroyed) return;
        pv.matches.push(...res.matches.map((m) => m.line));
        pv.more = res.more;
      } catch (e) {
        this.searchError = e.message;
      }
    }
    const total = pv.matches.length;
    pv.goToMatch(((k % total) + total) % total);
    this.updateToolbar();
  }

  /** The go-to-line box: selects line n and shows it (its permalink in the address). */
  goToLine(n) {
    if (!Number.isInteger(n) || n < 1) return;
    if (this.paged) {
      n = Math.min(n, this.paged.total);
      this.pview.select(n - 1);
      this.pview.reveal(n);
      this.setPermalink([n - 1, n - 1]);
      return;
    }
    const log = this.feed.log;
    n = Math.min(n, log.length);
    if (n < 1) return;
    this.view.select(n - 1);
    this.view.reveal(n - 1);
    this.setPermalink([n - 1, n - 1]);
  }

  /**
   * Without a socket (no connection within a few seconds, or none at all), the
   * recorded log is still shown, read through REST once.
   */
  async loadWithoutSocket() {
    if (this.destroyed || this.notFound || this.conn.socket.connected || this.paged) return;
    if ((this.meta?.lastSeq ?? 0) >= tuning.pagedMin) {
      await this.enterPaged();
      return;
    }
    const feed = this.feed;
    const base = `/api/jobs/${encodeURIComponent(this.jobId)}/events`;
    try {
      for (;;) {
        const page = await api(`${base}?since=${feed.lastSeq}&limit=${tuning.catchUpPage}`);
        if (this.destroyed || this.conn.socket.connected || (feed.epoch && page.epoch !== feed.epoch)) return;
        feed.epoch = page.epoch;
        for (const e of page.events) feed.receive(e.event, e.data);
        this.schedule();
        if (!page.events.length || page.nextSince >= page.lastSeq) return;
      }
    } catch {
      // shown by the header (not found, authentication)
    }
  }

  /** The job's state (GET /api/jobs/<id>), or null when it could not be read. */
  async loadMeta() {
    try {
      const view = await api(`/api/jobs/${encodeURIComponent(this.jobId)}`);
      if (this.destroyed) return null;
      this.meta = view;
      this.updateHeader();
      return view;
    } catch (e) {
      if (this.destroyed) return null;
      if (e.status === 404 || e.status === 400) {
        this.showNotFound(e.status === 400 ? e.message : null);
      } else if (e.status !== 401) {
        this.showNotice(`Cannot load this build: ${e.message}`, 'error');
        this.updateHeader();
      }
      return null;
    }
  }

  /** The one state of a job that does not exist (or that this token cannot see). */
  showNotFound(detail) {
    this.notFound = true;
    clearTimeout(this.fallback);
    this.el.classList.add('not-found');
    this.notFoundCard.hidden = false;
    if (detail) this.notFoundCard.querySelector('.detail').textContent = detail;
    this.crumbProject.textContent = 'Not found';
    this.crumbId.textContent = this.jobId;
    document.title = 'Build not found · buildcast';
  }

  /** The selection as the URL's #L12 or #L12-L20 (a reload selects it again). */
  setPermalink(sel) {
    const hash = !sel ? '' : sel[0] === sel[1] ? `#L${sel[0] + 1}` : `#L${sel[0] + 1}-L${sel[1] + 1}`;
    this.wanted = null;
    history.replaceState(history.state, '', location.pathname + location.search + hash);
    this.updateToolbar();
  }

  /** The address's #L… changed (typed, or the back button). */
  onHash() {
    this.wanted = parsePermalink(location.hash);
    if (!this.wanted) (this.pview ?? this.view).select(null);
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => this.flush());
    // Hidden tabs get no animation frames: do not let the queue grow for ever.
    this.timer = setTimeout(() => this.flush(), 500);
  }

  flush() {
    cancelAnimationFrame(this.frame);
    clearTimeout(this.timer);
    this.frame = 0;
    this.timer = 0;
    if (this.destroyed) return;
    // A big batch (a page of history) is spread over a few frames.
    const { more } = this.feed.drain(DRAIN_PER_FRAME);
    const log = this.feed.log;
    const wanted = this.wanted;
    if (this.paged) {
      this.pview.sync();
      if (more) this.schedule();
      if (wanted && this.paged.total > wanted.to) {
        this.wanted = null;
        this.pview.select(wanted.from, wanted.to);
        this.pview.reveal(wanted.from + 1);
      } else if (wanted && log.finished && !more) {
        this.wanted = null;
        this.showNotice(`This log has ${this.paged.total.toLocaleString('en-US')} lines: line ${(wanted.to + 1).toLocaleString('en-US')} of the link is not in it.`, 'info');
      }
      this.updateHeader();
      this.updateToolbar();
      return;
    }
    this.view.sync();
    if (more) this.schedule();
    if (!this.switching && log.length >= tuning.pagedMin) {
      // The log outgrew the tab while it was watched.
      this.switching = true;
      this.enterPaged().finally(() => {
        this.switching = false;
      });
    }
    if (wanted && log.length > wanted.to) {
      // A permalink: selected once its last line has arrived.
      this.wanted = null;
      this.linked = true;
      this.view.select(wanted.from, wanted.to);
      this.view.reveal(wanted.from);
    } else if (wanted && log.finished && !more && !this.feed.queue.length) {
      this.wanted = null;
      this.showNotice(`This log has ${log.length.toLocaleString('en-US')} lines: line ${(wanted.to + 1).toLocaleString('en-US')} of the link is not in it.`, 'info');
    }
    if (!more && !this.failureShown && !this.wanted && !this.linked && log.finished && log.failedSection >= 0) {
      // A failed build opens the section where it failed and shows it.
      this.failureShown = true;
      this.view.revealSection(log.failedSection);
    }
    this.updateHeader();
    this.updateToolbar();
  }

  tick() {
    if (!this.feed.log.finished && !this.paged) {
      this.view.dirty = true;
      this.view.render();
    }
    this.updateHeader();
  }

  // --- DOM --------------------------------------------------------------------

  build() {
    const id = this.jobId;
    const base = `/api/jobs/${encodeURIComponent(id)}`;
    this.title = h('h1', {}, h('span', { class: 'pipeline-name' }, 'Build'), ' ', h('code', { class: 'job-id', title: id }, `#${shortId(id)}`));
    this.badge = badge(null);
    this.cancelButton = h('button', { class: 'btn danger', id: 'cancel-button', onclick: () => this.cancel() }, 'Cancel build');
    this.rerunButton = h('button', { class: 'btn', id: 'rerun-button', hidden: true, onclick: () => this.rerun() }, 'Re-run');
    this.notFoundCard = h(
      'section',
      { class: 'card not-found-card', id: 'not-found', hidden: true, role: 'alert' },
      h('h1', {}, 'Build not found'),
      h('p', {}, 'No build with the id ', h('code', { class: 'full-id' }, id), ' exists on this server, or your access token cannot see it.'),
      h('p', { class: 'hint detail' }),
      h('a', { href: '/', 'data-nav': '', class: 'btn' }, '← All builds'),
    );
    this.rawLink = h(
      'a',
      {
        class: 'btn',
        id: 'raw-log',
        href: `${base}/log`,
        download: `${id}.log`,
        onclick: (e) => {
          e.preventDefault();
          download(`${base}/log`, `${id}.log`).catch((err) => this.showNotice(`Download failed: ${err.message}`, 'error'));
        },
      },
      'Download raw log',
    );
    this.metaLine = h('div', { class: 'meta-line' });
    this.bar = progressBar();
    this.bar.id = 'job-progress';
    this.pct = h('span', { class: 'pct', id: 'job-progress-text' });
    this.message = h('span', { class: 'progress-message' });
    this.steps = new Map();
    const stepList = h(
      'ol',
      { class: 'phases', id: 'phases' },
      ...PHASES.map((p) => {
        const dur = h('span', { class: 'phase-dur' });
        const li = h('li', { class: 'phase pending', dataset: { phase: p } }, h('span', { class: 'phase-dot' }), h('span', { class: 'phase-name' }, p), dur);
        this.steps.set(p, { li, dur });
        return li;
      }),
    );
    this.errorBanner = h('div', { class: 'banner error', id: 'job-error', role: 'alert', hidden: true });
    this.notice = h('div', { class: 'banner', id: 'job-notice', hidden: true });
    this.artifacts = h('div', { class: 'artifacts', id: 'artifacts', hidden: true });

    // log toolbar
    this.searchInput = h('input', { type: 'search', id: 'log-search', placeholder: 'Search log', autocomplete: 'off', spellcheck: 'false', 'aria-label': 'Search the log' });
    let debounce = 0;
    this.searchSeq = 0;
    this.searchInput.addEventListener('input', () => {
      clearTimeout(debounce);
      if (this.paged) debounce = setTimeout(() => this.serverSearch(this.searchInput.value), 400);
      else debounce = setTimeout(() => this.view.setQuery(this.searchInput.value), 120);
    });
    this.searchInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        clearTimeout(debounce);
        if (this.paged) {
          const q = this.searchInput.value;
          const same = this.searchQuery && this.searchQuery.q === q && this.searchQuery.regex === this.regexToggle.checked && !this.searching;
          if (same) this.pagedStep(e.shiftKey ? -1 : 1);
          else this.serverSearch(q);
        } else if (this.view.query !== this.searchInput.value.toLowerCase()) this.view.setQuery(this.searchInput.value);
        else this.view.step(e.shiftKey ? -1 : 1);
      } else if (e.key === 'Escape') {
        this.searchInput.value = '';
        if (this.paged) this.serverSearch('');
        else this.view.setQuery('');
      }
    });
    this.regexToggle = h('input', { type: 'checkbox', id: 'search-regex' });
    this.regexToggle.addEventListener('change', () => {
      if (this.searchInput.value) this.serverSearch(this.searchInput.value);
    });
    this.gotoInput = h('input', { type: 'text', id: 'goto-line', inputmode: 'numeric', placeholder: 'Go to line', autocomplete: 'off', 'aria-label': 'Go to line' });
    this.gotoInput.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter') return;
      e.preventDefault();
      this.goToLine(Number(this.gotoInput.value.replace(/[^0-9]/g, '')));
    });
    this.matchCount = h('span', { class: 'match-count', id: 'match-count' });
    const step = (d) => (this.paged ? this.pagedStep(d) : this.view.step(d));
    this.prevButton = h('button', { class: 'icon-btn', id: 'search-prev', title: 'Previous match (Shift+Enter)', 'aria-label': 'Previous match', onclick: () => step(-1) }, '↑');
    this.nextButton = h('button', { class: 'icon-btn', id: 'search-next', title: 'Next match (Enter)', 'aria-label': 'Next match', onclick: () => step(1) }, '↓');
    this.timesToggle = h('input', { type: 'checkbox', id: 'toggle-times' });
    this.timesToggle.addEventListener('change', () => {
      this.view.setShowTimes(this.timesToggle.checked);
      this.pview?.setShowTimes(this.timesToggle.checked);
      localStorage.setItem(TIMES_KEY, this.timesToggle.checked ? '1' : '0');
    });
    this.lineCount = h('span', { class: 'line-count', id: 'line-count' });
    const logView = () => this.pview ?? this.view;
    this.followButton = h('button', { class: 'btn small', id: 'follow-button', onclick: () => logView().setFollow(!logView().follow) });
    this.jumpButton = h('button', { class: 'jump', id: 'jump-latest', hidden: true, onclick: () => logView().setFollow(true) }, '↓ Follow log');
    const regexLabel = h('label', { class: 'toggle', hidden: true, title: 'Search with a regular expression (on the server)' }, this.regexToggle, ' Regex');
    this.pagedNote = h('span', { class: 'paged-note', id: 'paged-note', hidden: true, title: 'This log is too big to hold in the tab: lines are read from the server as you scroll, and search runs on the server.' }, 'Read from the server');
    const expandAll = h('button', { class: 'btn small', id: 'expand-all', onclick: () => this.view.setAllCollapsed(false) }, 'Expand all');
    const collapseAll = h('button', { class: 'btn small', id: 'collapse-all', onclick: () => this.view.setAllCollapsed(true) }, 'Collapse all');
    this.memoryOnly = [expandAll, collapseAll];
    this.pagedOnly = [regexLabel, this.pagedNote];
    this.permalinkNote = h('span', { class: 'permalink-note', id: 'permalink-note', hidden: true });
    const toolbar = h(
      'div',
      { class: 'log-toolbar' },
      h('div', { class: 'search' }, h('span', { class: 'search-icon', 'aria-hidden': 'true' }), this.searchInput, this.matchCount, this.prevButton, this.nextButton),
      regexLabel,
      this.gotoInput,
      h('label', { class: 'toggle' }, this.timesToggle, ' Timestamps'),
      expandAll,
      collapseAll,
      h('span', { class: 'grow' }),
      this.pagedNote,
      this.permalinkNote,
      this.lineCount,
      this.followButton,
    );

    return h(
      'main',
      { class: 'page job-page', dataset: { jobId: id } },
      h('nav', { class: 'crumbs' }, h('a', { href: '/', 'data-nav': '' }, 'Builds'), h('span', { class: 'sep' }, '/'), (this.crumbProject = h('span', {}, '…')), h('span', { class: 'sep' }, '/'), (this.crumbId = h('code', {}, shortId(id)))),
      h(
        'section',
        { class: 'card job-head' },
        h('div', { class: 'head-row' }, this.title, this.badge, h('span', { class: 'grow' }), this.rawLink, this.rerunButton, this.cancelButton),
        this.metaLine,
        h('div', { class: 'progress-row' }, this.bar, this.pct, this.message),
        stepList,
        this.errorBanner,
        this.notice,
        this.artifacts,
      ),
      this.notFoundCard,
      h('section', { class: 'card log-card' }, toolbar, h('div', { class: 'log-wrap' }, this.view.viewport, this.jumpButton)),
    );
  }

  showNotice(text, kind) {
    this.notice.hidden = false;
    this.notice.className = `banner ${kind}`;
    this.notice.textContent = text;
  }

  status() {
    const log = this.feed.log;
    return log.status ?? this.meta?.status ?? null;
  }

  updateHeader() {
    if (this.notFound) return;
    const log = this.feed.log;
    const meta = this.meta;
    const status = this.status();
    const progress = log.status ? log.progress : (meta?.progress ?? 0);
    const finished = FINISHED.has(status);
    setBadge(this.badge, status ?? (this.notFound ? 'unknown' : 'queued'));
    this.badge.id = 'job-status';
    setProgress(this.bar, progress, status);
    this.pct.textContent = `${progress}%`;
    const message = log.status ? log.message : (meta?.message ?? '');
    this.message.textContent = finished ? (status === 'completed' ? 'Build finished' : status === 'failed' ? 'Build failed' : 'Build cancelled') : message;
    if (meta) {
      this.title.firstChild.textContent = meta.pipeline;
      this.crumbProject.textContent = meta.projectId;
      document.title = `${status ?? ''} · ${meta.pipeline} #${shortId(this.jobId)} · buildcast`;
    }
    const perm = meta ? this.app.buildPermission(meta.projectId) : null;
    this.cancelButton.hidden = finished || this.notFound;
    if (!this.cancelling) this.cancelButton.disabled = perm ? !perm.ok : false;
    this.cancelButton.title = perm && !perm.ok ? perm.why : '';
    this.rerunButton.hidden = !finished || !meta;
    if (!this.rerunning) this.rerunButton.disabled = !perm?.ok;
    this.rerunButton.title = perm && !perm.ok ? perm.why : 'Start a new build of the same project and pipeline';

    // meta line
    const parts = [];
    if (meta) {
      parts.push(['Project', meta.projectId], ['Pipeline', meta.pipeline]);
      const created = Date.parse(meta.createdAt);
      if (Number.isFinite(created)) parts.push(['Created', new Date(created).toLocaleString()]);
    }
    parts.push(['Duration', formatDuration(this.duration())]);
    if (this.watchers) parts.push(['Watching', this.watchers === 1 ? 'just you' : `${this.watchers} clients`]);
    if (this.replaying && this.feed.stats.subscriptions > 0) parts.push(['Log', 'loading…']);
    const key = JSON.stringify(parts);
    if (key !== this.metaKey) {
      this.metaKey = key;
      this.metaLine.replaceChildren(...parts.map(([k, v]) => h('span', { class: 'meta-item' }, h('span', { class: 'meta-key' }, k), ' ', h('span', { class: 'meta-value', dataset: { key: k.toLowerCase() } }, v))));
    }

    // phase steps
    const phase = log.phase ?? meta?.phase ?? 'queued';
    const failedPhase = status === 'failed' || status === 'cancelled' ? (log.error?.phase ?? phase) : null;
    const at = PHASES.indexOf(failedPhase ?? phase);
    const durations = log.phaseDurations();
    const skipped = log.skippedPhases();
    PHASES.forEach((p, idx) => {
      const { li, dur } = this.steps.get(p);
      let cls;
      if (failedPhase) cls = idx < at ? 'done' : idx === at ? (status === 'failed' ? 'failed' : 'cancelled') : 'pending';
      else if (status === 'completed') cls = idx === PHASES.length - 1 ? 'done current' : 'done';
      else cls = idx < at ? 'done' : idx === at ? 'current' : 'pending';
      const full = `phase ${cls}${skipped.has(p) ? ' skipped' : ''}`;
      if (li.className !== full) {
        li.className = full;
        if (cls.includes('current') || cls === 'failed') li.setAttribute('aria-current', 'step');
        else li.removeAttribute('aria-current');
      }
      const d = durations[p];
      dur.textContent = skipped.has(p) ? 'skipped' : d === undefined || p === 'completed' ? '' : formatDuration(d);
    });

    // error and artifacts
    if (log.error) {
      this.errorBanner.hidden = false;
      this.errorBanner.textContent = `Failed while ${log.error.phase}: ${log.error.message}`;
    } else {
      this.errorBanner.hidden = true;
    }
    const artifacts = log.completed?.artifacts ?? (finished ? meta?.artifacts : null) ?? [];
    const akey = artifacts.join('\n');
    if (akey !== this.artifactsKey) {
      this.artifactsKey = akey;
      this.artifacts.hidden = artifacts.length === 0;
      const base = `/api/jobs/${encodeURIComponent(this.jobId)}/artifacts/`;
      this.artifacts.replaceChildren(
        h('span', { class: 'meta-key' }, 'Artifacts'),
        ...artifacts.map((name) => {
          const href = base + encodeURIComponent(name);
          return h(
            'a',
            {
              class: 'artifact',
              href,
              download: name,
              onclick: (e) => {
                e.preventDefault();
                download(href, name).catch((err) => this.showNotice(`Download failed: ${err.message}`, 'error'));
              },
            },
            name,
          );
        }),
      );
    }
  }

  duration() {
    const log = this.feed.log;
    const meta = this.meta;
    if (log.completed) return log.completed.durationMs;
    if (FINISHED.has(meta?.status)) return meta.durationMs;
    const started = log.startedAt ?? (meta?.startedAt ? Date.parse(meta.startedAt) : null);
    if (started === null) return null;
    return Math.max(0, Date.now() - started);
  }

  updateToolbar() {
    const v = this.pview ?? this.view;
    const n = this.paged ? this.paged.total : this.feed.log.length;
    this.lineCount.textContent = `${n.toLocaleString('en-US')} ${n === 1 ? 'line' : 'lines'}`;
    if (this.searchError) {
      this.matchCount.textContent = this.searchError;
    } else if (this.searching) {
      this.matchCount.textContent = v.matches.length ? `${v.current + 1} / …` : 'Searching…';
    } else if (v.query) {
      const of = `${v.matches.length.toLocaleString('en-US')}${v.more ? '+' : ''}`;
      this.matchCount.textContent = v.matches.length ? `${v.current >= 0 ? v.current + 1 : 0} / ${of}` : 'No matches';
    } else {
      this.matchCount.textContent = '';
    }
    this.matchCount.classList.toggle('error', Boolean(this.searchError));
    this.prevButton.disabled = this.nextButton.disabled = v.matches.length === 0;
    this.followButton.textContent = v.follow ? 'Following' : 'Follow';
    this.followButton.classList.toggle('active', v.follow);
    this.followButton.title = v.follow ? 'The log scrolls to new lines; scroll up to pause' : 'Scroll to the end and follow new lines';
    this.jumpButton.hidden = v.follow;
    this.jumpButton.textContent = this.feed.log.finished ? '↓ Jump to the end' : '↓ Follow log';
    const w = this.wanted;
    this.permalinkNote.hidden = !w;
    if (w) this.permalinkNote.textContent = `Waiting for line ${(w.to + 1).toLocaleString('en-US')}…`;
  }

  async rerun() {
    this.rerunning = true;
    this.rerunButton.disabled = true;
    this.rerunButton.textContent = 'Starting…';
    try {
      const created = await api(`/api/jobs/${encodeURIComponent(this.jobId)}/rerun`, { method: 'POST' });
      if (!this.destroyed) this.app.navigate(`/jobs/${encodeURIComponent(created.jobId)}`);
    } catch (e) {
      this.showNotice(`Cannot re-run: ${e.message}`, 'error');
    } finally {
      this.rerunning = false;
      this.rerunButton.textContent = 'Re-run';
      this.updateHeader();
    }
  }

  async cancel() {
    this.cancelling = true;
    this.cancelButton.disabled = true;
    this.cancelButton.textContent = 'Cancelling…';
    try {
      await api(`/api/jobs/${encodeURIComponent(this.jobId)}/cancel`, { method: 'POST' });
    } catch (e) {
      this.showNotice(e.status === 409 ? 'This build has already finished.' : `Cannot cancel: ${e.message}`, 'error');
      this.cancelButton.disabled = false;
    } finally {
      this.cancelling = false;
      this.cancelButton.textContent = 'Cancel build';
    }
  }
}
