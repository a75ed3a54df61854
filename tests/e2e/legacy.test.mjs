// Socket.IO protocol v4 compatibility: the 2.x client must be able to follow a job.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import ioV2 from 'socket.io-client-v2';
import {
  startServer,
  createJob,
  getJob,
  fetchAllEvents,
  waitFor,
  sleep,
  health,
  assertSeqSeries,
  assertEventShape,
  progressTable,
  projectId as newProjectId,
  SUCCESS_PHASES,
  JOB_EVENTS,
} from './helpers.mjs';

let server;
const sockets = new Set();

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const s of sockets) s.close();
  if (server) await server.stop();
});

function connectV2(url, transports) {
  const socket = ioV2(url, { path: '/ws', transports, forceNew: true, reconnection: false, timeout: 10_000 });
  sockets.add(socket);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('2.x client did not connect')), 10_000);
    socket.on('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.on('connect_error', (e) => {
      clearTimeout(timer);
      reject(new Error(`2.x connect_error: ${e?.message ?? e}`));
    });
  });
}

function ackV2(socket, event, payload, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for ${event}`)), timeoutMs);
    socket.emit(event, payload, (res) => {
      clearTimeout(timer);
      resolve(res);
    });
  });
}

for (const transports of [['websocket'], ['polling']]) {
  test(`socket.io-client 2.x over ${transports} receives every job:log of a quick job`, async () => {
    const socket = await connectV2(server.url, transports);
    const got = [];
    for (const ev of JOB_EVENTS) socket.on(ev, (data) => got.push({ event: ev, data }));
    const projectId = newProjectId('legacy');
    const jobId = await createJob(server.url, projectId, 'quick');
    const ack = await ackV2(socket, 'subscribe:job', { jobId, since: 0 });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.equal(ack.job.jobId, jobId);
    await waitFor(() => got.some((e) => e.event === 'job:completed'), 30_000, { what: 'job:completed on 2.x client' });
    await sleep(150);

    const job = await getJob(server.url, jobId);
    for (const e of got) assertEventShape(e.event, e.data, { jobId, projectId });
    assertSeqSeries(got.map((e) => e.data.seq), 1, job.lastSeq, 'seqs on 2.x client');
    assert.deepEqual(progressTable(got), SUCCESS_PHASES);

    const stored = await fetchAllEvents(server.url, jobId);
    const storedLogs = stored.filter((e) => e.event === 'job:log').map((e) => [e.data.stream, e.data.message]);
    const gotLogs = got.filter((e) => e.event === 'job:log').map((e) => [e.data.stream, e.data.message]);
    assert.deepEqual(gotLogs, storedLogs, 'every job:log, in order');
    assert.deepEqual(
      gotLogs.filter(([, m]) => m.startsWith('build line')).map(([, m]) => m),
      [1, 2, 3, 4, 5].map((i) => `build line ${i}`),
    );
    const done = got.at(-1);
    assert.equal(done.event, 'job:completed');
    assert.equal(done.data.success, true);
    assert.deepEqual(done.data.artifacts, ['result.txt']);

    const h = await health(server.url);
    assert.ok(h.websocket.connected_clients >= 1, '2.x client is counted in /health');

    const un = await ackV2(socket, 'unsubscribe:job', jobId);
    assert.equal(un.ok, true);
    socket.close();
    sockets.delete(socket);
  });
}
