// Core realtime behaviour: transports, job and project rooms, failures,
// cancellation, CORS, /health, many clients, input validation, config errors.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import {
  startServer,
  runToExit,
  makeTempDir,
  writePipelines,
  connect,
  makeSocket,
  closeSocket,
  closeAllSockets,
  emitAck,
  collect,
  waitFor,
  sleep,
  getJson,
  postJob,
  createJob,
  getJob,
  waitForJobFinished,
  health,
  jobEvents,
  assertSeqSeries,
  assertEventShape,
  progressTable,
  projectId as newProjectId,
  SUCCESS_PHASES,
  JOB_EVENTS,
  mintHmacJwt,
} from './helpers.mjs';

let server;

before(async () => {
  server = await startServer({ env: { MAX_CONCURRENT_JOBS: '8' } });
});

after(async () => {
  closeAllSockets();
  if (server) await server.stop();
});

/** Subscribe from the start of a job and wait until its job:completed arrives. */
async function followJob(socket, jobId, timeoutMs = 30_000) {
  const got = collect(socket, JOB_EVENTS);
  const ack = await emitAck(socket, 'subscribe:job', { jobId, since: 0 }, 15_000);
  assert.equal(ack.ok, true, `subscribe:job ack: ${JSON.stringify(ack)}`);
  await waitFor(() => got.some((e) => e.event === 'job:completed' && e.data.jobId === jobId), timeoutMs, {
    what: `job:completed for ${jobId}`,
  });
  // Anything arriving after the final event would be a bug too.
  await sleep(150);
  got.stop();
  return { ack, events: jobEvents(got, jobId) };
}

/** Everything a user expects to see for a successful `quick` job. */
function assertQuickJob(events, jobId, projectId) {
  for (const e of events) assertEventShape(e.event, e.data, { jobId, projectId });
  assertSeqSeries(
    events.map((e) => e.data.seq),
    1,
    undefined,
    'job event seqs',
  );

  assert.deepEqual(progressTable(events), SUCCESS_PHASES, 'job:progress (status, progress) series');

  const logs = events.filter((e) => e.event === 'job:log');
  const stdout = logs.filter((e) => e.data.stream === 'stdout').map((e) => e.data.message);
  const stderr = logs.filter((e) => e.data.stream === 'stderr').map((e) => e.data.message);
  const buildLines = stdout.filter((m) => m.startsWith('build line '));
  assert.deepEqual(buildLines, [1, 2, 3, 4, 5].map((i) => `build line ${i}`), 'every build line, in order');
  for (const line of ['preparing', 'installing', 'tests ok']) {
    assert.ok(stdout.includes(line), `stdout log "${line}" present in ${JSON.stringify(stdout)}`);
  }
  assert.ok(stderr.includes('warn'), `stderr log "warn" present in ${JSON.stringify(stderr)}`);
  assert.ok(stdout.indexOf('preparing') < stdout.indexOf('installing'), 'prepare output before install output');
  assert.ok(stdout.indexOf('installing') < stdout.indexOf('build line 1'), 'install output before build output');
  assert.ok(stdout.indexOf('build line 5') < stdout.indexOf('tests ok'), 'build output before test output');

  // Build output is streamed while the job is in its building phase.
  const idx = (pred) => events.findIndex(pred);
  const building50 = idx((e) => e.event === 'job:progress' && e.data.status === 'building' && e.data.progress === 50);
  const firstBuildLine = idx((e) => e.event === 'job:log' && e.data.message === 'build line 1');
  const lastBuildLine = idx((e) => e.event === 'job:log' && e.data.message === 'build line 5');
  const completed90 = idx((e) => e.event === 'job:progress' && e.data.progress === 90);
  assert.ok(building50 < firstBuildLine && lastBuildLine < completed90, 'build lines arrive between building 50 and completed 90');

  assert.equal(events.filter((e) => e.event === 'job:error').length, 0, 'no job:error');
  const last = events.at(-1);
  assert.equal(last.event, 'job:completed', 'job:completed is the last event');
  assert.equal(events.filter((e) => e.event === 'job:completed').length, 1, 'exactly one job:completed');
  assert.equal(last.data.status, 'completed');
  assert.equal(last.data.success, true);
  assert.equal(last.data.progress, 100);
  assert.ok(last.data.durationMs >= 0);
  assert.deepEqual(last.data.artifacts, ['result.txt']);
}

test('websocket: a quick job streams the exact phase table, every log line and a successful completion', async () => {
  const projectId = newProjectId('ws');
  const jobId = await createJob(server.url, projectId, 'quick');
  const socket = await connect(server.url, { transports: ['websocket'] });
  assert.equal(socket.io.engine.transport.name, 'websocket');
  const { ack, events } = await followJob(socket, jobId);
  assert.equal(ack.job?.jobId, jobId, 'ack carries the job state');
  assertQuickJob(events, jobId, projectId);

  const job = await getJob(server.url, jobId);
  assert.equal(job.status, 'completed');
  assert.equal(job.progress, 100);
  assert.equal(job.projectId, projectId);
  assert.equal(job.pipeline, 'quick');
  assert.deepEqual(job.artifacts, ['result.txt']);
  assert.equal(job.lastSeq, events.at(-1).data.seq, 'REST lastSeq equals the last streamed seq');
  assert.ok(job.createdAt && job.startedAt && job.finishedAt, 'timestamps set');
  closeSocket(socket);
});

test('polling only: the same quick job arrives complete over long-polling', async () => {
  const projectId = newProjectId('poll');
  const socket = await connect(server.url, { transports: ['polling'] });
  assert.equal(socket.io.engine.transport.name, 'polling');
  const jobId = await createJob(server.url, projectId, 'quick');
  const { events } = await followJob(socket, jobId);
  assertQuickJob(events, jobId, projectId);
  assert.equal(socket.io.engine.transport.name, 'polling', 'never left polling');
  closeSocket(socket);
});

test('polling upgrades to websocket and events keep flowing', async () => {
  const projectId = newProjectId('upg');
  const socket = await connect(server.url, { transports: ['polling', 'websocket'], upgrade: true });
  await waitFor(() => socket.io.engine.transport.name === 'websocket', 10_000, { what: 'upgrade to websocket' });
  const jobId = await createJob(server.url, projectId, 'quick');
  const { events } = await followJob(socket, jobId);
  assertQuickJob(events, jobId, projectId);
  assert.equal(socket.io.engine.transport.name, 'websocket');
  closeSocket(socket);
});

test('two clients on one job receive every event in the same order', async () => {
  const projectId = newProjectId('two');
  const jobId = await createJob(server.url, projectId, 'burst');
  const a = await connect(server.url);
  const b = await connect(server.url, { transports: ['polling', 'websocket'] });
  const [ra, rb] = await Promise.all([followJob(a, jobId, 60_000), followJob(b, jobId, 60_000)]);
  const key = (e) => `${e.event}#${e.data.seq}#${e.data.message ?? ''}`;
  assertSeqSeries(ra.events.map((e) => e.data.seq), 1, undefined, 'client A seqs');
  assertSeqSeries(rb.events.map((e) => e.data.seq), 1, undefined, 'client B seqs');
  assert.deepEqual(rb.events.map(key), ra.events.map(key), 'same events in the same order');
  const burstLines = ra.events.filter((e) => e.event === 'job:log' && /^burst \d+ \d+$/.test(e.data.message));
  assert.equal(burstLines.length, 3000, 'all 3000 burst lines');
  const job = await getJob(server.url, jobId);
  assert.equal(job.lastSeq, ra.events.at(-1).data.seq);
  closeSocket(a);
  closeSocket(b);
});

test('plain subscribe by id gets live events with no gap after the ack', async () => {
  const projectId = newProjectId('plain');
  const jobId = await createJob(server.url, projectId, 'slow');
  const socket = await connect(server.url);
  const got = collect(socket, JOB_EVENTS);
  // Let the job get going so the subscription starts mid-stream.
  await waitFor(async () => (await getJob(server.url, jobId)).lastSeq >= 10, 20_000, { what: 'job to emit 10 events' });
  const ack = await emitAck(socket, 'subscribe:job', jobId);
  assert.equal(ack.ok, true);
  assert.equal(ack.job?.jobId, jobId);
  assert.ok(Number.isInteger(ack.lastSeq) && ack.lastSeq >= 10, `ack.lastSeq ${ack.lastSeq}`);
  await waitFor(() => got.some((e) => e.event === 'job:completed'), 40_000, { what: 'job:completed' });
  const seqs = got.map((e) => e.data.seq);
  assert.ok(seqs.length > 0);
  assert.ok(seqs[0] <= ack.lastSeq + 1, `first live seq ${seqs[0]} follows ack.lastSeq ${ack.lastSeq} without a gap`);
  assertSeqSeries(seqs, seqs[0], undefined, 'live seqs');
  assert.equal((await getJob(server.url, jobId)).lastSeq, seqs.at(-1));
  closeSocket(socket);
});

test('unsubscribe:job stops delivery while the job keeps running', async () => {
  const projectId = newProjectId('unsub');
  const jobId = await createJob(server.url, projectId, 'slow');
  const a = await connect(server.url);
  const control = await connect(server.url);
  const gotA = collect(a, JOB_EVENTS);
  const gotC = collect(control, JOB_EVENTS);
  assert.equal((await emitAck(a, 'subscribe:job', { jobId, since: 0 })).ok, true);
  assert.equal((await emitAck(control, 'subscribe:job', { jobId, since: 0 })).ok, true);
  const slowLines = (arr) => arr.filter((e) => e.event === 'job:log' && e.data.message.startsWith('slow ')).length;
  await waitFor(() => slowLines(gotA) >= 10, 20_000, { what: '10 slow lines on client A' });

  const ack = await emitAck(a, 'unsubscribe:job', jobId);
  assert.deepEqual(ack.ok, true, `unsubscribe ack ${JSON.stringify(ack)}`);
  await sleep(300);
  const countA = gotA.length;
  const countC = gotC.length;
  await sleep(2_000);
  assert.ok(gotC.length >= countC + 10, `control client kept receiving (${countC} -> ${gotC.length})`);
  assert.equal(gotA.length, countA, 'unsubscribed client received nothing more');
  assert.ok(!gotA.some((e) => e.event === 'job:completed'));
  assert.ok(a.connected, 'unsubscribed client is still connected');

  const cancel = await getJson(`${server.url}/api/jobs/${jobId}/cancel`, { method: 'POST' });
  assert.equal(cancel.status, 202);
  await waitFor(() => gotC.some((e) => e.event === 'job:completed'), 20_000, { what: 'control job:completed' });
  await sleep(200);
  assert.equal(gotA.length, countA, 'unsubscribed client did not get the completion either');
  closeSocket(a);
  closeSocket(control);
});

test('project subscriber receives progress and completion of its project only', async () => {
  const mine = newProjectId('mine');
  const other = newProjectId('other');
  const socket = await connect(server.url);
  const got = collect(socket, ['project:progress', 'project:completed', ...JOB_EVENTS]);
  const ack = await emitAck(socket, 'subscribe:project', mine);
  assert.equal(ack.ok, true, JSON.stringify(ack));
  assert.deepEqual(ack.jobs, [], 'new project has no jobs');

  const j1 = await createJob(server.url, mine, 'quick');
  const j2 = await createJob(server.url, mine, 'quick');
  const j3 = await createJob(server.url, other, 'quick');
  const doneFor = (id) => got.some((e) => e.event === 'project:completed' && e.data.jobId === id);
  await waitFor(() => doneFor(j1) && doneFor(j2), 30_000, { what: 'project:completed for both jobs' });
  await waitForJobFinished(server.url, j3);
  await sleep(300);

  for (const e of got) {
    assert.ok(e.event.startsWith('project:'), `only project events without a job subscription, got ${e.event}`);
    assertEventShape(e.event, e.data, { projectId: mine });
  }
  assert.ok(!got.some((e) => e.data.jobId === j3), 'nothing from the other project');
  for (const id of [j1, j2]) {
    const evs = got.filter((e) => e.data.jobId === id);
    assert.deepEqual(progressTable(evs), SUCCESS_PHASES, `project:progress series of ${id}`);
    const completed = evs.filter((e) => e.event === 'project:completed');
    assert.equal(completed.length, 1);
    assert.equal(completed[0].data.status, 'completed');
    assert.equal(completed[0].data.success, true);
    assert.deepEqual(completed[0].data.artifacts, ['result.txt']);
    assert.equal(evs.at(-1).event, 'project:completed', 'completion is the last project event of the job');
  }

  // A fresh project subscription lists the project's jobs, newest first.
  const again = await connect(server.url);
  const ack2 = await emitAck(again, 'subscribe:project', mine);
  assert.equal(ack2.ok, true);
  assert.deepEqual(ack2.jobs.map((j) => j.jobId), [j2, j1], 'jobs newest first');
  assert.ok(ack2.jobs.every((j) => j.status === 'completed' && j.projectId === mine));

  // unsubscribe:project stops project events.
  const un = await emitAck(socket, 'unsubscribe:project', mine);
  assert.equal(un.ok, true);
  const before = got.length;
  const j4 = await createJob(server.url, mine, 'quick');
  await waitForJobFinished(server.url, j4);
  await sleep(300);
  assert.equal(got.length, before, 'no project events after unsubscribe:project');
  closeSocket(socket);
  closeSocket(again);
});

test('failing build step: job:error for the build phase, then job:completed failed', async () => {
  const projectId = newProjectId('fail');
  const jobId = await createJob(server.url, projectId, 'fail');
  const socket = await connect(server.url);
  const { events } = await followJob(socket, jobId);
  for (const e of events) assertEventShape(e.event, e.data, { jobId, projectId });
  assertSeqSeries(events.map((e) => e.data.seq), 1, undefined, 'seqs');
  const logs = events.filter((e) => e.event === 'job:log').map((e) => e.data.message);
  assert.ok(logs.includes('about to fail'), 'output before the failure is streamed');
  assert.ok(!logs.includes('never reached'), 'later steps do not run');
  const errors = events.filter((e) => e.event === 'job:error');
  assert.equal(errors.length, 1, 'exactly one job:error');
  assert.equal(errors[0].data.phase, 'building');
  assert.ok(errors[0].data.message.length > 0);
  const last = events.at(-1);
  assert.equal(last.event, 'job:completed');
  assert.ok(errors[0].data.seq < last.data.seq, 'job:error before job:completed');
  assert.equal(last.data.success, false);
  assert.equal(last.data.status, 'failed');
  const job = await getJob(server.url, jobId);
  assert.equal(job.status, 'failed');
  closeSocket(socket);
});

test('cancel via REST mid-build ends the job as cancelled; cancelling again is 409', async () => {
  const projectId = newProjectId('cancel');
  const jobId = await createJob(server.url, projectId, 'slow');
  const socket = await connect(server.url);
  const got = collect(socket, JOB_EVENTS);
  assert.equal((await emitAck(socket, 'subscribe:job', { jobId, since: 0 })).ok, true);
  const slowLines = () => got.filter((e) => e.event === 'job:log' && e.data.message.startsWith('slow ')).length;
  await waitFor(() => slowLines() >= 5, 20_000, { what: '5 slow lines' });

  const res = await getJson(`${server.url}/api/jobs/${jobId}/cancel`, { method: 'POST' });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  await waitFor(() => got.some((e) => e.event === 'job:completed'), 10_000, { what: 'job:completed after cancel' });
  const completed = got.find((e) => e.event === 'job:completed').data;
  assert.equal(completed.status, 'cancelled');
  assert.equal(completed.success, false);
  await sleep(700);
  const afterCancel = slowLines();
  await sleep(500);
  assert.equal(slowLines(), afterCancel, 'build output stops after cancellation');
  assert.ok(afterCancel < 200, `build did not run to the end (${afterCancel} lines)`);
  assert.equal(got.at(-1).event, 'job:completed', 'job:completed is the last event');
  assertSeqSeries(got.map((e) => e.data.seq), 1, undefined, 'seqs');

  const job = await getJob(server.url, jobId);
  assert.equal(job.status, 'cancelled');
  assert.ok(job.finishedAt);

  const again = await getJson(`${server.url}/api/jobs/${jobId}/cancel`, { method: 'POST' });
  assert.equal(again.status, 409, JSON.stringify(again.body));
  assert.equal(typeof again.body?.error, 'string');

  const quick = await createJob(server.url, projectId, 'quick');
  await waitForJobFinished(server.url, quick);
  const finished = await getJson(`${server.url}/api/jobs/${quick}/cancel`, { method: 'POST' });
  assert.equal(finished.status, 409, 'cancel of a completed job');

  const unknown = await getJson(`${server.url}/api/jobs/no-such-job-id/cancel`, { method: 'POST' });
  assert.equal(unknown.status, 404);
  closeSocket(socket);
});

test('CORS: allowed origins get Access-Control-Allow-Origin, others do not', async (t) => {
  const s = await startServer({
    env: { WEBSOCKET_CORS_ORIGIN: 'https://app.example.com,https://admin.example.com' },
  });
  t.after(() => s.stop());
  const check = async (origin, p, init = {}) => {
    const res = await fetch(`${s.url}${p}`, { ...init, headers: { Origin: origin, ...(init.headers ?? {}) } });
    await res.arrayBuffer();
    return res.headers.get('access-control-allow-origin');
  };
  const handshake = '/ws/?EIO=4&transport=polling';
  for (const origin of ['https://app.example.com', 'https://admin.example.com']) {
    assert.equal(await check(origin, handshake), origin, `socket.io handshake for ${origin}`);
    assert.equal(await check(origin, '/api/jobs'), origin, `/api/jobs for ${origin}`);
    const pre = await check(origin, '/api/jobs', {
      method: 'OPTIONS',
      headers: { 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
    });
    assert.equal(pre, origin, `preflight for ${origin}`);
  }
  for (const origin of ['https://evil.example.com', 'https://app.example.com.evil.example.com', 'http://app.example.com']) {
    assert.equal(await check(origin, handshake), null, `no ACAO on handshake for ${origin}`);
    assert.equal(await check(origin, '/api/jobs'), null, `no ACAO on /api/jobs for ${origin}`);
    const pre = await check(origin, '/api/jobs', {
      method: 'OPTIONS',
      headers: { 'Access-Control-Request-Method': 'POST' },
    });
    assert.equal(pre, null, `no ACAO on preflight for ${origin}`);
  }
});

test('CORS: a wildcard origin allows any origin', async (t) => {
  const s = await startServer({ env: { WEBSOCKET_CORS_ORIGIN: '*' } });
  t.after(() => s.stop());
  const res = await fetch(`${s.url}/api/jobs`, { headers: { Origin: 'https://anything.example.org' } });
  await res.arrayBuffer();
  const acao = res.headers.get('access-control-allow-origin');
  assert.ok(acao === '*' || acao === 'https://anything.example.org', `ACAO = ${acao}`);
});

test('/health counts connected clients up and down across transports', async (t) => {
  const s = await startServer();
  t.after(() => s.stop());
  const expectCount = (n) =>
    waitFor(async () => (await health(s.url)).websocket.connected_clients === n, 5_000, {
      what: `connected_clients == ${n}`,
    });
  const h0 = await health(s.url);
  assert.equal(h0.status, 'ok');
  assert.equal(h0.websocket.enabled, true);
  assert.equal(h0.websocket.connected_clients, 0);

  const c1 = await connect(s.url, { transports: ['websocket'] });
  await expectCount(1);
  const c2 = await connect(s.url, { transports: ['polling'] });
  await expectCount(2);
  const c3 = await connect(s.url, { transports: ['polling', 'websocket'] });
  await expectCount(3);
  // Stays at 3 (no double counting after the upgrade).
  await waitFor(() => c3.io.engine.transport.name === 'websocket', 5_000, { what: 'upgrade' });
  await sleep(300);
  assert.equal((await health(s.url)).websocket.connected_clients, 3);

  closeSocket(c2);
  await expectCount(2);
  closeSocket(c1);
  await expectCount(1);
  // An abrupt drop (transport closed without a socket.io disconnect) counts down too.
  c3.io.engine.close();
  await expectCount(0);
  closeSocket(c3);
});

test('WEBSOCKET_ENABLED=false: no socket.io endpoint, REST still works, /health says disabled', async (t) => {
  const s = await startServer({ env: { WEBSOCKET_ENABLED: 'false' } });
  t.after(() => s.stop());
  const h = await health(s.url);
  assert.equal(h.status, 'ok');
  assert.equal(h.websocket.enabled, false);
  await assert.rejects(connect(s.url, { transports: ['websocket'] }, 5_000));
  await assert.rejects(connect(s.url, { transports: ['polling'] }, 5_000));
  const hs = await fetch(`${s.url}/ws/?EIO=4&transport=polling`);
  await hs.arrayBuffer();
  assert.notEqual(hs.status, 200, 'handshake is not served');
  const jobId = await createJob(s.url, newProjectId('nows'), 'quick');
  const job = await waitForJobFinished(s.url, jobId);
  assert.equal(job.status, 'completed');
});

test('WEBSOCKET_PATH moves the socket.io endpoint', async (t) => {
  const s = await startServer({ env: { WEBSOCKET_PATH: '/realtime' } });
  t.after(() => s.stop());
  const socket = await connect(s.url, { path: '/realtime' });
  const jobId = await createJob(s.url, newProjectId('path'), 'quick');
  const { events } = await followJob(socket, jobId);
  assert.equal(events.at(-1).data.status, 'completed');
  closeSocket(socket);
  await assert.rejects(connect(s.url, { path: '/ws' }, 3_000), 'old path no longer serves socket.io');
});

test('1000 websocket clients subscribing on connect all get the complete gap-free series', async (t) => {
  const s = await startServer();
  t.after(() => s.stop());
  const N = 1000;
  const BATCH = 100;
  const projectId = newProjectId('many');
  const jobId = await createJob(s.url, projectId, 'slow');
  const clients = [];
  for (let i = 0; i < N; i += BATCH) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + BATCH); j++) {
      const state = { seqs: [], done: false, completed: null, socket: null, foreign: 0, ack: null };
      const socket = makeSocket(s.url, { transports: ['websocket'], timeout: 20_000 });
      state.socket = socket;
      const onJobEvent = (event) => (data) => {
        if (data?.jobId !== jobId) {
          state.foreign++;
          return;
        }
        state.seqs.push(data.seq);
        if (event === 'job:completed') {
          state.done = true;
          state.completed = data;
        }
      };
      for (const ev of JOB_EVENTS) socket.on(ev, onJobEvent(ev));
      // Subscribe the moment the client is told it is connected; the ack is
      // recorded but not waited for.
      socket.on('connect', () => socket.emit('subscribe:job', { jobId, since: 0 }, (ack) => (state.ack = ack)));
      batch.push(
        new Promise((resolve, reject) => {
          socket.once('connect', resolve);
          socket.once('connect_error', (e) => reject(new Error(`client ${j}: ${e.message}`)));
        }),
      );
      clients.push(state);
    }
    await Promise.all(batch);
  }
  await waitFor(async () => (await health(s.url)).websocket.connected_clients === N, 10_000, {
    what: `${N} connected clients in /health`,
  });
  const refused = () => clients.filter((c) => c.ack && c.ack.ok !== true);
  await waitFor(() => clients.every((c) => c.done) || refused().length > 0, 90_000, {
    interval: 250,
    what: `all clients to receive job:completed (${clients.filter((c) => c.done).length}/${N} so far)`,
  });
  assert.deepEqual(
    refused().map((c) => c.ack),
    [],
    'every subscription sent on connect is acknowledged ok',
  );
  await sleep(300);
  assert.ok(clients.every((c) => c.ack?.ok === true), 'every client got its ack');
  const job = await getJob(s.url, jobId);
  assert.equal(job.status, 'completed');
  assert.ok(job.lastSeq > 200, `slow job has more than 200 events (${job.lastSeq})`);
  let bad = 0;
  let firstBad = null;
  for (const [i, c] of clients.entries()) {
    try {
      assertSeqSeries(c.seqs, 1, job.lastSeq, `client ${i}`);
      assert.equal(c.completed.status, 'completed');
      assert.equal(c.foreign, 0);
    } catch (e) {
      bad++;
      firstBad ??= e;
    }
  }
  for (const c of clients) closeSocket(c.socket);
  if (bad) assert.fail(`${bad}/${N} clients got an incomplete or disordered series; first: ${firstBad.message}`);
});

// --- input validation ------------------------------------------------------

const BAD_PAYLOADS = [
  ['a number', 42],
  ['an object without an id', { foo: 'bar' }],
  ['an array', ['some-id']],
  ['an empty string', ''],
  ['a 10 KB string', 'a'.repeat(10 * 1024)],
  ['an id with a slash', 'a/b'],
  ['an id with a space', 'a b'],
  ['a 129-character id', 'x'.repeat(129)],
  ['null', null],
  ['a missing payload', undefined],
];

const BAD_JOB_OBJECTS = [
  ['object with numeric jobId', { jobId: 42 }],
  ['object with bad jobId', { jobId: 'a/b' }],
  ['object with empty jobId', { jobId: '' }],
  ['object with null jobId', { jobId: null }],
];

test('invalid subscribe/unsubscribe payloads are rejected with ok:false and the socket stays usable', async () => {
  const socket = await connect(server.url);
  let disconnected = false;
  socket.on('disconnect', () => (disconnected = true));
  const events = ['subscribe:job', 'unsubscribe:job', 'subscribe:project', 'unsubscribe:project'];
  const failures = [];
  for (const event of events) {
    const cases = event === 'subscribe:job' ? [...BAD_PAYLOADS, ...BAD_JOB_OBJECTS] : BAD_PAYLOADS;
    for (const [label, payload] of cases) {
      let ack;
      try {
        ack = await emitAck(socket, event, payload, 3_000);
      } catch (e) {
        failures.push(`${event} with ${label}: ${e.message}`);
        continue;
      }
      if (!ack || ack.ok !== false || typeof ack.error !== 'string' || ack.error.length === 0) {
        failures.push(`${event} with ${label}: ack ${JSON.stringify(ack)?.slice(0, 200)}`);
      }
    }
  }
  assert.deepEqual(failures, [], 'every invalid payload gets {ok:false, error}');
  assert.equal(disconnected, false, 'the connection stayed up');
  assert.ok(socket.connected);

  // Boundary ids are accepted (unknown job → ok, job null, lastSeq 0).
  for (const id of ['x'.repeat(128), 'A-z_0.9:x']) {
    const ack = await emitAck(socket, 'subscribe:job', id);
    assert.equal(ack.ok, true, `valid id ${id.slice(0, 20)}: ${JSON.stringify(ack)}`);
    assert.equal(ack.job, null);
    assert.equal(ack.lastSeq, 0);
  }

  // The same socket can still follow a real job.
  const projectId = newProjectId('valid');
  const jobId = await createJob(server.url, projectId, 'quick');
  const { events: jobEvs } = await followJob(socket, jobId);
  assertQuickJob(jobEvs, jobId, projectId);
  const h = await health(server.url);
  assert.equal(h.status, 'ok');
  closeSocket(socket);
});

// --- configuration errors --------------------------------------------------

test('bad configuration values exit non-zero with one clear stderr line and no panic', async () => {
  const dir = makeTempDir('buildcast-cfg-');
  const missing = path.join(dir, 'missing.toml');
  const notADir = path.join(dir, 'a-file');
  writeFileSync(notADir, '');
  const cases = [
    { PORT: 'abc' },
    { PORT: '99999' },
    { WEBSOCKET_CORS_ORIGIN: 'not a url' },
    { PIPELINES_FILE: missing },
    { MAX_CONCURRENT_JOBS: 'abc' },
    { WEBSOCKET_ENABLED: 'maybe' },
    // Off loopback the default is AUTH_MODE=jwt: the line says so and what is missing.
    { HOST: '0.0.0.0', expect: /defaults to jwt.*JWT_SECRET.*neither is set/ },
    // A DATA_DIR that cannot be made: the OS error once, not twice.
    { DATA_DIR: path.join(notADir, 'data'), expect: /^(?!.*Not a directory.*Not a directory).*Not a directory/ },
  ];
  const problems = [];
  for (const { expect, ...env } of cases) {
    const [name, value] = Object.entries(env)[0];
    const r = await runToExit(env);
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    const where = `${name}=${value}: code ${r.code}, signal ${r.signal}, stderr ${JSON.stringify(r.stderr.slice(0, 500))}`;
    if (r.code === 0 || r.code === null) problems.push(`${where}: expected a non-zero exit code`);
    if (/panicked/.test(r.stderr + r.stdout)) problems.push(`${where}: panicked`);
    if (!r.stderr.includes(name)) problems.push(`${where}: stderr does not name ${name}`);
    if (!r.stderr.includes(value)) problems.push(`${where}: stderr does not show the value`);
    if (lines.length !== 1) problems.push(`${where}: expected exactly one stderr line, got ${lines.length}`);
    if (expect && !expect.test(r.stderr)) problems.push(`${where}: stderr does not match ${expect}`);
    if (LISTENING.test(r.stdout)) problems.push(`${where}: started listening anyway`);
  }
  assert.deepEqual(problems, []);
});

const LISTENING = /listening on/;

test('logging: a start-up line with version, URL, auth, data and pipelines; an access line per request; refused requests name the full path; subscriptions at debug only', async () => {
  const secret = 'e2e-logging-secret-long-enough-for-hs256';
  const logged = await startServer({ env: { AUTH_MODE: 'jwt', JWT_SECRET: secret, RUST_LOG: 'buildcast=info' } });
  const token = mintHmacJwt({ sub: 'logger', role: 'admin' }, secret);
  const auth = { authorization: `Bearer ${token}` };

  const refused = await fetch(`${logged.url}/api/jobs?status=active`);
  assert.equal(refused.status, 401);
  const created = await fetch(`${logged.url}/api/jobs`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ projectId: 'logs', pipeline: 'quick' }),
  });
  assert.equal(created.status, 201);
  const { jobId } = await created.json();
  const socket = await connect(logged.url, { auth: { token }, transports: ['websocket'] });
  assert.equal((await emitAck(socket, 'subscribe:job', jobId)).ok, true);
  assert.equal((await emitAck(socket, 'unsubscribe:job', jobId)).ok, true);
  assert.equal((await emitAck(socket, 'subscribe:project', 'logs')).ok, true);
  socket.disconnect();
  await waitFor(() => /client disconnected/.test(logged.output()), 5_000, { what: 'the disconnect line' });

  const out = logged.output();
  const refusedLine = out.split('\n').find((l) => l.includes('request refused'));
  assert.ok(refusedLine, `a "request refused" line in:\n${out}`);
  assert.match(refusedLine, /path=\/api\/jobs\b/);
  assert.doesNotMatch(out, /subscribed to|unsubscribed from/, 'subscriptions log at debug');
  // One start-up line says what runs, and how.
  const startLine = out.split('\n').find((l) => l.includes('listening on'));
  assert.ok(startLine, `a start-up line in:\n${out}`);
  assert.match(startLine, /INFO .*listening on http:\/\/127\.0\.0\.1:\d+/);
  assert.match(startLine, /version=\d+\.\d+\.\d+/);
  assert.match(startLine, /url=http:\/\/127\.0\.0\.1:\d+/);
  assert.match(startLine, /auth=jwt \(HS256, JWT_SECRET\)/);
  assert.ok(startLine.includes(`data_dir=${logged.dataDir}`), startLine);
  assert.ok(startLine.includes(`pipelines=${logged.env.PIPELINES_FILE}`), startLine);
  assert.doesNotMatch(startLine, new RegExp(secret));
  // The access log: one line per request with method, path (no query), status and latency.
  assert.match(out, /INFO request\{method=GET path=\/api\/jobs\}: .*request status=401 latency_ms=[\d.]+/);
  assert.match(out, /INFO request\{method=POST path=\/api\/jobs\}: .*request status=201 latency_ms=[\d.]+/);
  assert.doesNotMatch(out, /status=active/, 'the query string is not logged');
  assert.doesNotMatch(out, /INFO request\{method=\w+ path=\/ws/, 'Socket.IO requests are not in the access log');
  await logged.stop();
});

test('a broken pipelines file is refused at startup without a panic', async () => {
  const cases = [
    ['invalid TOML', '[pipelines.x\nsteps = '],
    ['bad timeout', '[pipelines.x]\ntimeout = "soon"\n[pipelines.x.steps]\nbuild = "echo hi"\n'],
  ];
  const problems = [];
  for (const [label, toml] of cases) {
    const file = writePipelines(toml);
    const r = await runToExit({ PIPELINES_FILE: file });
    const where = `${label}: code ${r.code}, stderr ${JSON.stringify(r.stderr.slice(0, 500))}`;
    if (r.code === 0 || r.code === null) problems.push(`${where}: expected a non-zero exit code`);
    if (/panicked/.test(r.stderr + r.stdout)) problems.push(`${where}: panicked`);
    if (!r.stderr.includes('PIPELINES_FILE') && !r.stderr.includes(file)) problems.push(`${where}: stderr names neither PIPELINES_FILE nor the file`);
    if (LISTENING.test(r.stdout)) problems.push(`${where}: started listening anyway`);
  }
  assert.deepEqual(problems, []);
});

test('SIGINT with a connected client and a running build shuts down cleanly with exit 0', async () => {
  const s = await startServer();
  const socket = await connect(s.url, { transports: ['websocket'] });
  let disconnected = false;
  socket.on('disconnect', () => (disconnected = true));
  const jobId = await createJob(s.url, newProjectId('sigint'), 'slow');
  assert.equal((await emitAck(socket, 'subscribe:job', { jobId, since: 0 })).ok, true);
  await waitFor(async () => (await getJob(s.url, jobId)).status === 'building', 10_000, { what: 'slow job building' });
  const started = Date.now();
  const code = await s.stop('SIGINT', 15_000);
  assert.equal(code, 0, 'exit code after SIGINT');
  assert.ok(Date.now() - started < 15_000);
  await waitFor(() => disconnected, 5_000, { what: 'client to see the disconnect' });
  closeSocket(socket);
});
