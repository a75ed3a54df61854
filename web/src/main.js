// buildcast dashboard: the app shell (top bar, connection indicator, token),
// client-side routing (/ and /jobs/<id>, or #/jobs/<id>), and the test hook
// `window.__buildcast`.

import './style.css';
import { getToken, setToken, onAuthFailure } from './api.js';
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
    this.buildShell();
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
    });
    this.route();
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
    const m = /^\/jobs\/([^/]+)\/?$/.exec(location.pathname) ?? /^#\/jobs\/([^/?]+)/.exec(location.hash);
    const jobId = m ? decodeURIComponent(m[1]) : null;
    if (this.page && jobId && this.page.jobId === jobId) return;
    this.page?.destroy();
    this.page = jobId ? new JobPage(this, jobId) : new ListPage(this);
    if (!jobId) document.title = 'Builds · buildcast';
    this.main.replaceChildren(this.page.el);
    this.navBuilds.classList.toggle('active', !jobId);
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
    if (!page?.jobId) return null;
    const { log, lastSeq, stats } = page.feed;
    return {
      jobId: page.jobId,
      status: log.status,
      progress: log.progress,
      lines: log.length,
      sections: log.sections.map((s) => ({ phase: s.phase, progress: s.progress, title: s.title, first: s.first, count: s.count })),
      lastSeq,
      stats: { ...stats, ...page.stats },
      gapLog: page.feed.gapLog.slice(),
      follow: page.view.follow,
    };
  },
  /** Log lines [from, to) as { seq, stream, text }. */
  lines: (from, to) => app.page?.feed?.log.lines(from, to) ?? [],
};
