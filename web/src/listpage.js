// The builds list: a form to start a build, then active and recent jobs, kept up
// to date by project events (subscribe:project for every project shown), and
// `subscribe:jobs`, which announces every new job (`jobs:created`), so that a
// project the list did not show yet appears and is followed from then on. The list
// is loaded from GET /api/jobs when the page opens and again on every (re)connect;
// nothing is polled.
//
// The same page, given a `projectId`, is the project page (/projects/<id>): that
// project's jobs only, from its project room.

import { api } from './api.js';
import { h, badge, setBadge, progressBar, setProgress } from './dom.js';
import { formatAgo, formatDuration, shortId } from './format.js';
import { FINISHED } from './logmodel.js';

const LAST_PROJECT_KEY = 'buildcast.lastProject';
const RECENT_SHOWN = 50;

function ms(ts) {
  if (!ts) return null;
  const v = Date.parse(ts);
  return Number.isFinite(v) ? v : null;
}

/** Higher means further along: a stale snapshot never moves a job back. */
function rank(job) {
  return FINISHED.has(job.status) ? 1000 : (job.progress ?? 0);
}

export class ListPage {
  constructor(app, { projectId = null } = {}) {
    this.app = app;
    this.projectId = projectId;
    this.conn = app.conn;
    this.jobs = new Map();
    this.rows = new Map();
    this.subscribed = new Set();
    this.pipelines = [];
    this.frame = 0;
    this.disposers = [];
    this.el = this.build();
    this.disposers.push(this.conn.onProject((name, d) => this.onProjectEvent(name, d)));
    if (!projectId) this.disposers.push(this.conn.onCreated((d) => this.onCreated(d)));
    this.disposers.push(app.onMe(() => this.updatePermission()));
    // The list is loaded now, and again on every reconnect (events may have been
    // missed while disconnected); the first connect only subscribes to what the
    // load found, when that load is fresh.
    if (!this.conn.socket.connected) this.loading = this.refresh();
    this.disposers.push(
      this.conn.onConnect(() => {
        this.subscribed.clear();
        // Told of new jobs before the list is read: none falls between the two.
        if (!this.projectId) this.conn.emit('subscribe:jobs');
        const fresh = this.loading;
        this.loading = null;
        if (fresh) fresh.then(() => this.subscribeProjects());
        else this.refresh();
      }),
    );
    this.loadPipelines();
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  destroy() {
    clearInterval(this.ticker);
    cancelAnimationFrame(this.frame);
    for (const d of this.disposers) d();
    for (const p of this.subscribed) this.conn.emit('unsubscribe:project', p);
    if (!this.projectId) this.conn.emit('unsubscribe:jobs');
    this.destroyed = true;
  }

  build() {
    const lastProject = this.projectId ?? (localStorage.getItem(LAST_PROJECT_KEY) || 'demo-project');
    this.projectInput = h('input', {
      name: 'projectId',
      id: 'start-project',
      required: true,
      value: lastProject,
      pattern: '[A-Za-z0-9._:\\-]{1,128}',
      title: 'Letters, digits, and . _ : - (at most 128)',
      autocomplete: 'off',
      spellcheck: 'false',
      readonly: Boolean(this.projectId),
    });
    this.projectInput.addEventListener('input', () => this.updatePermission());
    this.pipelineSelect = h('select', { name: 'pipeline', id: 'start-pipeline', required: true }, h('option', { value: '' }, 'Loading…'));
    this.pipelineSelect.addEventListener('change', () => this.showDescription());
    this.description = h('p', { class: 'hint description', id: 'pipeline-description' });
    this.denied = h('p', { class: 'hint denied', id: 'start-denied', hidden: true });
    this.formError = h('p', { class: 'form-error', role: 'alert' });
    this.startButton = h('button', { type: 'submit', class: 'btn primary', id: 'start-button' }, 'Start build');
    const form = h(
      'form',
      { class: 'start-form', id: 'start-form', onsubmit: (e) => this.submit(e) },
      h('label', { for: 'start-project' }, 'Project'),
      this.projectInput,
      h('label', { for: 'start-pipeline' }, 'Pipeline'),
      this.pipelineSelect,
      this.startButton,
    );
    this.startButton.disabled = true;
    this.activeBody = h('tbody');
    this.recentBody = h('tbody');
    this.activeCount = h('span', { class: 'count' }, '0');
    this.recentCount = h('span', { class: 'count' }, '0');
    this.loadError = h('p', { class: 'form-error', role: 'alert' });
    const table = (body, emptyText, id) =>
      h(
        'table',
        { class: 'jobs', id },
        h(
          'thead',
          {},
          h('tr', {}, ...['Status', 'Build', 'Project', 'Pipeline', 'Progress', 'Started', 'Duration'].map((t) => h('th', { class: `c-${t.toLowerCase()}` }, t))),
        ),
        body,
        h('tbody', { class: 'empty-body' }, h('tr', {}, h('td', { colspan: '7', class: 'empty' }, emptyText))),
      );
    this.activeTable = table(this.activeBody, 'No build is running.', 'active-jobs');
    this.recentTable = table(this.recentBody, 'No finished builds yet.', 'recent-jobs');
    const scroll = (t) => h('div', { class: 'table-scroll' }, t);
    const project = this.projectId;
    if (project) document.title = `${project} · buildcast`;
    return h(
      'main',
      { class: `page list-page${project ? ' project-page' : ''}`, dataset: project ? { projectId: project } : {} },
      project
        ? h('nav', { class: 'crumbs' }, h('a', { href: '/', 'data-nav': '' }, 'Builds'), h('span', { class: 'sep' }, '/'), h('span', {}, 'Project'), h('span', { class: 'sep' }, '/'), h('code', { id: 'project-title' }, project))
        : null,
      h(
        'section',
        { class: 'card' },
        h('div', { class: 'card-head' }, h('h2', {}, project ? `Start a build of ${project}` : 'Start a build')),
        h('div', { class: 'card-body' }, form, this.description, this.denied, this.formError),
      ),
      h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Active builds ', this.activeCount)), scroll(this.activeTable)),
      h(
        'section',
        { class: 'card' },
        h('div', { class: 'card-head' }, h('h2', {}, 'Recent builds ', this.recentCount), this.loadError),
        scroll(this.recentTable),
      ),
    );
  }

  async loadPipelines() {
    try {
      const data = await api('/api/pipelines');
      if (this.destroyed) return;
      this.pipelines = data?.pipelines ?? [];
      const last = localStorage.getItem(`${LAST_PROJECT_KEY}.pipeline`);
      this.pipelineSelect.replaceChildren(
        ...this.pipelines.map((p) => h('option', { value: p.name, selected: p.name === last }, p.name)),
      );
      if (!this.pipelines.length) this.pipelineSelect.append(h('option', { value: '' }, 'No pipelines configured'));
      this.showDescription();
    } catch (e) {
      this.pipelineSelect.replaceChildren(h('option', { value: '' }, 'Unavailable'));
      this.formError.textContent = `Cannot load pipelines: ${e.message}`;
    }
  }

  showDescription() {
    const p = this.pipelines.find((x) => x.name === this.pipelineSelect.value);
    this.description.replaceChildren(
      ...(p
        ? [
            h('span', { class: 'desc' }, p.description || 'No description.'),
            p.steps?.length ? h('span', { class: 'steps' }, h('span', { class: 'meta-key' }, 'Steps'), ' ', p.steps.join(' → ')) : null,
          ]
        : []),
    );
    this.updatePermission();
  }

  /** Start is offered only when the server would accept it (see App.buildPermission). */
  updatePermission() {
    if (!this.startButton || this.submitting) return;
    const perm = this.app.buildPermission(this.projectInput.value.trim());
    const ready = this.pipelines.length > 0;
    this.startButton.disabled = !perm?.ok || !ready;
    this.denied.hidden = !perm || perm.ok;
    this.denied.textContent = perm && !perm.ok ? perm.why : '';
    this.startButton.title = perm && !perm.ok ? perm.why : '';
  }

  async submit(e) {
    e.preventDefault();
    const projectId = this.projectInput.value.trim();
    const pipeline = this.pipelineSelect.value;
    if (!projectId || !pipeline) return;
    this.formError.textContent = '';
    if (!this.app.buildPermission(projectId)?.ok) return;
    this.startButton.disabled = true;
    this.submitting = true;
    try {
      const created = await api('/api/jobs', { method: 'POST', body: { projectId, pipeline } });
      localStorage.setItem(LAST_PROJECT_KEY, projectId);
      localStorage.setItem(`${LAST_PROJECT_KEY}.pipeline`, pipeline);
      this.app.navigate(`/jobs/${encodeURIComponent(created.jobId)}`);
    } catch (err) {
      this.formError.textContent = `Could not start the build: ${err.message}`;
      this.submitting = false;
      this.updatePermission();
    }
  }

  async refresh() {
    try {
      const data = await api(`/api/jobs?limit=100${this.projectId ? `&projectId=${encodeURIComponent(this.projectId)}` : ''}`);
      if (this.destroyed) return;
      this.loadError.textContent = '';
      for (const job of data?.jobs ?? []) this.merge(job, true);
      this.subscribeProjects();
      this.schedule();
    } catch (e) {
      this.loadError.textContent = `Cannot load builds: ${e.message}`;
    }
  }

  subscribeProjects() {
    if (!this.conn.socket.connected) return;
    const projects = this.projectId ? [this.projectId] : [...new Set([...this.jobs.values()].map((j) => j.projectId))];
    for (const p of projects) {
      if (this.subscribed.has(p)) continue;
      this.subscribed.add(p);
      this.conn.request('subscribe:project', p).then((ack) => {
        if (this.destroyed || !ack?.ok) return;
        for (const j of ack.jobs ?? []) this.merge(j, true);
        this.schedule();
      });
    }
  }

  /** Takes in a JobView (from REST or a project snapshot). */
  merge(view, snapshot) {
    const old = this.jobs.get(view.jobId);
    const job = {
      jobId: view.jobId,
      projectId: view.projectId,
      pipeline: view.pipeline ?? old?.pipeline ?? '',
      status: view.status,
      progress: view.progress ?? 0,
      message: view.message ?? '',
      createdAt: ms(view.createdAt) ?? old?.createdAt ?? null,
      startedAt: ms(view.startedAt) ?? old?.startedAt ?? null,
      finishedAt: ms(view.finishedAt) ?? old?.finishedAt ?? null,
      durationMs: view.durationMs ?? old?.durationMs ?? null,
      receivedAt: Date.now(),
    };
    if (old && snapshot && rank(old) > rank(job)) {
      // Events got further than this snapshot: keep their state, take what they lack.
      if (!old.pipeline) old.pipeline = job.pipeline;
      old.createdAt ??= job.createdAt;
      old.startedAt ??= job.startedAt;
      return;
    }
    this.jobs.set(job.jobId, job);
  }

  /** `jobs:created`: a new job, maybe of a project not shown yet. */
  onCreated(d) {
    if (this.jobs.has(d.jobId)) return;
    this.merge({ ...d, createdAt: d.timestamp, pipeline: '' }, true);
    // Its project's snapshot brings the pipeline; its room, what happens next.
    if (!this.subscribed.has(d.projectId)) this.subscribeProjects();
    else this.fetchJob(d.jobId);
    this.schedule();
  }

  fetchJob(jobId) {
    api(`/api/jobs/${encodeURIComponent(jobId)}`)
      .then((view) => {
        if (this.destroyed) return;
        this.merge(view, true);
        this.schedule();
      })
      .catch(() => {});
  }

  onProjectEvent(name, d) {
    if (!this.subscribed.has(d.projectId)) return;
    let job = this.jobs.get(d.jobId);
    const ts = ms(d.timestamp);
    if (!job) {
      job = { jobId: d.jobId, projectId: d.projectId, pipeline: '', status: d.status, progress: 0, message: '', createdAt: ts, startedAt: null, finishedAt: null, durationMs: null, receivedAt: Date.now() };
      this.jobs.set(d.jobId, job);
      this.fetchJob(d.jobId);
    }
    if (FINISHED.has(job.status) && name === 'project:progress') return;
    job.status = d.status;
    job.progress = d.progress;
    if (name === 'project:progress') {
      job.message = d.message;
      if (d.status !== 'queued' && job.startedAt === null) job.startedAt = ts;
    } else {
      job.finishedAt = ts;
      job.durationMs = d.durationMs;
    }
    job.receivedAt = Date.now();
    this.schedule();
  }

  schedule() {
    if (this.frame || this.destroyed) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  duration(job, now) {
    if (FINISHED.has(job.status)) return job.durationMs;
    if (job.status === 'queued' || job.startedAt === null) return null;
    return Math.max(0, now - job.startedAt);
  }

  render() {
    const now = Date.now();
    const all = [...this.jobs.values()].sort((a, b) => (b.createdAt ?? 0) - (a.createdAt ?? 0) || (a.jobId < b.jobId ? 1 : -1));
    const active = all.filter((j) => !FINISHED.has(j.status));
    const recent = all.filter((j) => FINISHED.has(j.status)).slice(0, RECENT_SHOWN);
    this.place(this.activeBody, active, now);
    this.place(this.recentBody, recent, now);
    this.activeCount.textContent = String(active.length);
    this.recentCount.textContent = String(recent.length);
    this.activeTable.classList.toggle('is-empty', active.length === 0);
    this.recentTable.classList.toggle('is-empty', recent.length === 0);
    const shown = new Set([...active, ...recent].map((j) => j.jobId));
    for (const [id, row] of this.rows) {
      if (!shown.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
  }

  place(body, jobs, now) {
    let prev = null;
    for (const job of jobs) {
      const row = this.rowFor(job);
      this.updateRow(row, job, now);
      const want = prev ? prev.nextSibling : body.firstChild;
      if (row.tr.parentNode !== body || want !== row.tr) body.insertBefore(row.tr, want);
      prev = row.tr;
    }
    while (prev ? prev.nextSibling : body.firstChild) (prev ? prev.nextSibling : body.firstChild).remove();
  }

  rowFor(job) {
    let row = this.rows.get(job.jobId);
    if (row) return row;
    const href = `/jobs/${encodeURIComponent(job.jobId)}`;
    row = {
      badge: badge(job.status),
      link: h('a', { href, class: 'job-link', 'data-nav': '' }, h('code', {}, shortId(job.jobId))),
      project: h('td', { class: 'project' }, h('a', { href: `/projects/${encodeURIComponent(job.projectId)}`, class: 'project-link', 'data-nav': '' }, job.projectId)),
      pipeline: h('td', { class: 'pipeline' }),
      bar: progressBar(),
      pct: h('span', { class: 'pct' }),
      started: h('td', { class: 'started' }),
      duration: h('td', { class: 'duration' }),
    };
    row.tr = h(
      'tr',
      { dataset: { job: job.jobId }, class: 'job-row' },
      h('td', { class: 'status' }, row.badge),
      h('td', { class: 'id' }, row.link),
      row.project,
      row.pipeline,
      h('td', { class: 'progress' }, h('div', { class: 'progress-cell' }, row.bar, row.pct)),
      row.started,
      row.duration,
    );
    row.tr.addEventListener('click', (e) => {
      if (e.target.closest('a') || window.getSelection()?.toString()) return;
      this.app.navigate(href);
    });
    this.rows.set(job.jobId, row);
    return row;
  }

  updateRow(row, job, now) {
    setBadge(row.badge, job.status);
    row.link.title = job.jobId;

    setText(row.pipeline, job.pipeline);
    setProgress(row.bar, job.progress, job.status);
    setText(row.pct, `${job.progress ?? 0}%`);
    const started = job.startedAt ?? job.createdAt;
    setText(row.started, formatAgo(started, now));
    row.started.title = started ? new Date(started).toLocaleString() : '';
    setText(row.duration, job.status === 'queued' ? 'waiting' : formatDuration(this.duration(job, now)));
  }

  tick() {
    const now = Date.now();
    for (const job of this.jobs.values()) {
      const row = this.rows.get(job.jobId);
      if (row) this.updateRow(row, job, now);
    }
  }
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
