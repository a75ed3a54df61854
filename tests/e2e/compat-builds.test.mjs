// Seed 003 (reqpm, Django Channels) against the real server: its
// `useWebSocket` hook, unchanged but for the base URL, on `WS /ws/builds/{id}/`:
// a `build_update` snapshot on connect, `queue_update` per step transition,
// `build_update` after every progress, error and completion.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, createJob, waitFor, waitForJobFinished, fetchLog, sleep } from './helpers.mjs';
import { COMPAT_PIPELINES, wsBase, rawSocket, assertRising, staysOpen, postJson } from './compat-helpers.mjs';
import { BuildJobSocket } from '../support/seed-clients.mjs';

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

function parsed(socket) {
  return socket.frames.map((f) => JSON.parse(f));
}

function ended(socket) {
  return parsed(socket).some((m) => m.type === 'build_update' && TERMINAL.has(m.data.status));
}

test('a demo build from the queue: snapshot, queue_update per step, build_update per progress, terminal last', async () => {
  const server = await startServer({ env: { MAX_CONCURRENT_JOBS: '1' }, pipelines: COMPAT_PIPELINES });
  const blocker = await createJob(server.url, 'p-block', 'demo-slow');
  const jobId = await createJob(server.url, 'p-demo', 'demo');
  const socket = new BuildJobSocket(jobId, wsBase(server));
  const noSlash = rawSocket(`${wsBase(server)}/ws/builds/${jobId}`);
  await waitFor(() => socket.frames.length >= 1 && noSlash.frames.length >= 1, 10_000, { what: 'the snapshots' });
  const [snapshot] = parsed(socket);
  assert.equal(snapshot.type, 'build_update');
  assert.deepEqual(
    [snapshot.data.id, snapshot.data.status, snapshot.data.progress, snapshot.data.total_packages, snapshot.data.completed_packages, snapshot.data.failed_packages],
    [jobId, 'pending', 0, 4, 0, 0],
  );
  assert.equal(snapshot.data.project, 'p-demo');
  assert.equal(snapshot.data.started_at, null);
  assert.equal((await postJson(`${server.url}/api/jobs/${blocker}/cancel`, {})).status, 202);
  await waitFor(() => ended(socket), 60_000, { what: 'the terminal build_update' });
  const all = parsed(socket);
  const last = all[all.length - 1];
  assert.deepEqual(
    [last.type, last.data.status, last.data.progress, last.data.completed_packages, last.data.failed_packages],
    ['build_update', 'completed', 100, 4, 0],
  );
  assert.equal(all.filter((m) => m.type === 'build_update' && TERMINAL.has(m.data.status)).length, 1, 'terminal once, last');
  const builds = all.filter((m) => m.type === 'build_update').map((m) => m.data);
  assert.deepEqual(builds.map((b) => b.status), ['pending', 'preparing', 'running', 'running', 'running', 'running', 'running', 'completed']);
  assertRising(builds.map((b) => b.progress), 'progress');
  const queue = all.filter((m) => m.type === 'queue_update').map((m) => m.data);
  assert.deepEqual(
    queue.map((q) => `${q.id} ${q.package.name} ${q.status}`),
    ['1 prepare building', '1 prepare completed', '2 install building', '2 install completed', '3 build building', '3 build completed', '4 test building', '4 test completed'],
  );
  // The steps' logs together are the job's log.
  const stepLogs = queue.filter((q) => q.status === 'completed').map((q) => q.build_log).join('');
  assert.equal(stepLogs, (await fetchLog(server.url, jobId)).map((l) => `${l}\n`).join(''));
  for (const m of all) assert.deepEqual(Object.keys(m), ['type', 'data']);
  // The connection without the slash got the same messages.
  await waitFor(() => noSlash.frames.length === socket.frames.length, 5000, { what: 'the same count' });
  assert.deepEqual(noSlash.frames, socket.frames);
  assert.ok(await staysOpen(socket.ws), 'the server never closes');
  assert.equal(socket.refetches, socket.frames.length);
  socket.close();
  noSlash.ws.close();
});

test('a finished build gets its final state; demo-fail and a cancel; an unknown build waits for its first event', async () => {
  const server = await startServer({ env: { MAX_CONCURRENT_JOBS: '4', WORKER_TOKEN: 'compat-worker-token-0123456789' }, pipelines: COMPAT_PIPELINES });
  const failing = await createJob(server.url, 'p1', 'demo-fail');
  await waitForJobFinished(server.url, failing);
  const fail = new BuildJobSocket(failing, wsBase(server));
  await waitFor(() => fail.frames.length >= 1, 10_000, { what: 'the snapshot' });
  await sleep(300);
  const f = parsed(fail);
  assert.equal(f.length, 1, 'a finished build: one build_update');
  assert.deepEqual(
    [f[0].data.status, f[0].data.progress, f[0].data.total_packages, f[0].data.completed_packages, f[0].data.failed_packages],
    ['failed', 50, 3, 2, 1],
  );
  assert.match(f[0].data.completed_at, /Z$/);

  const slow = await createJob(server.url, 'p1', 'demo-slow');
  const watching = new BuildJobSocket(slow, wsBase(server));
  await waitFor(() => parsed(watching).some((m) => m.type === 'build_update' && m.data.progress === 50), 30_000, { what: 'the build step' });
  assert.equal((await postJson(`${server.url}/api/jobs/${slow}/cancel`, {})).status, 202);
  await waitFor(() => ended(watching), 30_000, { what: 'cancelled' });
  const w = parsed(watching);
  assert.deepEqual(w.slice(-2).map((m) => [m.type, m.data.status]), [['queue_update', 'cancelled'], ['build_update', 'cancelled']]);
  assert.match(w[w.length - 2].data.build_log, /Cancelled during the build step/);

  // A worker's build: unknown until its first event, then every event.
  const unknown = new BuildJobSocket('worker-build-1', wsBase(server));
  await sleep(300);
  assert.equal(unknown.frames.length, 0, 'nothing for a build that does not exist');
  const post = (events) =>
    postJson(`${server.url}/api/jobs/worker-build-1/events`, events, { authorization: 'Bearer compat-worker-token-0123456789' });
  assert.equal((await post([{ type: 'status', data: { status: 'running' }, projectId: 'p-worker', pipeline: 'celery' }])).status, 200);
  assert.equal((await post([{ type: 'step', data: { step_name: 'synthesis', step_label: 'Synthesis' } }, { type: 'progress', data: { progress: 40, current_step: 'synthesis' } }, { type: 'log', data: { log_line: 'yosys\n' } }, { type: 'complete', data: { status: 'completed' } }])).status, 200);
  await waitFor(() => ended(unknown), 10_000, { what: 'the worker build to end' });
  const u = parsed(unknown);
  assert.equal(u[0].type, 'build_update');
  assert.equal(u[u.length - 1].data.status, 'completed');
  assert.equal(u[u.length - 1].data.project, 'p-worker');
  fail.close();
  watching.close();
  unknown.close();
});
