// The opt-in `job:logs` event: `subscribe:job { jobId, batch: true }` gets log
// lines as arrays of job:log payloads, with every event exactly once and in seq
// order, live, replayed, resumed and caught up after a full buffer.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  connect,
  closeSocket,
  closeAllSockets,
  emitAck,
  collect,
  waitFor,
  sleep,
  createJob,
  getJob,
  getJson,
  waitForJobFinished,
  blockUntilJobFinished,
  waitForMidStream,
  assertSeqSeries,
  assertEventShape,
  progressTable,
  projectId as newProjectId,
  DEFAULT_PIPELINES,
  SUCCESS_PHASES,
  JOB_EVENTS,
} from './helpers.mjs';

const PIPELINES = `${DEFAULT_PIPELINES}
[pipelines.flood]
description = "a pause, then 20000 lines of 1 KB (20 MB, more than loopback socket buffers hold) as fast as possible"
[pipelines.flood.steps]
prepare = "sleep 1"
build = '''seq 1 20000 | awk '{ printf "flood %d %01000d\\n", $1, 0 }' '''
`;

let server;

before(async () => {
  server = await startServer({ env: { MAX_CONCURRENT_JOBS: '4' }, pipelines: PIPELINES });
});

after(async () => {
  closeAllSockets();
  if (server) await server.stop();
});

/**
 * Records a batching subscriber's events in arrival order, each `job:logs` array
 * flattened into its lines; also counts the arrays and the plain job:log events.
 */
function collectBatched(socket) {
  const out = [];
  out.runs = [];
  out.plainLogs = 0;
  socket.on('job:logs', (lines) => {
    assert.ok(Array.isArray(lines), `job:logs carries an array, got ${JSON.stringify(lines)}`);
    out.runs.push(lines.length);
    for (const data of lines) out.push({ event: 'job:log', data });
  });
  socket.on('job:log', () => out.plainLogs++);
  for (const event of ['job:progress', 'job:completed', 'job:error']) {
    socket.on(event, (data) => out.push({ event, data }));
  }
  return out;
}

const strip = (e) => ({ event: e.event, data: e.data });

test('live: a batching subscriber gets every line in runs, in the same order as a per-line one', async () => {
  const projectId = newProjectId('batch');
  const lines = await connect(server.url);
  const runs = await connect(server.url);
  const perLine = collect(lines, JOB_EVENTS);
  const batched = collectBatched(runs);
  const jobId = await createJob(server.url, projectId, 'burst');
  // Both from seq 1: whatever was recorded before they subscribed is replayed.
  assert.equal((await emitAck(lines, 'subscribe:job', { jobId, since: 0 })).ok, true);
  const ack = await emitAck(runs, 'subscribe:job', { jobId, since: 0, batch: true });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  await waitFor(() => batched.some((e) => e.event === 'job:completed'), 60_000, { what: 'job:completed (batched)' });
  await waitFor(() => perLine.some((e) => e.event === 'job:completed'), 60_000, { what: 'job:completed (per line)' });
  await sleep(200);
  const job = await getJob(server.url, jobId);

  assert.equal(batched.plainLogs, 0, 'no job:log for a batching subscriber');
  assertSeqSeries(batched.map((e) => e.data.seq), 1, job.lastSeq, 'batched seqs in arrival order');
  for (const e of batched) assertEventShape(e.event, e.data, { jobId, projectId });
  assert.deepEqual(progressTable(batched), SUCCESS_PHASES);
  assert.deepEqual(batched.map(strip), perLine.map(strip), 'same events, same order, as job:log');
  const burst = batched.filter((e) => /^burst \d+ \d+$/.test(e.data.message ?? ''));
  assert.equal(burst.length, 3000, 'every burst line');
  assert.ok(
    Math.max(...batched.runs) > 1,
    `lines printed 300 at a time arrive in runs of more than one (runs: ${batched.runs.slice(0, 20)})`,
  );
  assert.ok(batched.runs.length < 3000, `${batched.runs.length} job:logs events for 3000+ lines`);
  closeSocket(lines);
  closeSocket(runs);
});

test('replay: since:0 mid-build sends history and live lines in runs, no gap, no duplicate', async () => {
  const jobId = await createJob(server.url, newProjectId('batch-mid'), 'burst');
  await waitForMidStream(server.url, jobId, 400);
  for (const transports of [['websocket'], ['polling']]) {
    const socket = await connect(server.url, { transports });
    const got = collectBatched(socket);
    const ack = await emitAck(socket, 'subscribe:job', { jobId, since: 0, batch: true });
    assert.equal(ack.ok, true);
    assert.equal(ack.recovered, true);
    await waitFor(() => got.some((e) => e.event === 'job:completed'), 60_000, { what: `job:completed (${transports})` });
    await sleep(200);
    const job = await getJob(server.url, jobId);
    assertSeqSeries(got.map((e) => e.data.seq), 1, job.lastSeq, `seqs over ${transports}`);
    assert.ok(got.runs.length < job.lastSeq / 5, `${got.runs.length} runs for ${job.lastSeq} events over ${transports}`);
    closeSocket(socket);
  }
  // A finished job replays from the store in runs too.
  await waitForJobFinished(server.url, jobId);
  const socket = await connect(server.url);
  const got = collectBatched(socket);
  const ack = await emitAck(socket, 'subscribe:job', { jobId, since: 100, batch: true });
  assert.equal(ack.ok, true);
  await waitFor(() => got.some((e) => e.event === 'job:completed'), 20_000, { what: 'stored replay' });
  assertSeqSeries(got.map((e) => e.data.seq), 101, ack.lastSeq, 'stored replay after since=100');
  assert.ok(Math.max(...got.runs) > 100, `stored lines come in long runs (longest ${Math.max(...got.runs)})`);
  closeSocket(socket);
});

test('resume: a dropped connection resumes with since, the union is exactly 1..lastSeq', async () => {
  const jobId = await createJob(server.url, newProjectId('batch-resume'), 'burst');
  const socket = await connect(server.url, { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300 });
  const got = collectBatched(socket);
  let drops = 0;
  socket.on('job:logs', () => {
    if ((drops === 0 && got.length >= 300) || (drops === 1 && got.length >= 1500)) {
      drops++;
      socket.io.engine.close();
    }
  });
  const lastSeen = () => got.reduce((m, e) => Math.max(m, e.data.seq), 0);
  const subscribe = () => emitAck(socket, 'subscribe:job', { jobId, since: lastSeen(), batch: true }).catch(() => null);
  socket.on('connect', subscribe);
  await subscribe();
  await waitFor(() => got.some((e) => e.event === 'job:completed'), 30_000, { what: 'job:completed after resumes' });
  await sleep(300);
  const job = await getJob(server.url, jobId);
  assert.equal(drops, 2, 'both drops happened');
  const seqs = got.map((e) => e.data.seq);
  assertSeqSeries([...seqs].sort((a, b) => a - b), 1, job.lastSeq, 'union of received seqs');
  assert.equal(seqs.length, job.lastSeq, 'no duplicates');
  closeSocket(socket);
});

test('catch-up: a batching client that stops reading misses nothing', async () => {
  // A 4-packet socket buffer and a client that blocks its event loop until a
  // 20 MB job has flooded to its end (more than the kernel's socket buffers
  // absorb): the server's queue fills, and it must catch the client up from history.
  const tight = await startServer({ env: { WEBSOCKET_MAX_BUFFER_SIZE: '4' }, pipelines: PIPELINES });
  try {
    const socket = await connect(tight.url);
    const got = collectBatched(socket);
    const jobId = await createJob(tight.url, newProjectId('flood'), 'flood');
    assert.equal((await emitAck(socket, 'subscribe:job', { jobId, since: 0, batch: true })).ok, true);
    await waitFor(() => got.some((e) => e.event === 'job:log'), 10_000, { what: 'the first lines' });
    blockUntilJobFinished(tight.url, jobId); // not reading
    await waitFor(() => got.some((e) => e.event === 'job:completed'), 60_000, { what: 'job:completed after catch-up' });
    await sleep(200);
    const job = await getJob(tight.url, jobId);
    assertSeqSeries(got.map((e) => e.data.seq), 1, job.lastSeq, 'every event once, in order');
    assert.equal(got.filter((e) => /^flood \d+ 0{1000}$/.test(e.data.message ?? '')).length, 20000);
    const health = await getJson(`${tight.url}/health`);
    assert.ok(health.body.delivery.lagged_catch_ups > 0, `the buffer filled: ${JSON.stringify(health.body.delivery)}`);
    closeSocket(socket);
  } finally {
    await tight.stop();
  }
});

test('batch must be a boolean; false is the per-line default', async () => {
  const socket = await connect(server.url);
  for (const batch of [1, 'yes', {}, []]) {
    const ack = await emitAck(socket, 'subscribe:job', { jobId: 'batch-bad', batch });
    assert.equal(ack.ok, false);
    assert.match(ack.error, /batch must be true or false/);
  }
  const jobId = await createJob(server.url, newProjectId('batch-false'), 'quick');
  await waitForJobFinished(server.url, jobId);
  const perLine = collect(socket, JOB_EVENTS);
  const runs = [];
  socket.on('job:logs', (l) => runs.push(l));
  const ack = await emitAck(socket, 'subscribe:job', { jobId, since: 0, batch: false });
  assert.equal(ack.ok, true);
  await waitFor(() => perLine.length >= ack.lastSeq, 10_000, { what: 'per-line replay' });
  assert.equal(runs.length, 0);
  assertSeqSeries(perLine.map((e) => e.data.seq), 1, ack.lastSeq);
  closeSocket(socket);
});
