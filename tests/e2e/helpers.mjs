// Shared helpers for the buildcast end-to-end suite.
//
// Every test file imports from here. The server binary comes from
// BUILDCAST_BIN, or the debug build of this repository.

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

const here = path.dirname(fileURLToPath(import.meta.url));

export const BIN = process.env.BUILDCAST_BIN
  ? path.resolve(process.env.BUILDCAST_BIN)
  : path.resolve(here, '../../target/debug/buildcast');

export const LISTEN_RE = /listening on (http:\/\/[0-9.:]+)/;

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
 * Spawn the server and wait until it says it is listening.
 * @returns {Promise<{url:string, port:number, dataDir:string, proc:import('node:child_process').ChildProcess,
 *   stop:(signal?:string)=>Promise<number|string>, kill:()=>void, output:()=>string, exited:Promise<{code:number|null, signal:string|null}>}>}
 */
export function startServer({ env = {}, pipelines = null, dataDir = null, timeoutMs = 20_000 } = {}) {
  if (!existsSync(BIN)) {
    throw new Error(`buildcast binary not found at ${BIN}; run cargo build or set BUILDCAST_BIN`);
  }
  const fullEnv = serverEnv({ env, pipelines, dataDir });
  // Run from an empty directory so no stray .env file is picked up.
  const proc = spawn(BIN, [], { env: fullEnv, cwd: makeTempDir('buildcast-cwd-'), stdio: ['ignore', 'pipe', 'pipe'] });
  let buf = '';
  const append = (prefix, chunk) => {
    const text = chunk.toString();
    buf += text
      .split('\n')
      .map((l, i, a) => (i === a.length - 1 && l === '' ? '' : `${prefix}${l}`))
      .join('\n');
    if (buf.length > MAX_LOG_CHARS) buf = buf.slice(-MAX_LOG_CHARS);
  };
  let stdoutBuf = '';
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

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      server.kill();
      dumpServerLog(server, 'startup timeout');
      reject(new Error(`buildcast did not print "listening on" within ${timeoutMs} ms`));
    }, timeoutMs);
    let ready = false;
    proc.stdout.on('data', (chunk) => {
      append('[out] ', chunk);
      if (ready) return;
      stdoutBuf += chunk.toString();
      const m = stdoutBuf.match(LISTEN_RE);
      if (m) {
        ready = true;
        clearTimeout(timer);
        server.url = m[1];
        server.port = Number(new URL(m[1]).port);
        resolve(server);
      }
    });
    proc.stderr.on('data', (chunk) => append('[err] ', chunk));
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.on('exit', (code, signal) => {
      if (!ready) {
        clearTimeout(timer);
        dumpServerLog(server, 'exited before listening');
        reject(new Error(`buildcast exited (code ${code}, signal ${signal}) before listening`));
      } else if (!server.stopping) {
        dumpServerLog(server, `unexpected exit: code ${code}, signal ${signal}`);
      }
    });
  });
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
