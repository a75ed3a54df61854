// buildcast dashboard: the app shell (top bar, connection indicator, token),
// client-side routing (/ and /jobs/<id>, or #/jobs/<id>), and the test hook
// `window.__buildcast`.

import './style.css';
import { api, getToken, setToken, onAuthFailure } from './api.js';
import { Connection } from './connection.js';
import { h } from './dom.js';
import { JobFeed } from './logmodel.js';
import { ListPage } from './listpage.js';
import { JobPage, tuning } from './jobpage.js';

const STATE_LABEL = { connecting: 'Connecting', live: 'Live', reconnecting: 'Reconnecting', offline: 'Offline' };
const AUTH_ERROR = 'Authentication error';

class App {
  constructor(root) {
    this.root = root;
    this.page = null;
    this.feed = null;
    this.conn = new Connection();
    /** GET /api/me: { user, role, projects, canBuild }, { authError: true }, or null (not known). */
    this.me = null;
    this.meListeners = new Set();
    this.buildShell();
    this.loadMe();
    this.conn.onState((state, error) => this.showConnection(state, error));
    onAuthFailure((message) => this.showAuthError(message));

    document.addEventListener('click', (e) => {
      if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      const a = e.target.closest('a[data-nav]');
      if (!a) return;
      e.preventDefault();
      this.navigate(a.getAttribute('href'));
    });
    window.addEventListener('popstate', () => this.route());
    window.addEventListener('hashchange', () => {
      if (location.hash.startsWith('#/')) this.route();
      else this.page?.onHash?.();
    });
    this.route();
  }

  /** Asks the server who the token is (what the pages may offer). */
  async loadMe() {
    const asked = (this.meAsked = (this.meAsked ?? 0) + 1);
    this.meSettled = false;
    let me;
    try {
      me = await api('/api/me');
    } catch (e) {
      // Unreachable: not known, the server decides. Refused: nothing may be done.
      me = e.status === 401 ? { authError: true, canBuild: false } : null;
    }
    if (asked !== this.meAsked) return;
    this.meSettled = true;
    this.setMe(me);
  }

  setMe(me) {
    this.me = me;
    for (const fn of this.meListeners) fn(me);
  }

  /** Calls `fn` with what is known of the caller, now and whenever it changes. */
  onMe(fn) {
    this.meListeners.add(fn);
    fn(this.me);
    return () => this.meListeners.delete(fn);
  }

  /**
   * Whether the caller may start builds of `projectId` (any project when omitted):
   * null while not known yet, else { ok, why }.
   */
  buildPermission(projectId) {
    const me = this.me;
    if (me === null) return this.meAsked && this.meSettled ? { ok: true } : null;
    if (me.authError) return { ok: false, why: 'The server refused the access token: enter a valid one to start builds.' };
    if (!me.canBuild) return { ok: false, why: `Your token has the ${me.role} role: it can watch builds but not start them.` };
    if (projectId && Array.isArray(me.projects) && !me.projects.includes(projectId)) {
      return { ok: false, why: `Your token cannot start builds of project ${projectId}.` };
    }
    return { ok: true };
  }

  /** The feed of a job: kept for the last job shown, so coming back resumes. */
  feedFor(jobId) {
    if (!this.feed || this.feed.jobId !== jobId) this.feed = new JobFeed(jobId);
    return this.feed;
  }

  navigate(url) {
    if (url === location.pathname + location.search + location.hash) return;
    history.pushState(null, '', url);
    this.route();
  }

  route() {
    const m = /^\/jobs\/([^/]+)\/?$/.exec(location.pathname) ?? /^#\/jobs\/([^/?#]+)/.exec(location.hash);
    const jobId = m ? decodeURIComponent(m[1]) : null;
    const pm = jobId ? null : (/^\/projects\/([^/]+)\/?$/.exec(location.pathname) ?? /^#\/projects\/([^/?#]+)/.exec(location.hash));
    const projectId = pm ? decodeURIComponent(pm[1]) : null;
    if (this.page && jobId && this.page.jobId === jobId) {
      this.page.onHash?.();
      return;
    }
    if (this.page && projectId && this.page.projectId === projectId) return;
    this.page?.destroy();
    this.page = jobId ? new JobPage(this, jobId) : projectId ? new ListPage(this, { projectId }) : new ListPage(this);
    if (!jobId && !projectId) document.title = 'Builds · buildcast';
    this.main.replaceChildren(this.page.el);
    this.navBuilds.classList.toggle('active', !jobId && !projectId);
    window.scrollTo(0, 0);
  }

  buildShell() {
    this.connDot = h('span', { class: 'conn-dot' });
    this.connLabel = h('span', { class: 'conn-label' }, 'Connecting');
    this.connEl = h('div', { class: 'conn connecting', id: 'connection', role: 'status', 'aria-live': 'polite' }, this.connDot, this.connLabel);

    this.tokenInput = h('input', { type: 'password', id: 'token-input', placeholder: 'Paste an access token', autocomplete: 'off', 'aria-label': 'Access token' });
    this.tokenInput.value = getToken();
    const saveToken = (e) => {
      e.preventDefault();
      setToken(this.tokenInput.value.trim());
      this.tokenPanel.hidden = true;
      this.updateTokenButton();
      this.authBanner.hidden = true;
      this.loadMe();
      this.conn.reconnect();
      this.reloadPage();
    };
    this.tokenPanel = h(
      'form',
      { class: 'token-panel', id: 'token-panel', hidden: true, onsubmit: saveToken },
      h('label', { for: 'token-input' }, 'Access token'),
      h('p', { class: 'hint' }, 'Sent as the Socket.IO auth token and as a Bearer header. Kept for this tab only.'),
      this.tokenInput,
      h(
        'div',
        { class: 'row' },
        h('button', {
          type: 'button',
          class: 'btn small',
          onclick: (e) => {
            this.tokenInput.value = '';
            saveToken(e);
          },
        }, 'Clear'),
        h('button', { type: 'submit', class: 'btn small primary', id: 'token-save' }, 'Save'),
      ),
    );
    this.tokenButton = h('button', {
      class: 'btn small token-btn',
      id: 'token-button',
      'aria-expanded': 'false',
      onclick: () => this.toggleTokenPanel(),
    });
    this.updateTokenButton();

    this.authBanner = h(
      'div',
      { class: 'auth-banner', id: 'auth-error', role: 'alert', hidden: true },
      h('strong', {}, AUTH_ERROR),
      h('span', {}, ' — the server refused this page. Enter a valid access token.'),
      h('button', { class: 'btn small', onclick: () => this.toggleTokenPanel(true) }, 'Enter token'),
    );
    this.navBuilds = h('a', { href: '/', 'data-nav': '', class: 'nav-link' }, 'Builds');
    this.main = h('div', { class: 'main', id: 'page' });
    const logo = h('span', { class: 'logo', 'aria-hidden': 'true' });
    logo.innerHTML =
      '<svg viewBox="0 0 32 32" width="22" height="22"><rect width="32" height="32" rx="7" fill="#238636"/><path d="M9 10h9a4 4 0 0 1 0 8H9zM9 18h10a4 4 0 0 1 0 8H9z" fill="none" stroke="#fff" stroke-width="2.6" stroke-linejoin="round"/></svg>';
    this.root.replaceChildren(
      h(
        'header',
        { class: 'topbar' },
        h('a', { class: 'brand', href: '/', 'data-nav': '' }, logo, 'buildcast'),
        h('nav', { class: 'nav' }, this.navBuilds),
        h('span', { class: 'grow' }),
        this.connEl,
        h('div', { class: 'token-wrap' }, this.tokenButton, this.tokenPanel),
      ),
      this.authBanner,
      this.main,
    );
  }

  toggleTokenPanel(open = this.tokenPanel.hidden) {
    this.tokenPanel.hidden = !open;
    this.tokenButton.setAttribute('aria-expanded', String(open));
    if (open) this.tokenInput.focus();
  }

  updateTokenButton() {
    this.tokenButton.textContent = getToken() ? 'Token set' : 'Token';
    this.tokenButton.classList.toggle('has-token', Boolean(getToken()));
  }

  reloadPage() {
    const page = this.page;
    if (!page) return;
    page.destroy();
    this.page = null;
    if (page.jobId) this.feed = null;
    this.route();
  }

  showConnection(state, error) {
    this.connEl.className = `conn ${state}`;
    this.connEl.dataset.state = state;
    let label = STATE_LABEL[state] ?? state;
    if (state === 'offline' && error === AUTH_ERROR) label = 'Offline';
    this.connLabel.textContent = label;
    this.connEl.title = error ? `${label}: ${error}` : label;
    if (state === 'live') this.authBanner.hidden = true;
    if (error === AUTH_ERROR) this.showAuthError(error);
  }

  showAuthError() {
    this.authBanner.hidden = false;
    if (!this.me?.authError) this.setMe({ authError: true, canBuild: false });
  }
}

const app = new App(document.getElementById('app'));

// Test and debugging hook: the connection and the current job's in-memory model.
window.__buildcast = {
  app,
  tuning,
  get socket() {
    return app.conn.socket;
  },
  connection: () => ({ state: app.conn.state, error: app.conn.error, history: app.conn.history.slice() }),
  /** The job page's model: status, counts and stats (null on the list). */
  job: () => {
    const page = app.page;
    if (!page?.jobId || page.notFound) return page?.jobId ? { jobId: page.jobId, notFound: true } : null;
    const { log, lastSeq, stats } = page.feed;
    return {
      jobId: page.jobId,
      status: log.status,
      progress: log.progress,
      lines: log.length,
      sections: log.sections.map((s, k) => ({
        phase: s.phase,
        progress: s.progress,
        title: s.title,
        first: s.first,
        count: s.count,
        kind: s.kind,
        dialect: s.dialect,
        depth: s.depth,
        parent: s.parent,
        failed: s.failed,
        ended: s.end !== null,
        durationMs: log.sectionDuration(k),
        collapsed: page.view.isCollapsed(k),
      })),
      failedSection: log.failedSection,
      markers: log.markers,
      selection: page.view.selection,
      /** Rows in the view: line index, or -(section) - 1 for a header. */
      rows: page.view.rows.length,
      lastSeq,
      stats: { ...stats, ...page.stats },
      gapLog: page.feed.gapLog.slice(),
      follow: (page.pview ?? page.view).follow,
      /** A log read from the server by line number (too big for the tab), or null. */
      paged: page.paged
        ? {
            total: page.paged.total,
            held: page.paged.held,
            pages: page.paged.pages.size,
            requests: page.paged.requests,
            first: page.pview.first,
            last: page.pview.last,
            matches: page.pview.matches.slice(0, 1000),
            current: page.pview.current,
            more: page.pview.more,
            selection: page.pview.selection,
          }
        : null,
    };
  },
  /** Log lines [from, to) as { seq, stream, text }. */
  lines: (from, to) => app.page?.feed?.log.lines(from, to) ?? [],
};
