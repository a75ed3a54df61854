// Shared helpers for the buildcast end-to-end suite.
//
// Every test file imports from here. The server binary comes from
// BUILDCAST_BIN, or the debug build of this repository.

import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { launchServer } from '../support/server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

export const BIN = process.env.BUILDCAST_BIN
  ? path.resolve(process.env.BUILDCAST_BIN)
  : path.resolve(here, '../../target/debug/buildcast');


// Default pipelines used by the suite. Kept small so the whole suite is fast.
export const DEFAULT_PIPELINES = `
[pipelines.quick]
description = "fast test pipeline"
timeout = "60s"
artifacts = ["out/*.txt"]
[pipelines.quick.steps]
prepare = "echo preparing"
install = "echo installing"
build = "mkdir -p out && for i in $(seq 1 5); do echo build line $i; done && echo result > out/result.txt"
test = "echo tests ok; echo warn 1>&2"

[pipelines.fail]
description = "pipeline whose build step fails"
timeout = "60s"
[pipelines.fail.steps]
prepare = "echo preparing"
install = "echo installing"
build = "echo about to fail; exit 3"
test = "echo never reached"

[pipelines.slow]
description = "slow build, about ten seconds"
timeout = "120s"
[pipelines.slow.steps]
prepare = "echo preparing"
build = "for i in $(seq 1 200); do echo slow $i; sleep 0.05; done"

[pipelines.burst]
description = "3000 log lines in bursts over a few seconds"
timeout = "120s"
[pipelines.burst.steps]
prepare = "echo preparing"
build = "for b in $(seq 1 10); do for i in $(seq 1 300); do echo burst $b $i; done; sleep 0.25; done"
test = "echo burst done"
`;

// The exact (status, progress) series of job:progress for a successful job.
export const SUCCESS_PHASES = [
  ['queued', 0],
  ['preparing', 10],
  ['installing', 30],
  ['building', 50],
  ['building', 70],
  ['completed', 90],
  ['completed', 100],
];

export const JOB_EVENTS = ['job:progress', 'job:log', 'job:completed', 'job:error'];

// ---------------------------------------------------------------------------
// Bookkeeping so every server, socket and temp dir is cleaned up and server
// output is shown when a test fails.

const liveServers = new Set();
let serversThisTest = new Set();
const liveSockets = new Set();
const tempDirs = new Set();

const MAX_LOG_CHARS = 400_000;

function dumpServerLog(server, why) {
  const lines = server.output().split('\n');
  const tail = lines.slice(-200).join('\n');
  process.stderr.write(
    `\n----- buildcast ${server.url ?? '(not listening)'} output (${why}), last ${Math.min(lines.length, 200)} lines -----\n` +
      `${tail}\n----- end of buildcast output -----\n`,
  );
}

// Safety net for files that forget to clean up: once all tests of a file have
// run, close every socket and stop every server so the runner can exit.
after(async () => {
  closeAllSockets();
  await Promise.all(
    [...liveServers].map((s) =>
      s.stop('SIGTERM', 5_000).catch(() => {
        s.kill();
      }),
    ),
  );
});

afterEach((t) => {
  if (t.passed === false) {
    const all = new Set([...serversThisTest, ...liveServers]);
    for (const s of all) dumpServerLog(s, `test "${t.name}" failed`);
  }
  serversThisTest = new Set([...liveServers]);
});

process.on('exit', () => {
  for (const s of liveSockets) {
    try {
      s.disconnect();
    } catch {}
  }
  for (const s of liveServers) {
    try {
      s.proc.kill('SIGKILL');
    } catch {}
  }
  for (const d of tempDirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {}
  }
});

// The runner stops a file that exceeds its timeout with a signal, which skips
// 'exit' handlers' normal path: clean up explicitly so no server outlives it.
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.once(sig, () => process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 })[sig]));
}

export function makeTempDir(prefix = 'buildcast-e2e-') {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function writePipelines(toml) {
  const dir = makeTempDir('buildcast-pipelines-');
  const file = path.join(dir, 'pipelines.toml');
  writeFileSync(file, toml);
  return file;
}

// Environment for a spawned server: a clean, predictable base.
export function serverEnv({ env = {}, pipelines = null, dataDir = null } = {}) {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? tmpdir(),
    HOST: '127.0.0.1',
    PORT: '0',
    DATA_DIR: dataDir ?? makeTempDir('buildcast-data-'),
    PIPELINES_FILE: writePipelines(pipelines ?? DEFAULT_PIPELINES),
    RUST_LOG: 'info',
    NO_COLOR: '1',
    ...env,
  };
}

/**
 * Spawn the server and wait until it listens (the shared launcher learns the
 * port from the server: tests/support/server.mjs).
 * @returns {Promise<{url:string, port:number, dataDir:string, proc:import('node:child_process').ChildProcess,
 *   stop:(signal?:string)=>Promise<number|string>, kill:()=>void, output:()=>string, exited:Promise<{code:number|null, signal:string|null}>}>}
 */
export function startServer({ env = {}, pipelines = null, dataDir = null, timeoutMs = 20_000 } = {}) {
  if (!existsSync(BIN)) {
    throw new Error(`buildcast binary not found at ${BIN}; run cargo build or set BUILDCAST_BIN`);
  }
  const fullEnv = serverEnv({ env, pipelines, dataDir });
  let buf = '';
  const append = (prefix, chunk) => {
    const text = chunk.toString();
    buf += text
      .split('\n')
      .map((l, i, a) => (i === a.length - 1 && l === '' ? '' : `${prefix}${l}`))
      .join('\n');
    if (buf.length > MAX_LOG_CHARS) buf = buf.slice(-MAX_LOG_CHARS);
  };
  // Run from an empty directory so no stray .env file is picked up.
  const { proc, ready } = launchServer({
    bin: BIN,
    env: fullEnv,
    cwd: makeTempDir('buildcast-cwd-'),
    timeoutMs,
    onStdout: (chunk) => append('[out] ', chunk),
    onStderr: (chunk) => append('[err] ', chunk),
  });
  const server = {
    url: null,
    port: null,
    dataDir: fullEnv.DATA_DIR,
    env: fullEnv,
    proc,
    stopping: false,
    output: () => buf,
  };
  server.exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      liveServers.delete(server);
      resolve({ code, signal });
    });
  });
  liveServers.add(server);
  serversThisTest.add(server);

  server.kill = () => {
    server.stopping = true;
    try {
      proc.kill('SIGKILL');
    } catch {}
  };
  server.stop = async (signal = 'SIGTERM', graceMs = 15_000) => {
    server.stopping = true;
    if (proc.exitCode !== null || proc.signalCode !== null) {
      return proc.exitCode ?? proc.signalCode;
    }
    proc.kill(signal);
    let timer;
    const res = await Promise.race([
      server.exited,
      new Promise((r) => (timer = setTimeout(() => r(null), graceMs))),
    ]);
    clearTimeout(timer);
    if (res === null) {
      proc.kill('SIGKILL');
      await server.exited;
      throw new Error(`buildcast did not exit within ${graceMs} ms of ${signal}`);
    }
    return res.code ?? res.signal;
  };
  proc.on('exit', (code, signal) => {
    if (server.url && !server.stopping) dumpServerLog(server, `unexpected exit: code ${code}, signal ${signal}`);
  });

  return ready.then(
    ({ port, url }) => {
      server.url = url;
      server.port = port;
      return server;
    },
    (err) => {
      server.kill();
      dumpServerLog(server, err.message);
      throw err;
    },
  );
}

/**
 * Run the binary expecting it to exit on its own (config errors).
 * @returns {Promise<{code:number|null, signal:string|null, stdout:string, stderr:string}>}
 */
export function runToExit(envOverrides, { timeoutMs = 15_000 } = {}) {
  const env = serverEnv({ env: envOverrides });
  for (const [k, v] of Object.entries(envOverrides)) if (v === undefined) delete env[k];
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, [], { env, cwd: makeTempDir('buildcast-cwd-'), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c) => (stdout += c));
    proc.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`process did not exit within ${timeoutMs} ms; stdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------
// Socket.IO helpers (client v4)

/** Create a socket.io-client 4 socket without waiting for it to connect. */
export function makeSocket(url, opts = {}) {
  const { reconnection = false, transports = ['websocket'], ...rest } = opts;
  const socket = io(url, {
    path: '/ws',
    forceNew: true,
    reconnection,
    transports,
    timeout: 10_000,
    ...rest,
  });
  liveSockets.add(socket);
  return socket;
}

/** Connect and resolve once the socket is connected. */
export function connect(url, opts = {}, timeoutMs = 10_000) {
  const socket = makeSocket(url, opts);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      socket.disconnect();
      reject(new Error(`socket did not connect within ${timeoutMs} ms`));
    }, timeoutMs);
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err) => {
      if (socket.io.opts.reconnection) return; // let it retry
      cleanup();
      socket.disconnect();
      reject(new Error(`connect_error: ${err?.message ?? err}`));
    };
    function cleanup() {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
    }
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  });
}

export function closeSocket(socket) {
  try {
    socket.disconnect();
  } catch {}
  liveSockets.delete(socket);
}

export function closeAllSockets() {
  for (const s of liveSockets) closeSocket(s);
}

/** Emit an event with an acknowledgement; payload `undefined` means "no payload at all". */
export function emitAck(socket, event, payload, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ack for ${event} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const cb = (res) => {
      clearTimeout(timer);
      resolve(res);
    };
    if (payload === undefined) socket.emit(event, cb);
    else socket.emit(event, payload, cb);
  });
}

/**
 * Record the given events in arrival order. Returns the array; call
 * `arr.stop()` to detach the listeners.
 */
export function collect(socket, events) {
  const out = [];
  const handlers = events.map((event) => {
    const h = (data) => out.push({ event, data, at: Date.now() });
    socket.on(event, h);
    return [event, h];
  });
  out.stop = () => {
    for (const [e, h] of handlers) socket.off(e, h);
  };
  return out;
}

export function waitForEvent(socket, event, predicate = () => true, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, handler);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${event}`));
    }, timeoutMs);
    function handler(data) {
      if (!predicate(data)) return;
      clearTimeout(timer);
      socket.off(event, handler);
      resolve(data);
    }
    socket.on(event, handler);
  });
}

export async function waitFor(predicate, timeoutMs = 10_000, { interval = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await predicate();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    }
    await sleep(interval);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// REST helpers

export async function getJson(url, init) {
  const res = await fetch(url, init);
  const text = await res.text();
  let body;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  return { status: res.status, headers: res.headers, body };
}

/** POST /api/jobs; returns { status, body }. */
export function postJob(url, projectId, pipeline) {
  return getJson(`${url}/api/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ projectId, pipeline }),
  });
}

/** POST /api/jobs and assert 201; returns the job id. */
export async function createJob(url, projectId, pipeline) {
  const res = await postJob(url, projectId, pipeline);
  assert.equal(res.status, 201, `POST /api/jobs ${pipeline}: ${JSON.stringify(res.body)}`);
  assert.equal(typeof res.body.jobId, 'string');
  return res.body.jobId;
}

export async function getJob(url, jobId) {
  const res = await getJson(`${url}/api/jobs/${encodeURIComponent(jobId)}`);
  assert.equal(res.status, 200, `GET job ${jobId}: ${JSON.stringify(res.body)}`);
  return res.body;
}

export const FINISHED = new Set(['completed', 'failed', 'cancelled']);

/** Waits until a running job has recorded at least `seq` events (and is not finished). */
export function waitForMidStream(url, jobId, seq, timeoutMs = 20_000) {
  return waitFor(
    async () => {
      const j = await getJob(url, jobId);
      return j.lastSeq >= seq && !FINISHED.has(j.status);
    },
    timeoutMs,
    { interval: 20, what: `job ${jobId} to be mid-stream (seq ${seq})` },
  );
}

export async function waitForJobFinished(url, jobId, timeoutMs = 60_000) {
  return waitFor(
    async () => {
      const job = await getJob(url, jobId);
      // Status reads "completed" from progress 90 on (collecting artifacts), so
      // a job is finished only once finishedAt is set too.
      return FINISHED.has(job.status) && job.finishedAt ? job : null;
    },
    timeoutMs,
    { interval: 100, what: `job ${jobId} to finish` },
  );
}

/**
 * Blocks this process's event loop until the job has finished: its sockets read
 * nothing meanwhile, like a frozen tab, however fast the job produces. (The
 * polling runs in a child process, waited for synchronously.)
 */
export function blockUntilJobFinished(url, jobId, timeoutMs = 60_000) {
  const poll = `
    const [url, id, ms, finished] = process.argv.slice(1);
    const end = Date.now() + Number(ms);
    for (;;) {
      const job = await (await fetch(url + '/api/jobs/' + encodeURIComponent(id))).json();
      if (JSON.parse(finished).includes(job.status) && job.finishedAt) break;
      if (Date.now() > end) { console.error('job ' + id + ' did not finish: ' + JSON.stringify(job)); process.exit(1); }
      await new Promise((r) => setTimeout(r, 100));
    }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', poll, url, jobId, String(timeoutMs), JSON.stringify([...FINISHED])], { encoding: 'utf8' });
  assert.equal(r.status, 0, `waiting for job ${jobId} to finish: ${r.stderr}`);
}

/** All recorded events of a job through the REST API, paging until done. */
export async function fetchAllEvents(url, jobId, limit = 1000) {
  const all = [];
  let since = 0;
  for (let i = 0; i < 10_000; i++) {
    const res = await getJson(`${url}/api/jobs/${encodeURIComponent(jobId)}/events?since=${since}&limit=${limit}`);
    assert.equal(res.status, 200, `GET events: ${JSON.stringify(res.body)}`);
    all.push(...res.body.events);
    if (res.body.events.length === 0 || res.body.nextSince >= res.body.lastSeq) break;
    assert.ok(res.body.nextSince > since, 'nextSince must advance');
    since = res.body.nextSince;
  }
  return all;
}

export async function health(url) {
  const res = await getJson(`${url}/health`);
  assert.equal(res.status, 200);
  return res.body;
}

// ---------------------------------------------------------------------------
// Assertions on event streams

/** Job events (job:*) of one job from a collected array. */
export function jobEvents(collected, jobId) {
  return collected.filter((e) => e.event.startsWith('job:') && e.data?.jobId === jobId);
}

/** Assert seqs are exactly from..to with no gap, duplicate or reordering. */
export function assertSeqSeries(seqs, from = 1, to = undefined, label = 'seq') {
  const expectedTo = to ?? from + seqs.length - 1;
  const expected = [];
  for (let i = from; i <= expectedTo; i++) expected.push(i);
  if (seqs.length !== expected.length || seqs.some((s, i) => s !== expected[i])) {
    const dup = seqs.filter((s, i) => seqs.indexOf(s) !== i);
    const set = new Set(seqs);
    const missing = expected.filter((s) => !set.has(s));
    assert.fail(
      `${label}: expected ${from}..${expectedTo} (${expected.length}), got ${seqs.length} values; ` +
        `missing ${JSON.stringify(missing.slice(0, 20))}${missing.length > 20 ? '…' : ''}, ` +
        `duplicates ${JSON.stringify(dup.slice(0, 20))}, first ${JSON.stringify(seqs.slice(0, 10))}`,
    );
  }
}

const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]00:00)$/;

/** Common shape checks for every server event. */
export function assertEventShape(event, data, { jobId, projectId } = {}) {
  assert.equal(typeof data, 'object', `${event} payload is an object`);
  assert.equal(typeof data.jobId, 'string', `${event}.jobId`);
  assert.equal(typeof data.projectId, 'string', `${event}.projectId`);
  assert.match(String(data.timestamp), RFC3339_UTC, `${event}.timestamp is RFC3339 UTC`);
  assert.ok(!Number.isNaN(Date.parse(data.timestamp)), `${event}.timestamp parses`);
  if (jobId) assert.equal(data.jobId, jobId, `${event}.jobId`);
  if (projectId) assert.equal(data.projectId, projectId, `${event}.projectId`);
  if (event.startsWith('job:')) assert.ok(Number.isInteger(data.seq) && data.seq >= 1, `${event}.seq is a positive integer`);
  switch (event) {
    case 'job:progress':
    case 'project:progress':
      for (const k of ['status', 'phase', 'message']) assert.equal(typeof data[k], 'string', `${event}.${k}`);
      assert.equal(typeof data.progress, 'number', `${event}.progress`);
      break;
    case 'job:log':
      assert.ok(['stdout', 'stderr', 'system'].includes(data.stream), `job:log.stream = ${data.stream}`);
      assert.equal(typeof data.message, 'string');
      assert.ok(!data.message.endsWith('\n'), 'log line has no trailing newline');
      break;
    case 'job:completed':
    case 'project:completed':
      assert.ok(['completed', 'failed', 'cancelled'].includes(data.status), `${event}.status = ${data.status}`);
      assert.equal(typeof data.success, 'boolean');
      assert.equal(typeof data.progress, 'number');
      assert.equal(typeof data.durationMs, 'number');
      assert.ok(Array.isArray(data.artifacts), `${event}.artifacts is an array`);
      break;
    case 'job:error':
      assert.equal(typeof data.phase, 'string');
      assert.equal(typeof data.message, 'string');
      break;
  }
}

/**
 * The (status/phase, progress) series of progress events. Status and phase are
 * expected to agree for a successful job; a disagreement shows as "status/phase".
 */
export function progressTable(events) {
  return events
    .filter((e) => e.event === 'job:progress' || e.event === 'project:progress')
    .map((e) => [e.data.status === e.data.phase ? e.data.status : `${e.data.status}/${e.data.phase}`, e.data.progress]);
}

let idCounter = 0;
/** A unique, valid project id. */
export function projectId(tag = 'p') {
  idCounter += 1;
  return `${tag}-${process.pid}-${Date.now().toString(36)}-${idCounter}`;
}

// ---------------------------------------------------------------------------
// A resumable follower: what a careful frontend does. On every (re)connect it
// subscribes with since = the highest seq it has seen (and the epoch it was
// given), and it keeps one payload per seq so tests can check that nothing was
// lost, doubled or changed.

/**
 * Follow `jobId` on `url`, resuming on every reconnect.
 * @returns the follower's state: `bySeq` (seq → {event, data}), `duplicates`
 *   (seqs received again), `mismatches` (seqs received again with other content),
 *   `acks`, `connects`, `completed`, `lastSeen`, `seqs()`, `socket`, `close()`.
 */
export function followResumable(url, jobId, { transports = ['websocket'], ...opts } = {}) {
  const socket = makeSocket(url, {
    transports,
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    randomizationFactor: 0.5,
    ...opts,
  });
  const state = {
    socket,
    jobId,
    bySeq: new Map(),
    received: 0,
    duplicates: [],
    mismatches: [],
    lastSeen: 0,
    epoch: undefined,
    acks: [],
    connects: 0,
    completed: null,
    lastAt: 0,
    resets: [],
  };
  // Events between a subscribe and its ack are the replay (and the first live
  // ones): kept apart until the ack says whether they continue what the client
  // had (`recovered: true`) or replace it (`recovered: false`: the whole history
  // under a new epoch), as a client following the README rebuilds its view.
  let pending = null;
  const keep = (into, event, data) => {
    const prev = into.get(data.seq);
    if (prev) {
      state.duplicates.push(data.seq);
      if (prev.event !== event || JSON.stringify(prev.data) !== JSON.stringify(data)) state.mismatches.push({ seq: data.seq, first: prev, again: { event, data } });
    } else {
      into.set(data.seq, { event, data, at: Date.now() });
    }
  };
  for (const event of JOB_EVENTS) {
    socket.on(event, (data) => {
      if (data?.jobId !== jobId) return;
      state.received += 1;
      state.lastAt = Date.now();
      keep(pending ?? state.bySeq, event, data);
      if (!pending) state.lastSeen = Math.max(state.lastSeen, data.seq);
      if (event === 'job:completed') state.completed = data;
    });
  }
  socket.on('connect', () => {
    state.connects += 1;
    const payload = { jobId, since: state.lastSeen };
    if (state.epoch) payload.epoch = state.epoch;
    const replay = new Map();
    pending = replay;
    socket.timeout(15_000).emit('subscribe:job', payload, (err, ack) => {
      state.acks.push({ payload, ack: ack ?? null, error: err?.message ?? null });
      if (ack?.epoch) state.epoch = ack.epoch;
      if (pending === replay) pending = null;
      if (ack?.recovered === false) {
        state.resets.push({ since: payload.since, reason: ack.reason, before: state.bySeq });
        state.bySeq = new Map();
        state.lastSeen = 0;
      }
      for (const [, { event, data }] of replay) keep(state.bySeq, event, data);
      for (const seq of replay.keys()) state.lastSeen = Math.max(state.lastSeen, seq);
    });
  });
  state.seqs = () => [...state.bySeq.keys()].sort((a, b) => a - b);
  state.close = () => closeSocket(socket);
  state.describe = () =>
    `connected=${socket.connected} connects=${state.connects} received=${state.received} distinct=${state.bySeq.size} ` +
    `lastSeen=${state.lastSeen} duplicates=${state.duplicates.length} completed=${!!state.completed} ` +
    `acks=${JSON.stringify(state.acks.slice(-4).map((a) => [a.payload.since, a.ack && { ok: a.ack.ok, lastSeq: a.ack.lastSeq, recovered: a.ack.recovered, reason: a.ack.reason, error: a.ack.error }, a.error]))}`;
  return state;
}

/** Assert that every payload a follower received equals the stored event with that seq. */
export function assertMatchesHistory(follower, history, label = 'client') {
  const bySeq = new Map(history.map((e) => [e.seq, e]));
  const problems = [];
  for (const [seq, { event, data }] of follower.bySeq) {
    const stored = bySeq.get(seq);
    if (!stored) problems.push(`${label}: seq ${seq} (${event} ${JSON.stringify(data.message ?? data.status)}) was seen but is not in the history`);
    else if (stored.event !== event || JSON.stringify(stored.data) !== JSON.stringify(data)) {
      problems.push(`${label}: seq ${seq} differs: seen ${event} ${JSON.stringify(data)}, stored ${stored.event} ${JSON.stringify(stored.data)}`);
    }
    if (problems.length >= 10) break;
  }
  assert.deepEqual(problems, [], `${label}: what the client saw is what the history holds`);
  assert.deepEqual(follower.mismatches.slice(0, 5), [], `${label}: one content per seq`);
}

// ---------------------------------------------------------------------------
// Redis, for suites that need a real redis-server (started on a free port).

export const REDIS_SERVER = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
const redisProcesses = new Set();
process.on('exit', () => {
  for (const p of redisProcesses) {
    try {
      p.kill('SIGKILL');
    } catch {}
  }
});
after(() => {
  for (const p of redisProcesses) p.kill('SIGKILL');
});

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/** Starts redis-server on `port` (a free one by default); resolves once it answers. */
export async function startRedis(port) {
  port ??= await freePort();
  const proc = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  redisProcesses.add(proc);
  const exited = new Promise((r) => proc.once('exit', r));
  await waitFor(
    () =>
      new Promise((resolve) => {
        const sock = net.connect(port, '127.0.0.1', () => {
          sock.end();
          resolve(true);
        });
        sock.on('error', () => resolve(false));
      }),
    10_000,
    { what: 'redis-server to listen' },
  );
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    /** SIGKILL: Redis dies without a word, as a crashed or partitioned one would. */
    async kill() {
      proc.kill('SIGKILL');
      redisProcesses.delete(proc);
      await exited;
    },
    /** The same, for a test that is done with it. */
    stop() {
      return this.kill();
    },
  };
}

// ---------------------------------------------------------------------------
// JWT (HS256 and friends) minted by hand, so tests can also forge bad ones.

const b64url = (o) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');

/** A JWT signed with HMAC (`alg` HS256/384/512) over `secret`; `header` adds header fields. */
export function mintHmacJwt(claims, secret, { alg = 'HS256', header = {}, exp = Math.floor(Date.now() / 1000) + 600 } = {}) {
  const head = b64url({ alg, typ: 'JWT', ...header });
  const body = b64url(exp === null ? claims : { exp, ...claims });
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg] ?? 'sha256';
  const sig = crypto.createHmac(hash, secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export { b64url };

// ---------------------------------------------------------------------------
// Raw Engine.IO v4 / Socket.IO v5, for sending what no well-behaved client would.

/**
 * A raw WebSocket to the Socket.IO endpoint. It answers pings, records every text
 * message and, after `open()`, is connected to the default namespace.
 */
export function rawWebSocket(url, { path: wsPath = '/ws/', query = {} } = {}) {
  const u = new URL(url);
  u.protocol = 'ws:';
  u.pathname = wsPath;
  u.search = new URLSearchParams({ EIO: '4', transport: 'websocket', ...query }).toString();
  const ws = new WebSocket(u.toString());
  const raw = { ws, messages: [], closed: false, closeCode: null, error: null, answerPings: true };
  const waiters = new Set();
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? data : data.toString();
    if (text === '2' && raw.answerPings && ws.readyState === WebSocket.OPEN) ws.send('3');
    raw.messages.push(text);
    for (const w of waiters) w();
  });
  ws.on('error', (e) => {
    raw.error = e;
  });
  raw.closedPromise = new Promise((resolve) =>
    ws.on('close', (code) => {
      raw.closed = true;
      raw.closeCode = code;
      for (const w of waiters) w();
      resolve(code);
    }),
  );
  /** Resolves with the first message (from index `from`) matching `pred`, or null on close/timeout. */
  raw.next = (pred, { from = 0, timeoutMs = 5_000 } = {}) =>
    new Promise((resolve) => {
      const check = () => {
        const m = raw.messages.slice(from).find((x) => typeof x === 'string' && pred(x));
        if (m !== undefined || raw.closed) {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(m ?? null);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        resolve(null);
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  raw.send = (text) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(text);
  };
  /** Engine.IO handshake, then CONNECT to `/` (with `auth` if given). */
  raw.open = async (auth) => {
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const hello = await raw.next((m) => m.startsWith('0{'));
    assert.ok(hello, 'Engine.IO open packet');
    const from = raw.messages.length;
    raw.send(auth ? `40${JSON.stringify(auth)}` : '40');
    const connected = await raw.next((m) => m.startsWith('40') || m.startsWith('44'), { from });
    assert.ok(connected?.startsWith('40{'), `Socket.IO CONNECT answered: ${connected}`);
    return raw;
  };
  let ackId = 1000;
  /** Sends `42<id>[event, ...args]` and resolves with the ack's arguments, or null. */
  raw.emitAck = async (event, args = [], { timeoutMs = 3_000, encoded = null } = {}) => {
    const id = ackId++;
    const from = raw.messages.length;
    raw.send(`42${id}${encoded ?? JSON.stringify([event, ...args])}`);
    const ack = await raw.next((m) => m.startsWith(`43${id}[`), { from, timeoutMs });
    return ack === null ? null : JSON.parse(ack.slice(`43${id}`.length));
  };
  raw.close = () => {
    try {
      ws.terminate();
    } catch {}
  };
  liveRaw.add(raw);
  raw.closedPromise.then(() => liveRaw.delete(raw));
  return raw;
}

const liveRaw = new Set();
after(() => {
  for (const r of liveRaw) r.close();
});

/** An Engine.IO polling session: `post(body)` and `get()` return {status, text}. */
export async function rawPollingSession(url, { path: wsPath = '/ws/' } = {}) {
  const base = `${url}${wsPath}?EIO=4&transport=polling`;
  const open = await fetch(base);
  const text = await open.text();
  assert.equal(open.status, 200, `polling handshake: ${text}`);
  const sid = JSON.parse(text.slice(1)).sid;
  const at = `${base}&sid=${encodeURIComponent(sid)}`;
  return {
    sid,
    async post(body, headers = { 'content-type': 'text/plain;charset=UTF-8' }) {
      const res = await fetch(at, { method: 'POST', body, headers });
      return { status: res.status, text: await res.text() };
    },
    async get(signal) {
      const res = await fetch(at, { signal });
      return { status: res.status, text: await res.text() };
    },
  };
}

// ---------------------------------------------------------------------------
// Following without Socket.IO (streams.test.mjs, the browser stream test)

/** Pipelines of the stream tests: 5,000 lines in bursts, coloured lines, a slow build. */
export const STREAM_PIPELINES = `${DEFAULT_PIPELINES}
[pipelines.lines5k]
description = "5000 lines in ten bursts"
timeout = "120s"
[pipelines.lines5k.steps]
build = "for b in $(seq 0 9); do for i in $(seq 1 500); do echo \\"line $((b * 500 + i))\\"; done; sleep 0.2; done"

[pipelines.ansi]
description = "coloured lines on stdout and stderr"
timeout = "60s"
[pipelines.ansi.steps]
build = '''printf '\\033[1;32mgreen\\033[0m ok\\n'; printf '\\033[31mred\\033[0m err\\n' 1>&2'''
`;

/**
 * Runs a program to its end; resolves { code, signal, stdout, stderr }.
 * `onStdout` sees each chunk as it comes.
 */
export function runProgram(cmd, args, { env = process.env, timeoutMs = 120_000, onStdout } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c) => {
      stdout += c.toString();
      onStdout?.(c.toString(), proc);
    });
    proc.stderr.on('data', (c) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not end within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    proc.on('error', reject);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Parses a whole Server-Sent Events text into [{ event, id, data }]. */
export function parseSse(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const msg = { event: 'message', id: undefined, data: '' };
    let any = false;
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'event') msg.event = value;
      else if (field === 'id') msg.id = value;
      else if (field === 'data') msg.data += (msg.data ? '\n' : '') + value;
      else continue;
      any = true;
    }
    if (any && (msg.data || msg.event !== 'message')) out.push(msg);
  }
  return out;
}

/** The log lines of a job as `GET /api/jobs/{id}/log` gives them. */
export async function fetchLog(url, jobId) {
  const res = await fetch(`${url}/api/jobs/${encodeURIComponent(jobId)}/log`);
  assert.equal(res.status, 200);
  return (await res.text()).split('\n').filter((l) => l !== '');
}

/**
 * A long-polling session that connects to the namespace (with `auth`, if given),
 * then never polls again; returns its sid and what its polls answered up to the
 * CONNECT answer (`40…` or `44…`). A heartbeat ping (`2`) may come first on a busy
 * machine (the CONNECT answer waits for the connect middleware): it polls again.
 */
export async function abandonedPolling(url, auth = null) {
  const base = `${url}/ws/?EIO=4&transport=polling`;
  const open = await (await fetch(base)).text();
  const sid = JSON.parse(open.slice(open.indexOf('{'))).sid;
  const post = await fetch(`${base}&sid=${sid}`, {
    method: 'POST',
    headers: { 'content-type': 'text/plain;charset=UTF-8' },
    body: auth ? `40${JSON.stringify(auth)}` : '40',
  });
  if (post.status !== 200) throw new Error(`polling POST answered ${post.status}`);
  let ack = '';
  for (let polls = 0; polls < 5 && !/(^|\x1e)4[04]/.test(ack); polls += 1) {
    ack += `${await (await fetch(`${base}&sid=${sid}`)).text()}\x1e`;
  }
  return { sid, ack };
}
