// Gateway delivery under stress: a client on node B watching a build that runs
// on node A (a real redis-server between them), and a client that stops reading
// during a 100,000-line flood next to one that reads.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, createJob, waitFor, waitForJobFinished, fetchLog, REDIS_SERVER, startRedis, getJson } from './helpers.mjs';
import { COMPAT_PIPELINES, wsBase, rawSocket } from './compat-helpers.mjs';
import { BuildLogStream, buildMonitor, buildPage } from '../support/seed-clients.mjs';

test('a seed-000 and a seed-001 client on node B follow a build that runs on node A', { skip: !REDIS_SERVER && 'redis-server is not installed' }, async () => {
  const redis = await startRedis();
  const WORKER_TOKEN = 'compat-worker-token-0123456789';
  const env = { REDIS_URL: redis.url, WORKER_TOKEN };
  const [a, b] = await Promise.all([
    startServer({ env, pipelines: COMPAT_PIPELINES }),
    startServer({ env, pipelines: COMPAT_PIPELINES }),
  ]);
  // Connected on B before the job exists anywhere: B waits for it, and gets a
  // worker's job that A ingests.
  const jobId = `cross-node-${Date.now()}`;
  const early = new BuildLogStream(jobId, 'undefined', wsBase(b));
  const earlyView = buildMonitor(early);
  early.connect();
  await waitFor(() => early.frames.length === 1, 10_000, { what: 'connected on B' });
  const worker = await fetch(`${a.url}/api/jobs/${jobId}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${WORKER_TOKEN}` },
    body: JSON.stringify([
      { type: 'status', data: { status: 'running' }, projectId: 'p-cluster', pipeline: 'celery' },
      ...Array.from({ length: 30 }, (_, i) => ({ type: 'log', data: { log_line: `worker line ${i + 1}\n` } })),
      { type: 'complete', data: { status: 'completed' } },
    ]),
  });
  assert.equal(worker.status, 200);
  await waitFor(() => earlyView.artifacts !== null, 30_000, { what: 'the worker job on B' });
  assert.deepEqual(earlyView.logs, Array.from({ length: 30 }, (_, i) => `worker line ${i + 1}`));
  assert.equal(earlyView.status, 'SUCCESS');
  // The job itself gets a server id on A; the seed-000 client on B watches it
  // from its start, the seed-001 one joins mid-build.
  const realId = await createJob(a.url, 'p-cluster', 'demo-slow');
  const stream = new BuildLogStream(realId, 'undefined', wsBase(b));
  const view = buildMonitor(stream);
  stream.connect();
  await waitFor(async () => (await getJson(`${b.url}/api/jobs/${realId}`)).status === 200 && view.logs.length > 50, 30_000, {
    what: 'B to mirror the job',
  });
  const { page, hook } = buildPage('undefined', realId, wsBase(b));
  hook.connect();
  await waitForJobFinished(a.url, realId);
  await waitFor(() => view.artifacts !== null && page.completes.length === 1, 30_000, { what: 'the ends on B' });
  const log = await fetchLog(a.url, realId);
  assert.deepEqual(view.logs, log, 'node B gave the whole log of node A');
  assert.equal(view.status, 'SUCCESS');
  assert.ok(log.map((l) => `${l}\n`).join('').endsWith(page.logs), 'the 001 client got a contiguous tail');
  assert.deepEqual(page.completes, [['completed', 'Build completed successfully']]);
  // The same bytes as a client of node A.
  const onA = rawSocket(`${wsBase(a)}/ws/build/${realId}`);
  await waitFor(() => onA.frames.some((f) => f.includes('"type":"complete"')), 10_000, { what: 'A replay' });
  assert.deepEqual(onA.frames, stream.frames);
  early.disconnect();
  stream.disconnect();
  hook.disconnect();
  onA.ws.close();
  await redis.stop();
});

test('a client that stops reading during a 100,000-line flood never delays one that reads, and ends with every line or 1013', async (t) => {
  // Heartbeat long enough that the stalled client is not taken for dead meanwhile.
  const server = await startServer({
    env: { STREAM_QUEUE_EVENTS: '256', WEBSOCKET_PING_INTERVAL_MS: '120000', WEBSOCKET_PING_TIMEOUT_MS: '120000' },
    pipelines: COMPAT_PIPELINES,
  });
  const jobId = await createJob(server.url, 'p-flood', 'flood');
  const url = `${wsBase(server)}/ws/build/${jobId}`;
  const fast = rawSocket(url);
  const slow = rawSocket(url);
  await Promise.all([fast.opened, slow.opened]);
  // The slow one stops reading at once: its TCP window fills, the server's writes to it wait.
  slow.ws._socket.pause();
  let fastDone = 0;
  await waitFor(() => {
    const last = fast.frames[fast.frames.length - 1];
    if (last?.includes('"type":"complete"')) fastDone = Date.now();
    return fastDone > 0;
  }, 240_000, { what: 'the fast client to get the whole flood', interval: 200 });
  const job = await waitForJobFinished(server.url, jobId);
  const finishedAt = Date.parse(job.finishedAt);
  assert.ok(fastDone - finishedAt < 20_000, `the fast client ended ${fastDone - finishedAt} ms after the job (generous margin)`);
  const fastLines = fast.frames.map((f) => JSON.parse(f)).filter((m) => m.type === 'log').map((m) => m.text);
  const log = await fetchLog(server.url, jobId);
  assert.ok(log.length >= 100_000, `${log.length} lines`);
  assert.deepEqual(fastLines, log);
  assert.ok(slow.frames.length < fast.frames.length, 'the slow client really fell behind');
  // The slow one reads again: it is caught up from history, in order, or closed with 1013.
  slow.ws._socket.resume();
  const outcome = await Promise.race([
    slow.closed.then((close) => ({ close })),
    waitFor(() => slow.frames[slow.frames.length - 1]?.includes('"type":"complete"'), 240_000, {
      what: 'the slow client to catch up',
      interval: 200,
    }).then(() => ({ done: true })),
  ]);
  t.diagnostic(
    `fast client done ${fastDone - finishedAt} ms after the job; slow client: ${outcome.close ? `closed ${outcome.close.code}` : 'caught up'}`,
  );
  if (outcome.close) {
    assert.equal(outcome.close.code, 1013, JSON.stringify(outcome.close));
  } else {
    const slowLines = slow.frames.map((f) => JSON.parse(f)).filter((m) => m.type === 'log').map((m) => m.text);
    assert.deepEqual(slowLines, log, 'every line, once, in order');
    const seqs = slow.frames.slice(1).map((f) => JSON.parse(f).seq);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] >= seqs[i - 1] && seqs[i] <= seqs[i - 1] + 1, `seq ${seqs[i - 1]} then ${seqs[i]}`);
  }
  const health = await getJson(`${server.url}/health`);
  assert.ok(health.body.delivery.stream_catch_ups >= 1, 'the slow client went back to history');
  fast.ws.close();
  slow.ws.close();
});

test('a peer that answers no ping is dropped and its slot given back; one that answers stays', async () => {
  const server = await startServer({
    env: { WEBSOCKET_PING_INTERVAL_MS: '300', WEBSOCKET_PING_TIMEOUT_MS: '300' },
    pipelines: COMPAT_PIPELINES,
  });
  const jobId = await createJob(server.url, 'p-ping', 'demo-slow');
  const url = `${wsBase(server)}/api/v1/ws/jobs/${jobId}/updates`;
  const dead = rawSocket(url);
  const alive = rawSocket(url);
  let pings = 0;
  alive.ws.on('ping', () => (pings += 1));
  await Promise.all([dead.opened, alive.opened]);
  await waitFor(() => dead.frames.length > 0 && alive.frames.length > 0, 10_000, { what: 'connected' });
  await waitFor(async () => (await getJson(`${server.url}/health`)).body.compat.jobs === 2, 10_000, { what: 'both peers counted' });
  dead.ws._socket.pause();
  await waitFor(async () => (await getJson(`${server.url}/health`)).body.compat.jobs === 1, 10_000, { what: 'the dead peer to be dropped' });
  await waitFor(() => pings >= 2, 10_000, { what: `protocol pings to reach the client (${pings})` });
  assert.equal(alive.ws.readyState, 1);
  alive.ws.close();
  dead.ws.terminate();
});
