// The in-memory model of one job: its log lines (in plain arrays, so 200,000 lines
// stay cheap), the sections of the log, the job's state, and the bookkeeping that
// makes a resubscription lossless (JobFeed).
//
// Sections: one per progress step (`kind: 'phase'`, depth 0), and inside them the
// sections the log itself marks (`kind: 'log'`), nested as the markers nest:
//   GitHub     ::group::<title> … ::endgroup::
//   GitLab     section_start:<ts>:<name>[collapsed=true]\r\e[0K<title> … section_end:<ts>:<name>
//   Buildkite  --- <title> (collapsed), ~~~ <title> (collapsed, dimmed),
//              +++ <title> (open); each ends the previous one; ^^^ +++ opens it.
// Markers may be wrapped in escape sequences; they are not lines of the log. A
// new step ends the sections still open; a failure marks the ones open then.
//
// No DOM here: unit-tested in tests/browser/unit.test.mjs.

import { plainText } from './ansi.js';

export const PHASES = ['queued', 'preparing', 'installing', 'building', 'completed'];
export const FINISHED = new Set(['completed', 'failed', 'cancelled']);
export const STREAM_NAMES = ['stdout', 'stderr', 'system'];
const STREAM_CODE = { stdout: 0, stderr: 1, system: 2 };
const STEP_PHASES = new Set(['preparing', 'installing', 'building']);

export class JobLog {
  constructor(jobId) {
    this.jobId = jobId;
    this.generation = 0;
    this.reset();
  }

  /** Forgets everything (the history is about to be replayed from its start). */
  reset() {
    this.text = []; // raw messages, with their escape sequences
    this.stream = []; // 0 stdout, 1 stderr, 2 system
    this.time = []; // ms since the epoch
    this.seq = []; // the event's seq; 0 for a note added by the page
    this.sec = []; // index into sections: the innermost one holding the line
    this.sections = [];
    this.open = []; // log sections not ended yet, outermost first
    this.phaseSection = -1; // the current step's section
    this.lastBuildkite = -1; // the latest Buildkite group (for ^^^ +++)
    this.failedSection = -1; // where the build failed, once it has
    this.shape = 0; // bumped when a section ends, fails or is opened by a marker
    this.plainCache = new Map();
    this.status = null;
    this.phase = null;
    this.progress = 0;
    this.message = '';
    this.error = null;
    this.completed = null;
    this.startedAt = null;
    this.finishedAt = null;
    this.markers = 0;
    this.generation += 1;
  }

  get length() {
    return this.text.length;
  }

  get finished() {
    return FINISHED.has(this.status);
  }

  /** Applies one job event (in seq order). */
  apply(name, d) {
    const ts = Date.parse(d.timestamp);
    switch (name) {
      case 'job:progress': {
        this.status = d.status;
        this.phase = d.phase;
        this.progress = d.progress;
        this.message = d.message;
        if (d.phase !== 'queued' && this.startedAt === null) this.startedAt = ts;
        const last = this.sections[this.phaseSection];
        if (!last || last.progress !== d.progress || last.phase !== d.phase) {
          this.closeFrom(0, ts);
          if (last && last.end === null) last.end = ts;
          this.phaseSection = this.sections.length;
          this.sections.push(newSection(this.sections.length, d.phase, d.progress, d.message, ts, this.text.length));
        }
        break;
      }
      case 'job:log':
        if (this.lineSink) this.lineSink(d);
        else this.pushLine(STREAM_CODE[d.stream] ?? 0, d.message, ts, d.seq);
        break;
      case 'job:error': {
        this.error = { phase: d.phase, message: d.message };
        this.markFailed();
        break;
      }
      case 'job:completed': {
        this.status = d.status;
        this.progress = d.progress;
        this.completed = d;
        this.finishedAt = ts;
        if (d.status === 'failed' && this.failedSection < 0) this.markFailed();
        if (d.status === 'cancelled') for (const k of [this.phaseSection, ...this.open]) if (k >= 0) this.sections[k].cancelled = true;
        this.closeFrom(0, ts);
        const last = this.sections[this.phaseSection];
        if (last && last.end === null) last.end = ts;
        break;
      }
      default:
        break;
    }
  }

  /** Marks the sections open now (and the step's) as where the build failed. */
  markFailed() {
    const phase = this.sections[this.phaseSection];
    if (phase) phase.failed = true;
    for (const k of this.open) this.sections[k].failed = true;
    this.failedSection = this.open.length ? this.open[this.open.length - 1] : this.phaseSection;
    this.shape += 1;
  }

  /** Ends the open log sections from depth `at` of the stack on. */
  closeFrom(at, ts) {
    if (at >= this.open.length) return;
    for (let k = this.open.length - 1; k >= at; k--) this.sections[this.open[k]].end = ts;
    this.open.length = at;
    this.shape += 1;
  }

  /** The innermost open section whose `test` holds, as a stack position (-1: none). */
  findOpen(test) {
    for (let k = this.open.length - 1; k >= 0; k--) if (test(this.sections[this.open[k]])) return k;
    return -1;
  }

  /** Opens a log section inside the innermost open one. */
  openSection(dialect, title, ts, { collapsed = false, dim = false, name = null } = {}) {
    if (this.phaseSection < 0) this.ensurePhase(ts);
    const parent = this.open.length ? this.open[this.open.length - 1] : this.phaseSection;
    const s = this.sections.length;
    const sec = newSection(s, null, null, title || name || '(untitled)', ts, this.text.length);
    Object.assign(sec, { kind: 'log', dialect, name, parent, depth: this.sections[parent].depth + 1, collapsed, dim });
    this.sections.push(sec);
    this.open.push(s);
    if (dialect === 'buildkite') this.lastBuildkite = s;
  }

  ensurePhase(ts) {
    if (this.phaseSection >= 0) return;
    this.phaseSection = this.sections.length;
    this.sections.push(newSection(this.sections.length, null, null, 'Log', ts, this.text.length));
  }

  /** Applies a section marker (see parseMarker). */
  applyMarker(m, ts) {
    switch (m.type) {
      case 'github-start':
        this.openSection('github', m.title, ts, { collapsed: true });
        break;
      case 'github-end': {
        const k = this.findOpen((x) => x.dialect === 'github');
        if (k >= 0) this.closeFrom(k, ts);
        break;
      }
      case 'gitlab-start':
        this.openSection('gitlab', m.title, ts, { collapsed: m.collapsed, name: m.name });
        break;
      case 'gitlab-end': {
        const k = this.findOpen((x) => x.dialect === 'gitlab' && x.name === m.name);
        if (k >= 0) this.closeFrom(k, ts);
        break;
      }
      case 'buildkite-start': {
        const k = this.findOpen((x) => x.dialect === 'buildkite');
        if (k >= 0) this.closeFrom(k, ts);
        this.openSection('buildkite', m.title, ts, { collapsed: m.collapsed, dim: m.dim });
        break;
      }
      case 'buildkite-expand': {
        const sec = this.sections[this.lastBuildkite];
        if (sec) {
          sec.collapsed = false;
          this.shape += 1;
        }
        break;
      }
      default:
        break;
    }
  }

  /**
   * From now on log lines go to `sink` (a log too big for the tab, read from the
   * server by line number), not into these arrays, which are emptied. The job's
   * state is still kept here.
   */
  toPaged(sink) {
    this.lineSink = sink;
    this.text = [];
    this.stream = [];
    this.time = [];
    this.seq = [];
    this.sec = [];
    this.plainCache = new Map();
    for (const sec of this.sections) {
      sec.first = 0;
      sec.count = 0;
    }
    this.generation += 1;
  }

  /** Adds a line (stream code 0/1/2) to the innermost open section. */
  pushLine(stream, message, ts, seq) {
    if (this.lineSink) return;
    if (stream !== 2 && seq !== 0) {
      const m = parseMarker(message);
      if (m) {
        this.markers += 1;
        this.applyMarker(m, ts);
        // What GitLab writes after a section's end (often the next one's start).
        if (m.rest) this.pushLine(stream, m.rest, ts, seq);
        return;
      }
    }
    this.ensurePhase(ts);
    const s = this.open.length ? this.open[this.open.length - 1] : this.phaseSection;
    this.text.push(message);
    this.stream.push(stream);
    this.time.push(ts);
    this.seq.push(seq);
    this.sec.push(s);
    for (let k = s; k >= 0; k = this.sections[k].parent) this.sections[k].count += 1;
  }

  /** Ms since the line before (the first line: since its section started). */
  gapBefore(i) {
    if (i > 0) return this.time[i] - this.time[i - 1];
    return 0;
  }

  /** A line's text without escape sequences (what search looks at). */
  plain(i) {
    const raw = this.text[i];
    if (raw.indexOf('\x1b') < 0 && raw.indexOf('\r') < 0) return raw;
    let p = this.plainCache.get(i);
    if (p === undefined) {
      p = plainText(raw);
      this.plainCache.set(i, p);
    }
    return p;
  }

  /** Indices of lines from `from` on whose plain text contains `needle` (lower case). */
  search(needle, from = 0, out = []) {
    if (!needle) return out;
    const n = this.text.length;
    for (let i = from; i < n; i++) {
      if (this.plain(i).toLowerCase().includes(needle)) out.push(i);
    }
    return out;
  }

  /** Duration of a section in ms (`now` for one still running). */
  sectionDuration(s, now = Date.now()) {
    const sec = this.sections[s];
    const end = sec.end ?? (this.finished ? (this.finishedAt ?? sec.start) : now);
    return Math.max(0, end - sec.start);
  }

  /**
   * Whether a section is a step the pipeline does not have: the server reports
   * its progress and moves on; a step that runs logs "Running the <step> step".
   */
  sectionSkipped(s) {
    const sec = this.sections[s];
    return sec.count === 0 && STEP_PHASES.has(sec.phase) && (sec.end !== null || this.finished);
  }

  /** Phases whose every step was skipped. */
  skippedPhases() {
    const ran = new Set();
    const seen = new Set();
    for (let s = 0; s < this.sections.length; s++) {
      const p = this.sections[s].phase;
      if (!STEP_PHASES.has(p)) continue;
      seen.add(p);
      if (!this.sectionSkipped(s)) ran.add(p);
    }
    return new Set([...seen].filter((p) => !ran.has(p)));
  }

  /** Time spent in each phase: { phase: ms }. */
  phaseDurations(now = Date.now()) {
    const out = {};
    for (let s = 0; s < this.sections.length; s++) {
      const p = this.sections[s].phase;
      if (!p) continue;
      out[p] = (out[p] ?? 0) + this.sectionDuration(s, now);
    }
    return out;
  }

  /** The lines as { seq, stream, text } (for tests and debugging). */
  lines(from = 0, to = this.text.length) {
    const out = [];
    for (let i = from; i < to; i++) {
      out.push({ seq: this.seq[i], stream: STREAM_NAMES[this.stream[i]], text: this.text[i] });
    }
    return out;
  }
}

function newSection(index, phase, progress, title, start, first) {
  return { index, kind: 'phase', phase, progress, title, start, end: null, first, count: 0, failed: false, cancelled: false, parent: -1, depth: 0, collapsed: false, dim: false, dialect: null, name: null };
}

// Escape sequences (CSI, OSC, two-character ones) around or inside a marker.
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b(?:\[[0-?]*[ -\/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])/g;
const GITLAB = /^section_(start|end):(\d+):([A-Za-z0-9_.\-]+)(?:\[([^\]]*)\])?(?:\r(.*))?$/s;
const BUILDKITE = /^(---|\+\+\+|~~~) +(\S.*)$/;

/**
 * The section marker a log line is, or null:
 *   { type: 'github-start', title } | { type: 'github-end' }
 *   { type: 'gitlab-start', name, title, collapsed, rest } | { type: 'gitlab-end', name, rest }
 *   { type: 'buildkite-start', title, collapsed, dim } | { type: 'buildkite-expand' }
 * `rest`: text after a GitLab marker's \r (GitLab may start the next one there).
 */
export function parseMarker(raw) {
  if (raw.length > 4096) return null;
  const c = raw.charCodeAt(0);
  // Quick refusal of ordinary lines: markers start with ':', 's', '-', '+', '~', '^' or ESC.
  if (c !== 58 && c !== 115 && c !== 45 && c !== 43 && c !== 126 && c !== 94 && c !== 27) return null;
  const text = (raw.indexOf('\x1b') < 0 ? raw : raw.replace(ESCAPES, '')).trimEnd();
  if (text.startsWith('::group::')) return { type: 'github-start', title: text.slice(9).trim() };
  if (text === '::endgroup::') return { type: 'github-end' };
  if (text.startsWith('section_')) {
    const m = GITLAB.exec(text);
    if (!m) return null;
    const after = m[5] ?? '';
    if (m[1] === 'start') {
      const opts = m[4] ?? '';
      const title = after.slice(after.lastIndexOf('\r') + 1).trim();
      return { type: 'gitlab-start', name: m[3], title: title || m[3], collapsed: /(^|,)\s*collapsed\s*=\s*true\b/.test(opts), rest: '' };
    }
    return { type: 'gitlab-end', name: m[3], rest: after.trim() };
  }
  if (/^\^\^\^ \+\+\+\s*$/.test(text)) return { type: 'buildkite-expand' };
  const b = BUILDKITE.exec(text);
  if (b) return { type: 'buildkite-start', title: b[2].trim(), collapsed: b[1] !== '+++', dim: b[1] === '~~~' };
  return null;
}

/**
 * One job's event stream as this page receives it: remembers the last seq seen,
 * builds `subscribe:job` requests that resume from it, drops duplicates, rebuilds
 * when the server replays from the beginning (history lost or recreated), and
 * queues events until the view drains them (once per animation frame).
 *
 * While a resuming subscription (since > 0) waits for its acknowledgement, the
 * events that arrive are held back: only the ack says whether they continue this
 * copy of the log (`recovered: true`) or restart it from seq 1 (`recovered:
 * false`), and events still in flight from an earlier subscription may be mixed in.
 */
export class JobFeed {
  constructor(jobId) {
    this.jobId = jobId;
    this.log = new JobLog(jobId);
    this.lastSeq = 0;
    this.epoch = undefined;
    this.queue = [];
    this.pending = null;
    this.resetQueued = false;
    this.snapshot = null;
    this.stats = { received: 0, duplicates: 0, gaps: 0, restarts: 0, subscriptions: 0 };
    this.gapLog = [];
  }

  /**
   * The payload of `subscribe:job`, resuming after the last event seen; with
   * `batch`, log lines come in `job:logs` runs (one message per run, not per line).
   */
  subscribeRequest({ batch = true } = {}) {
    this.abandon();
    this.pending = { since: this.lastSeq, held: [] };
    this.stats.subscriptions += 1;
    const req = { jobId: this.jobId, since: this.lastSeq, batch };
    if (this.epoch) req.epoch = this.epoch;
    return req;
  }

  /** An incoming job event; returns whether it was taken (or held). */
  receive(name, d) {
    this.stats.received += 1;
    const p = this.pending;
    if (p && p.since > 0) {
      p.held.push([name, d]);
      return true;
    }
    return this.accept(name, d);
  }

  accept(name, d) {
    if (!(d.seq > this.lastSeq)) {
      this.stats.duplicates += 1;
      return false;
    }
    if (this.lastSeq > 0 && d.seq !== this.lastSeq + 1) {
      this.stats.gaps += 1;
      if (this.gapLog.length < 10) this.gapLog.push([this.lastSeq, d.seq]);
    }
    this.lastSeq = d.seq;
    this.queue.push(name, d);
    return true;
  }

  /**
   * Gives up a subscription that was not acknowledged (the page resubscribes):
   * what it delivered so far is taken in, and what is still in flight from it
   * follows on without a hole.
   */
  abandon() {
    const p = this.pending;
    this.pending = null;
    if (!p) return;
    const held = p.held.sort((a, b) => a[1].seq - b[1].seq);
    if (p.since > 0 && held.length && held[0][1].seq === 1) this.restart();
    for (const [name, d] of held) this.accept(name, d);
  }

  restart() {
    this.stats.restarts += 1;
    this.lastSeq = 0;
    this.queue.length = 0;
    this.resetQueued = true;
  }

  /**
   * The acknowledgement of `subscribe:job`. Returns what the page should know:
   * `{ error }`, `{ rebuilt: true }` or `{ gap: reason }` (or `{}`).
   */
  acknowledge(ack) {
    const p = this.pending;
    this.pending = null;
    const held = p ? p.held.sort((a, b) => a[1].seq - b[1].seq) : [];
    let result = {};
    if (!ack || !ack.ok) {
      result = { error: ack?.error ?? 'no answer' };
    } else {
      if (ack.epoch) this.epoch = ack.epoch;
      this.snapshot = ack.job ?? null;
      if (ack.recovered === false && p && p.since > 0) {
        // The whole history follows from seq 1 (it always keeps its head), or
        // part of it after `since` is gone.
        if (held.length && held[0][1].seq === 1) {
          this.restart();
          result = { rebuilt: true, reason: ack.reason };
        } else {
          result = { gap: ack.reason };
        }
      }
    }
    for (const [name, d] of held) this.accept(name, d);
    if (result.gap !== undefined) {
      this.queue.push('note', { message: `Some of this log could not be replayed: ${ack.reason ?? 'history incomplete'}` });
    }
    return result;
  }

  /** Applies up to `max` queued events to the log; returns { reset, events, more }. */
  drain(max = Infinity) {
    const reset = this.resetQueued;
    if (reset) {
      this.log.reset();
      this.resetQueued = false;
    }
    let q = this.queue;
    if (q.length / 2 > max) {
      this.queue = q.slice(max * 2);
      q = q.slice(0, max * 2);
    } else {
      this.queue = [];
    }
    for (let k = 0; k < q.length; k += 2) {
      if (q[k] === 'note') {
        const last = this.log.time[this.log.length - 1] ?? Date.now();
        this.log.pushLine(2, q[k + 1].message, last, 0);
      } else {
        this.log.apply(q[k], q[k + 1]);
      }
    }
    return { reset, events: q.length / 2, more: this.queue.length > 0 };
  }
}
