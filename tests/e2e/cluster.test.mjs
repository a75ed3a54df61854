// External workers and several nodes: ingest over REST and over Redis pub/sub,
// two server processes sharing one real redis-server, and Redis going away and
// coming back mid-build. Each test starts its own redis-server on a free port.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { readFileSync } from 'node:fs';

import {
  startServer,
  connect,
  emitAck,
  collect,
  sleep,
  waitFor,
  makeTempDir,
  projectId,
  assertSeqSeries,
  REDIS_SERVER,
  startRedis,
  freePort,
} from './helpers.mjs';

const WORKER_TOKEN = 'e2e-worker-token-0123456789';
const REDIS = REDIS_SERVER;
const JOB_EVENTS = ['job:progress', 'job:log', 'job:error', 'job:completed'];

/** Sends one Redis command over a raw connection (RESP), resolving with the reply text. */
function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const body = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`;
    let reply = '';
    sock.on('connect', () => sock.write(body));
    sock.on('data', (d) => {
      reply += d;
      if (reply.endsWith('\r\n')) {
        sock.end();
        resolve(reply);
      }
    });
    sock.on('error', reject);
  });
}

async function ingest(url, jobId, body, token = WORKER_TOKEN) {
  const res = await fetch(`${url}/api/jobs/${jobId}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

/** A scripted worker's whole build, in the seed's `{type, data}` vocabulary. */
function workerBuild(project, lines = 40) {
  return [
    { type: 'status', data: { status: 'running' }, projectId: project, pipeline: 'celery' },
    { type: 'step', data: { step_name: 'init', step_label: 'Initialization' } },
    { type: 'progress', data: { progress: 10, current_step: 'init', completed_steps: [] } },
    ...Array.from({ length: lines }, (_, i) => ({ type: 'log', data: { log_line: `worker line ${i + 1}\n` } })),
    { type: 'progress', data: { progress: 90, current_step: 'synthesis', completed_steps: ['init'] } },
    { type: 'complete', data: { status: 'completed', message: 'Build completed successfully' } },
  ];
}

const WORKER_ENV = { WORKER_TOKEN };

test('a scripted worker publishes a build over REST; a socket.io-client sees every event in order', async () => {
  const server = await startServer({ env: WORKER_ENV });
  const project = projectId('ingest');
  const jobId = `ext-${Date.now()}`;
  const socket = await connect(server.url);
  const got = collect(socket, JOB_EVENTS);
  const ack = await emitAck(socket, 'subscribe:job', jobId);
  assert.equal(ack.ok, true);
  assert.equal(ack.job, null, 'the job does not exist before its first event');

  const events = workerBuild(project);
  assert.equal((await ingest(server.url, jobId, events.slice(0, 10))).status, 200);
  for (const e of events.slice(10)) assert.equal((await ingest(server.url, jobId, e)).status, 200);

  await waitFor(() => got.some((e) => e.event === 'job:completed'), 10_000);
  assertSeqSeries(got.map((e) => e.data.seq));
  const logs = got.filter((e) => e.event === 'job:log').map((e) => e.data.message);
  assert.deepEqual(logs.slice(0, 40), Array.from({ length: 40 }, (_, i) => `worker line ${i + 1}`));
  assert.equal(logs.at(-1), 'Build completed successfully');
  const done = got.at(-1).data;
  assert.equal(done.status, 'completed');
  assert.equal(done.success, true);
  assert.equal(done.projectId, project);
  const job = await (await fetch(`${server.url}/api/jobs/${jobId}`)).json();
  assert.equal(job.pipeline, 'celery');
  assert.equal(job.status, 'completed');
});

test('ingest refuses a bad token, a bad batch (recording none of it) and events after completion', async () => {
  const server = await startServer({ env: WORKER_ENV });
  const jobId = `ext-bad-${Date.now()}`;
  assert.equal((await ingest(server.url, jobId, workerBuild('p'), 'wrong-token')).status, 401);
  const noProject = await ingest(server.url, jobId, { type: 'log', data: { log_line: 'x' } });
  assert.equal(noProject.status, 400);
  assert.match(noProject.json.error, /projectId/);
  const bad = await ingest(server.url, jobId, [
    { type: 'status', data: { status: 'running' }, projectId: 'p' },
    { type: 'log', data: { log_line: 'fine' } },
    { type: 'progress', data: { progress: 'half' } },
  ]);
  assert.equal(bad.status, 400);
  assert.match(bad.json.error, /^event 2: /);
  assert.equal((await fetch(`${server.url}/api/jobs/${jobId}`)).status, 404, 'nothing of a rejected batch is recorded');
  for (const body of ['not json', '[]', '{"type":"explode","data":{}}']) {
    const res = await fetch(`${server.url}/api/jobs/${jobId}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${WORKER_TOKEN}` },
      body,
    });
    assert.equal(res.status, 400, body);
    assert.ok((await res.json()).error);
  }
  assert.equal((await ingest(server.url, jobId, workerBuild('p', 2))).status, 200);
  const late = await ingest(server.url, jobId, { type: 'log', data: { log_line: 'too late' } });
  assert.equal(late.status, 409);
});

test('ingest over Redis pub/sub (job:<id>:updates) reaches socket.io clients in order', { skip: !REDIS && 'redis-server is not installed' }, async () => {
  const redis = await startRedis();
  const server = await startServer({ env: { REDIS_URL: redis.url } });
  await waitFor(async () => (await (await fetch(`${server.url}/health`)).json()).redis === 'ok', 10_000);
  const jobId = `redis-${Date.now()}`;
  const socket = await connect(server.url);
  const got = collect(socket, JOB_EVENTS);
  assert.equal((await emitAck(socket, 'subscribe:job', jobId)).ok, true);
  const events = workerBuild(projectId('redis'), 30);
  for (const e of events) await redisCommand(redis.port, 'PUBLISH', `job:${jobId}:updates`, JSON.stringify(e));
  // Invalid messages are counted and dropped; the subscriber keeps going.
  await redisCommand(redis.port, 'PUBLISH', `job:${jobId}:updates`, '{"type":"nonsense"}');
  await redisCommand(redis.port, 'PUBLISH', 'job:bad id:updates', '{}');
  await waitFor(() => got.some((e) => e.event === 'job:completed'), 10_000);
  assertSeqSeries(got.map((e) => e.data.seq));
  assert.equal(got.filter((e) => e.event === 'job:log').length, 31);
  await waitFor(async () => (await (await fetch(`${server.url}/health`)).json()).cluster.rejected_worker_messages >= 2, 5_000);
  await redis.stop();
});

test('two nodes share one Redis: cross-node delivery, late replay, project rooms, ingest via either node', { skip: !REDIS && 'redis-server is not installed' }, async () => {
  const redis = await startRedis();
  const env = { REDIS_URL: redis.url, WORKER_TOKEN };
  const [a, b] = await Promise.all([startServer({ env }), startServer({ env })]);
  for (const n of [a, b]) await waitFor(async () => (await (await fetch(`${n.url}/health`)).json()).redis === 'ok', 10_000);

  // A client on A follows a build that runs on B.
  const project = projectId('cluster');
  const onA = await connect(a.url);
  const gotA = collect(onA, JOB_EVENTS);
  const projectOnA = await connect(a.url);
  const projA = collect(projectOnA, ['project:progress', 'project:completed']);
  assert.equal((await emitAck(projectOnA, 'subscribe:project', project)).ok, true);
  const created = await (
    await fetch(`${b.url}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ projectId: project, pipeline: 'burst' }) })
  ).json();
  const ack = await emitAck(onA, 'subscribe:job', { jobId: created.jobId, since: 0 });
  assert.equal(ack.ok, true);
  await waitFor(() => gotA.some((e) => e.event === 'job:completed'), 60_000);
  const lastSeq = gotA.at(-1).data.seq;
  assertSeqSeries(gotA.map((e) => e.data.seq), 1, lastSeq, 'client on A, job on B');
  assert.equal(gotA.filter((e) => e.event === 'job:log').length, 3000 + 2 + 3, 'every line: 3000 burst lines, prepare and test output, 3 step lines');
  // Another socket: its events may come a little after this one's (no order
  // between sockets), but they come.
  await waitFor(() => projA.some((e) => e.event === 'project:completed' && e.data.jobId === created.jobId), 10_000, {
    what: 'the project subscriber on A to see B’s job complete',
  });

  // A client joining late on A replays the whole job from since: 0.
  const late = await connect(a.url);
  const gotLate = collect(late, JOB_EVENTS);
  const lateAck = await emitAck(late, 'subscribe:job', { jobId: created.jobId, since: 0 });
  assert.equal(lateAck.lastSeq, lastSeq);
  assert.equal(lateAck.recovered, true);
  await waitFor(() => gotLate.length === lastSeq, 10_000);
  assertSeqSeries(gotLate.map((e) => e.data.seq), 1, lastSeq, 'late replay on A');

  // A job ingested via A, with its end posted to B, is seen by a project subscriber on B.
  const extProject = projectId('ext');
  const onB = await connect(b.url);
  const projB = collect(onB, ['project:progress', 'project:completed']);
  assert.equal((await emitAck(onB, 'subscribe:project', extProject)).ok, true);
  const extId = `ext-${Date.now()}`;
  const build = workerBuild(extProject, 5);
  assert.equal((await ingest(a.url, extId, build.slice(0, -1))).status, 200);
  await waitFor(async () => (await fetch(`${b.url}/api/jobs/${extId}`)).status === 200, 5_000);
  const forwarded = await ingest(b.url, extId, build.at(-1));
  assert.equal(forwarded.status, 202, 'B passes events of A’s job on to A');
  await waitFor(() => projB.some((e) => e.event === 'project:completed' && e.data.jobId === extId), 10_000);
  const seqs = projB.filter((e) => e.data.jobId === extId).map((e) => e.data.seq);
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));

  // Both nodes agree on the history.
  const histA = await (await fetch(`${a.url}/api/jobs/${extId}/events?since=0`)).json();
  const histB = await (await fetch(`${b.url}/api/jobs/${extId}/events?since=0`)).json();
  assert.deepEqual(histA.events.map((e) => e.data), histB.events.map((e) => e.data));
  // And on line numbers: a mirror numbers each log line as the owner did.
  for (const id of [created.jobId, extId]) {
    const [la, lb] = await Promise.all([a, b].map(async (n) => (await fetch(`${n.url}/api/jobs/${id}/lines?limit=10000`)).json()));
    assert.ok(la.lines.length > 5, `lines of ${id}`);
    assert.deepEqual(la.lines, lb.lines, `lines of ${id}`);
    assert.equal(la.totalLines, lb.totalLines);
    assert.deepEqual(la.lines.map((l) => l.line), la.lines.map((_, k) => k + 1));
  }
  const health = await (await fetch(`${a.url}/health`)).json();
  assert.equal(health.status, 'ok');
  assert.equal(health.websocket.connected_clients, 3, 'this node’s own clients');
  // Other nodes report their count every few seconds.
  await waitFor(async () => (await (await fetch(`${a.url}/health`)).json()).cluster.connected_clients === 4, 12_000, {
    what: 'the cluster-wide count to include B’s client',
  });
  await redis.stop();
});

test('Redis killed mid-build and restarted: local clients keep receiving, health says down then ok, delivery across nodes resumes', { skip: !REDIS && 'redis-server is not installed' }, async () => {
  const redis = await startRedis();
  const env = { REDIS_URL: redis.url };
  const [a, b] = await Promise.all([startServer({ env }), startServer({ env })]);
  for (const n of [a, b]) await waitFor(async () => (await (await fetch(`${n.url}/health`)).json()).redis === 'ok', 10_000);
  const local = await connect(b.url);
  const remote = await connect(a.url);
  const gotLocal = collect(local, JOB_EVENTS);
  const gotRemote = collect(remote, JOB_EVENTS);
  const created = await (
    await fetch(`${b.url}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ projectId: projectId('fault'), pipeline: 'slow' }) })
  ).json();
  for (const s of [local, remote]) assert.equal((await emitAck(s, 'subscribe:job', { jobId: created.jobId, since: 0 })).ok, true);
  await waitFor(() => gotRemote.length > 20, 20_000);

  await redis.stop();
  await waitFor(async () => (await (await fetch(`${b.url}/health`)).json()).redis === 'down', 10_000);
  const down = await fetch(`${b.url}/health`);
  assert.equal(down.status, 200);
  assert.equal((await down.json()).status, 'degraded');
  const before = gotLocal.length;
  await sleep(1_500);
  assert.ok(gotLocal.length > before, 'clients of the job’s own node keep receiving while Redis is down');

  await startRedis(redis.port);
  await waitFor(async () => (await (await fetch(`${b.url}/health`)).json()).redis === 'ok', 20_000);
  await waitFor(() => gotRemote.some((e) => e.event === 'job:completed'), 60_000);
  await waitFor(() => gotLocal.some((e) => e.event === 'job:completed'), 10_000);
  const last = gotLocal.at(-1).data.seq;
  assertSeqSeries(gotLocal.map((e) => e.data.seq), 1, last, 'local client');
  assertSeqSeries(gotRemote.map((e) => e.data.seq), 1, last, 'client on the other node, across the outage');
});

test('cancel sent to another node reaches the node that runs the job', { skip: !REDIS && 'redis-server is not installed' }, async () => {
  const redis = await startRedis();
  const env = { REDIS_URL: redis.url };
  const [a, b] = await Promise.all([startServer({ env }), startServer({ env })]);
  for (const n of [a, b]) await waitFor(async () => (await (await fetch(`${n.url}/health`)).json()).redis === 'ok', 10_000);
  const created = await (
    await fetch(`${b.url}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ projectId: projectId('cancel'), pipeline: 'slow' }) })
  ).json();
  await waitFor(async () => (await (await fetch(`${a.url}/api/jobs/${created.jobId}`)).json()).status === 'building', 20_000);
  const res = await fetch(`${a.url}/api/jobs/${created.jobId}/cancel`, { method: 'POST' });
  assert.equal(res.status, 202);
  for (const n of [a, b]) {
    await waitFor(async () => (await (await fetch(`${n.url}/api/jobs/${created.jobId}`)).json()).status === 'cancelled', 10_000, {
      what: `the job to show cancelled on ${n.url}`,
    });
  }
  await redis.stop();
});

test('Redis unreachable at start: the node starts, serves local clients, says degraded, and joins when Redis appears', { skip: !REDIS && 'redis-server is not installed' }, async () => {
  const port = await freePort();
  const server = await startServer({ env: { REDIS_URL: `redis://127.0.0.1:${port}` } });
  const health = await fetch(`${server.url}/health`);
  assert.equal(health.status, 200);
  const body = await health.json();
  assert.equal(body.redis, 'down');
  assert.equal(body.status, 'degraded');
  const socket = await connect(server.url);
  const got = collect(socket, JOB_EVENTS);
  const created = await (
    await fetch(`${server.url}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ projectId: projectId('nored'), pipeline: 'quick' }) })
  ).json();
  assert.equal((await emitAck(socket, 'subscribe:job', { jobId: created.jobId, since: 0 })).ok, true);
  await waitFor(() => got.some((e) => e.event === 'job:completed'), 20_000);
  assertSeqSeries(got.map((e) => e.data.seq));
  const redis = await startRedis(port);
  await waitFor(async () => (await (await fetch(`${server.url}/health`)).json()).redis === 'ok', 20_000);
  // What was recorded while Redis was away was published once it came back.
  await waitFor(async () => (await (await fetch(`${server.url}/health`)).json()).cluster.unpublished_events === 0, 10_000);
  const entries = await redisCommand(port, 'XLEN', `buildcast:history:${created.jobId}`);
  assert.equal(entries.trim(), `:${got.length}`);
  await redis.stop();
});

const PYTHON_REDIS = spawnSync('python3', ['-c', 'import redis'], { encoding: 'utf8' }).status === 0;

test('the Python worker example (examples/worker.py) streams a whole build through Redis', { skip: (!REDIS && 'redis-server is not installed') || (!PYTHON_REDIS && 'python3 with redis-py is not installed (pip install redis)') }, async () => {
  const redis = await startRedis();
  const server = await startServer({ env: { REDIS_URL: redis.url } });
  await waitFor(async () => (await (await fetch(`${server.url}/health`)).json()).redis === 'ok', 10_000);
  const jobId = `py-${Date.now()}`;
  const socket = await connect(server.url);
  const got = collect(socket, JOB_EVENTS);
  assert.equal((await emitAck(socket, 'subscribe:job', jobId)).ok, true);
  const worker = new URL('../../examples/worker.py', import.meta.url).pathname;
  const run = spawnSync('python3', [worker, '--redis', redis.url, '--project', 'py-project', '--job', jobId, '--delay', '0.005'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(run.status, 0, run.stderr);
  await waitFor(() => got.some((e) => e.event === 'job:completed'), 10_000);
  assertSeqSeries(got.map((e) => e.data.seq));
  assert.equal(got.filter((e) => e.event === 'job:log' && e.data.stream === 'stdout').length, 15);
  assert.equal(got.at(-1).data.status, 'completed');
  await redis.stop();
});

/** Resident memory of a process, in bytes (Linux). */
function rssBytes(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

const OUTAGE_SECS = 45;
const FLOOD_PIPELINES = `
[pipelines.flood]
description = "about 1,000 lines a second for a minute and a half"
timeout = "300s"
[pipelines.flood.steps]
build = "for s in $(seq 1 90); do seq 1 1000 | sed \\"s/^/flood $s line /\\"; sleep 1; done"
`;

test(`Redis down for ${OUTAGE_SECS} s under ~1,000 lines/s: the publish queue stays bounded, memory does not grow with the outage, and the other node ends with every seq`, { skip: !REDIS && 'redis-server is not installed', timeout: 240_000 }, async () => {
  const redis = await startRedis();
  const QUEUE = 2000;
  const env = { REDIS_URL: redis.url, REDIS_PUBLISH_QUEUE: String(QUEUE) };
  const [owner, other] = await Promise.all([startServer({ env, pipelines: FLOOD_PIPELINES }), startServer({ env, pipelines: FLOOD_PIPELINES })]);
  for (const n of [owner, other]) await waitFor(async () => (await (await fetch(`${n.url}/health`)).json()).redis === 'ok', 10_000);
  const remote = await connect(other.url);
  const created = await (
    await fetch(`${owner.url}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ projectId: projectId('outage'), pipeline: 'flood' }) })
  ).json();
  const seqs = [];
  remote.on('job:logs', (run) => run.forEach((e) => seqs.push(e.seq)));
  for (const name of ['job:progress', 'job:error', 'job:completed']) remote.on(name, (e) => seqs.push(e.seq));
  let completed = false;
  remote.on('job:completed', () => (completed = true));
  assert.equal((await emitAck(remote, 'subscribe:job', { jobId: created.jobId, since: 0, batch: true })).ok, true);
  await waitFor(() => seqs.length > 2_000, 30_000, { what: 'lines through redis before the outage' });

  await redis.stop();
  await waitFor(async () => (await (await fetch(`${owner.url}/health`)).json()).redis === 'down', 10_000);
  const started = Date.now();
  let maxQueued = 0;
  const samples = [];
  while (Date.now() - started < OUTAGE_SECS * 1000) {
    await sleep(1_000);
    const h = await (await fetch(`${owner.url}/health`)).json();
    maxQueued = Math.max(maxQueued, h.cluster?.unpublished_events ?? 0);
    samples.push(rssBytes(owner.proc.pid));
  }
  const job = await (await fetch(`${owner.url}/api/jobs/${created.jobId}`)).json();
  assert.ok(job.lastSeq > seqs.length + 20_000, `the build went on during the outage (${job.lastSeq} events, ${seqs.length} seen remotely)`);
  // The queue, plus the one batch (at most 512) being retried.
  assert.ok(maxQueued <= QUEUE + 512, `at most REDIS_PUBLISH_QUEUE events queued, plus one batch in flight (saw ${maxQueued})`);
  // From 10 s into the outage to its end, ~35,000 more events were recorded; an
  // unbounded queue holds them all (tens of MB). Bounded, memory stays flat.
  const grew = Math.max(...samples.slice(10)) - samples[9];
  assert.ok(grew < 12 * 1024 * 1024, `RSS grew ${(grew / 1048576).toFixed(1)} MiB during the outage`);

  await startRedis(redis.port);
  await waitFor(() => completed, 150_000, { what: 'the remote client to see the job complete' });
  const last = (await (await fetch(`${owner.url}/api/jobs/${created.jobId}`)).json()).lastSeq;
  await waitFor(() => seqs.length >= last, 30_000, { what: 'every event on the other node' });
  assertSeqSeries(seqs, 1, last, 'client on the other node, across the outage');
});
