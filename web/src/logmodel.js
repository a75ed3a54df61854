// The in-memory model of one job: its log lines (in plain arrays, so 200,000 lines
// stay cheap), the sections of the log (one per progress step), the job's state,
// and the bookkeeping that makes a resubscription lossless (JobFeed).
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
    this.sec = []; // index into sections
    this.sections = [];
    this.plainCache = new Map();
    this.status = null;
    this.phase = null;
    this.progress = 0;
    this.message = '';
    this.error = null;
    this.completed = null;
    this.startedAt = null;
    this.finishedAt = null;
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
        const last = this.sections[this.sections.length - 1];
        if (!last || last.progress !== d.progress || last.phase !== d.phase) {
          if (last && last.end === null) last.end = ts;
          this.sections.push(newSection(this.sections.length, d.phase, d.progress, d.message, ts, this.text.length));
        }
        break;
      }
      case 'job:log':
        this.pushLine(STREAM_CODE[d.stream] ?? 0, d.message, ts, d.seq);
        break;
      case 'job:error': {
        this.error = { phase: d.phase, message: d.message };
        const last = this.sections[this.sections.length - 1];
        if (last) last.failed = true;
        break;
      }
      case 'job:completed': {
        this.status = d.status;
        this.progress = d.progress;
        this.completed = d;
        this.finishedAt = ts;
        const last = this.sections[this.sections.length - 1];
        if (last) {
          if (last.end === null) last.end = ts;
          if (d.status === 'failed') last.failed = true;
          if (d.status === 'cancelled') last.cancelled = true;
        }
        break;
      }
      default:
        break;
    }
  }

  /** Adds a line (stream code 0/1/2) to the current section. */
  pushLine(stream, message, ts, seq) {
    if (this.sections.length === 0) {
      this.sections.push(newSection(0, null, null, 'Log', ts, 0));
    }
    const s = this.sections.length - 1;
    this.text.push(message);
    this.stream.push(stream);
    this.time.push(ts);
    this.seq.push(seq);
    this.sec.push(s);
    this.sections[s].count += 1;
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
  return { index, phase, progress, title, start, end: null, first, count: 0, failed: false, cancelled: false };
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
