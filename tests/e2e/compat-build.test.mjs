// Seed 000 (VibeAI "Live Build WebSocket System") against the real server: its
// `BuildLogStream` class and React view, unchanged but for the base URL, watch
// builds on `WS /ws/build/{id}`; its REST endpoints; origin, jwt and limits.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

import { startServer, createJob, waitFor, waitForJobFinished, fetchLog, getJson, mintHmacJwt, sleep } from './helpers.mjs';
import { COMPAT_PIPELINES, wsBase, rawSocket, assertRising, staysOpen, postJson } from './compat-helpers.mjs';
import { BuildLogStream, buildMonitor } from '../support/seed-clients.mjs';

const env = { MAX_CONCURRENT_JOBS: '4' };

/** A seed-000 page watching `jobId`, until its `complete`. */
async function watch(server, jobId, token = 'undefined') {
  const stream = new BuildLogStream(jobId, token, wsBase(server));
  const view = buildMonitor(stream);
  stream.connect();
  await waitFor(() => view.artifacts !== null, 60_000, { what: `complete of ${jobId}` });
  return { stream, view };
}

function messages(stream) {
  return stream.frames.filter((f) => f !== 'pong').map((f) => JSON.parse(f));
}

test('a demo build watched from its start: connected, the whole history, SUCCESS, complete; the log as GET /log has it', async () => {
  const server = await startServer({ env, pipelines: COMPAT_PIPELINES });
  const jobId = await createJob(server.url, 'proj-123', 'demo');
  const { stream, view } = await watch(server, jobId);
  const all = messages(stream);
  assert.deepEqual(all[0], { type: 'connected', build_id: jobId, message: `Connected to build ${jobId}` });
  const statuses = all.filter((m) => m.type === 'status');
  assert.deepEqual(
    statuses.map((m) => `${m.status} ${m.progress}`),
    ['QUEUED 0', 'RUNNING 10', 'RUNNING 30', 'RUNNING 50', 'RUNNING 70', 'RUNNING 90', 'RUNNING 100', 'SUCCESS 100'],
  );
  assertRising(statuses.map((m) => m.progress), 'progress');
  const last = all[all.length - 1];
  assert.equal(last.type, 'complete');
  assert.deepEqual(last.artifacts, ['app.bin']);
  assert.equal(last.success, true);
  assert.equal(all[all.length - 2].status, 'SUCCESS');
  for (const m of all.slice(1)) {
    assert.equal(typeof m.timestamp, 'number', JSON.stringify(m));
    assert.ok(Math.abs(m.timestamp * 1000 - Date.now()) < 120_000, 'Unix seconds');
    assert.deepEqual(Object.keys(m).filter((k) => !['stream', 'seq'].includes(k)).sort(), {
      log: ['text', 'timestamp', 'type'],
      status: ['progress', 'status', 'timestamp', 'type'],
      complete: ['artifacts', 'success', 'timestamp', 'type'],
    }[m.type]);
  }
  // Every event once, in seq order.
  const seqs = [...new Set(all.slice(1).map((m) => m.seq))];
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1));
  assert.deepEqual(view.logs, await fetchLog(server.url, jobId));
  assert.equal(view.status, 'SUCCESS');
  assert.equal(view.progress, 100);
  // The connection stays open after the end; the text ping gets the text pong.
  assert.ok(await staysOpen(stream.ws), 'still open after the job finished');
  stream.ping();
  await waitFor(() => stream.frames.includes('pong'), 5000, { what: 'pong' });
  assert.equal(stream.parseErrors, 1, 'the class chokes on the text pong, as with its original server');
  // A second client gets the same bytes.
  const second = new BuildLogStream(jobId, 'undefined', wsBase(server));
  const secondView = buildMonitor(second);
  second.connect();
  await waitFor(() => secondView.artifacts !== null, 30_000, { what: 'the second complete' });
  assert.deepEqual(second.frames, stream.frames.filter((f) => f !== 'pong'));
  assert.deepEqual(stream.closes, []);
  stream.disconnect();
  second.disconnect();
});

test('a finished build, a failing one and a cancelled one', async () => {
  const server = await startServer({ env, pipelines: COMPAT_PIPELINES });
  const failing = await createJob(server.url, 'p-fail', 'demo-fail');
  const cancelled = await createJob(server.url, 'p-cancel', 'demo-slow');
  await waitForJobFinished(server.url, failing);

  const fail = await watch(server, failing);
  const all = messages(fail.stream);
  const tail = all.slice(-5);
  assert.deepEqual(
    tail.map((m) => m.type),
    ['log', 'log', 'error', 'status', 'complete'],
  );
  assert.match(tail[0].text, /error\[E0425\]/);
  assert.equal(tail[1].text, 'The build step exited with code 1');
  assert.equal(tail[2].error, 'The build step exited with code 1');
  assert.deepEqual([tail[3].status, tail[3].progress], ['FAILED', 50]);
  assert.deepEqual([tail[4].success, tail[4].artifacts], [false, []]);
  assert.deepEqual(fail.view.errors, ['The build step exited with code 1']);
  assert.equal(fail.view.status, 'FAILED');
  assert.deepEqual(fail.view.logs, await fetchLog(server.url, failing));

  const stream = new BuildLogStream(cancelled, 'undefined', wsBase(server));
  const view = buildMonitor(stream);
  stream.connect();
  await waitFor(() => view.logs.length > 20, 30_000, { what: 'some lines of the slow build' });
  const res = await postJson(`${server.url}/api/jobs/${cancelled}/cancel`, {});
  assert.equal(res.status, 202);
  await waitFor(() => view.artifacts !== null, 30_000, { what: 'complete after cancel' });
  assert.equal(view.status, 'FAILED');
  assert.match(view.logs[view.logs.length - 1], /^Cancelled during the build step/);
  assert.equal(view.statuses[view.statuses.length - 1].split(':')[0], 'FAILED');
  assert.deepEqual(view.logs, await fetchLog(server.url, cancelled));
  assert.ok(await staysOpen(stream.ws));
  fail.stream.disconnect();
  stream.disconnect();
});

test('a build that does not exist yet is waited for; ?since=N resumes without duplicates', async () => {
  const server = await startServer({ env, pipelines: COMPAT_PIPELINES });
  const early = rawSocket(`${wsBase(server)}/ws/build/not-yet-1`);
  await early.opened;
  await sleep(300);
  assert.deepEqual(early.json().map((m) => m.type), ['connected']);
  const jobId = await createJob(server.url, 'p-since', 'demo');
  await waitForJobFinished(server.url, jobId);
  const resumed = rawSocket(`${wsBase(server)}/ws/build/${jobId}?since=10`);
  await waitFor(() => resumed.json().some((m) => m.type === 'complete'), 30_000, { what: 'complete' });
  const seqs = [...new Set(resumed.json().slice(1).map((m) => m.seq))];
  assert.equal(seqs[0], 11);
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 11));
  const bad = rawSocket(`${wsBase(server)}/ws/build/${jobId}?since=abc`);
  await assert.rejects(bad.opened, (e) => e.status === 400);
  early.ws.close();
  resumed.ws.close();
});

test('REST: /build/start, /build/download, /ws/active-builds', async () => {
  const server = await startServer({ env, pipelines: COMPAT_PIPELINES });
  const started = await postJson(`${server.url}/build/start`, { project_id: 'proj-123', build_type: 'demo', extra: 'ignored' });
  assert.equal(started.status, 200, JSON.stringify(started.body));
  const buildId = started.body.build_id;
  assert.deepEqual(Object.keys(started.body), ['build_id']);
  for (const [body, what] of [
    [{ project_id: 'proj-123', build_type: 'flutter_android' }, /unknown pipeline/],
    [{ build_type: 'demo' }, /project_id/],
    [{ project_id: '../x', build_type: 'demo' }, /invalid project_id/],
    ['[1,2]', /JSON object/],
    ['{nope', /invalid JSON/],
  ]) {
    const res = await postJson(`${server.url}/build/start`, body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.match(res.body.error, what);
  }

  const wrongMethod = await getJson(`${server.url}/build/start`);
  assert.equal(wrongMethod.status, 405);
  assert.match(wrongMethod.body.error, /method not allowed/);

  const watcher = rawSocket(`${wsBase(server)}/ws/build/${buildId}`);
  const other = rawSocket(`${wsBase(server)}/ws/build/${buildId}`);
  const sio = io(server.url, { path: '/ws', transports: ['websocket'] });
  await Promise.all([watcher.opened, other.opened, new Promise((r) => sio.once('connect', r))]);
  await new Promise((r) => sio.emit('subscribe:job', buildId, r));
  const active = await getJson(`${server.url}/ws/active-builds`);
  assert.equal(active.status, 200);
  assert.deepEqual(active.body, { active_builds: [{ build_id: buildId, clients: 3 }] });
  other.ws.close();
  await other.closed;
  await waitFor(async () => (await getJson(`${server.url}/ws/active-builds`)).body.active_builds[0]?.clients === 2, 5000, {
    what: 'a closed connection to stop counting',
  });
  sio.close();
  watcher.ws.close();
  await watcher.closed;
  await waitFor(async () => (await getJson(`${server.url}/ws/active-builds`)).body.active_builds.length === 0, 5000, {
    what: 'no watcher left',
  });

  await waitForJobFinished(server.url, buildId);
  const download = await getJson(`${server.url}/build/download?build_id=${buildId}`);
  assert.equal(download.status, 200);
  assert.deepEqual(download.body.files, ['app.bin']);
  assert.equal(download.body.build_id, buildId);
  const file = await fetch(`${server.url}${download.body.urls[0]}`);
  assert.equal(file.status, 200);
  assert.equal((await getJson(`${server.url}/build/download?build_id=nope`)).status, 404);
  assert.equal((await getJson(`${server.url}/build/download`)).status, 400);
});

test('Origin outside WEBSOCKET_CORS_ORIGIN gets 403; invalid ids 400; socket.io-client still connects on /ws', async () => {
  const allowed = 'http://app.example.com';
  const server = await startServer({ env: { ...env, WEBSOCKET_CORS_ORIGIN: allowed }, pipelines: COMPAT_PIPELINES });
  for (const path of ['/ws/build/j1', '/api/v1/ws/jobs/j1/updates', '/ws/builds/j1/', '/api/ws/projects/p1']) {
    const foreign = rawSocket(`${wsBase(server)}${path}`, { origin: 'http://evil.example' });
    await assert.rejects(foreign.opened, (e) => e.status === 403 && /origin/.test(e.body), path);
    const ok = rawSocket(`${wsBase(server)}${path}`, { origin: allowed });
    await ok.opened;
    const script = rawSocket(`${wsBase(server)}${path}`);
    await script.opened;
    ok.ws.close();
    script.ws.close();
  }
  for (const path of ['/ws/build/..', '/ws/build/a%20b', '/api/v1/ws/jobs/-x/updates', '/ws/builds/CON/', '/api/ws/projects/a%2Fb']) {
    const bad = rawSocket(`${wsBase(server)}${path}`);
    await assert.rejects(bad.opened, (e) => e.status === 400 || e.status === 404, path);
  }
  // Plain GET on a gateway path: a JSON 400, not Engine.IO's answer.
  const plain = await getJson(`${server.url}/ws/build/j1`);
  assert.equal(plain.status, 400);
  assert.match(plain.body.error, /WebSocket upgrade/);
  for (const transports of [['polling'], ['websocket']]) {
    const sio = io(server.url, { path: '/ws', transports, extraHeaders: { origin: allowed } });
    await new Promise((resolve, reject) => {
      sio.once('connect', resolve);
      sio.once('connect_error', reject);
    });
    sio.close();
  }
});

test('COMPAT_GATEWAYS=none: every gateway path is 404, Socket.IO unchanged', async () => {
  const server = await startServer({ env: { COMPAT_GATEWAYS: 'none' }, pipelines: COMPAT_PIPELINES });
  for (const path of ['/ws/build/j1', '/ws/active-builds', '/build/download?build_id=j1', '/ws/builds/j1/', '/api/v1/ws/jobs/j1/updates', '/api/ws/projects/p1']) {
    const res = await getJson(`${server.url}${path}`);
    assert.equal(res.status, 404, path);
    assert.match(res.body.error, /COMPAT_GATEWAYS/);
  }
  assert.equal((await postJson(`${server.url}/build/start`, { project_id: 'p', build_type: 'demo' })).status, 404);
  assert.equal((await postJson(`${server.url}/api/projects/p/generate`, {})).status, 404);
  const refused = rawSocket(`${wsBase(server)}/ws/build/j1`);
  await assert.rejects(refused.opened, (e) => e.status === 404);
  const sio = io(server.url, { path: '/ws', transports: ['websocket'] });
  await new Promise((r) => sio.once('connect', r));
  sio.close();
  const health = await getJson(`${server.url}/health`);
  assert.deepEqual(health.body.compat, { connections: 0, build: 0, jobs: 0, builds: 0, projects: 0 });
});

test('jwt: missing or bad token 1008, another project 1008, the 11th connection of a user refused', async () => {
  const SECRET = 'compat-gateway-secret-at-least-32-bytes!';
  const server = await startServer({
    env: { ...env, AUTH_MODE: 'jwt', JWT_SECRET: SECRET },
    pipelines: COMPAT_PIPELINES,
  });
  const admin = mintHmacJwt({ sub: 'admin', role: 'admin' }, SECRET);
  const res = await postJson(`${server.url}/build/start`, { project_id: 'mine', build_type: 'demo' }, { authorization: `Bearer ${admin}` });
  assert.equal(res.status, 200);
  const jobId = res.body.build_id;
  const viewer = mintHmacJwt({ sub: 'viewer-1', projects: ['mine'] }, SECRET);
  const stranger = mintHmacJwt({ sub: 'viewer-2', projects: ['theirs'] }, SECRET);

  for (const token of ['undefined', '', 'garbage', mintHmacJwt({ sub: 'x' }, 'another-secret-another-secret-12345')]) {
    const stream = new BuildLogStream(jobId, token, wsBase(server));
    stream.connect();
    await waitFor(() => stream.closes.length > 0, 10_000, { what: 'the close' });
    stream.disconnect();
    assert.deepEqual(stream.closes[0], { code: 1008, reason: 'Authentication error' }, `token ${token}`);
  }
  const foreign = new BuildLogStream(jobId, stranger, wsBase(server));
  foreign.connect();
  await waitFor(() => foreign.closes.length > 0, 10_000, { what: 'the close' });
  foreign.disconnect();
  assert.deepEqual(foreign.closes[0], { code: 1008, reason: 'forbidden' });
  // Unknown job with a restricted token: the same answer as another project's.
  const unknown = rawSocket(`${wsBase(server)}/ws/build/no-such-job?token=${stranger}`);
  assert.equal((await unknown.closed).code, 1008);

  // Ten connections of one user (Socket.IO and gateways together); the 11th is refused.
  const held = [];
  for (let i = 0; i < 4; i++) {
    const sio = io(server.url, { path: '/ws', transports: ['websocket'], auth: { token: viewer } });
    await new Promise((resolve, reject) => {
      sio.once('connect', resolve);
      sio.once('connect_error', reject);
    });
    held.push({ close: () => sio.close() });
  }
  for (let i = 0; i < 6; i++) {
    const c = rawSocket(`${wsBase(server)}/ws/build/${jobId}?token=${viewer}`);
    await waitFor(() => c.frames.length > 0, 10_000, { what: 'connected' });
    held.push({ close: () => c.ws.close() });
  }
  const eleventh = rawSocket(`${wsBase(server)}/ws/build/${jobId}?token=${viewer}`);
  assert.deepEqual(await eleventh.closed, { code: 1008, reason: 'Too many connections' });
  const sio = io(server.url, { path: '/ws', transports: ['websocket'], auth: { token: viewer }, reconnection: false });
  const err = await new Promise((resolve) => sio.once('connect_error', resolve));
  assert.match(err.message, /Too many connections/);
  sio.close();
  // Another user is not affected; a closed connection gives its slot back.
  const other = rawSocket(`${wsBase(server)}/ws/build/${jobId}?token=${admin}`);
  await waitFor(() => other.frames.length > 0, 10_000, { what: 'connected' });
  held.pop().close();
  await sleep(300);
  const again = rawSocket(`${wsBase(server)}/ws/build/${jobId}?token=${viewer}`);
  await waitFor(() => again.frames.length > 0, 10_000, { what: 'connected again' });
  const health = await getJson(`${server.url}/health`);
  assert.ok(health.body.compat.build >= 7, JSON.stringify(health.body.compat));
  for (const h of held) h.close();
  other.ws.close();
  again.ws.close();
});
