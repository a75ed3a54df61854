// Seed 004 (project generator "Phase 5") against the real server: its
// `websocket.js` service, unchanged but for REACT_APP_BACKEND_URL, on
// `WS /api/ws/projects/{id}`: every job of the project, logs included;
// `POST /api/projects/{id}/generate`.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, createJob, waitFor, waitForJobFinished, fetchLog, sleep, getJson, mintHmacJwt } from './helpers.mjs';
import { COMPAT_PIPELINES, rawSocket, wsBase, assertRising, staysOpen, postJson } from './compat-helpers.mjs';
import { ProjectSocketService } from '../support/seed-clients.mjs';

function parsed(service) {
  return service.frames.map((f) => JSON.parse(f));
}

test('a project page: connection, then every job of the project with its logs; generate; a second page the same stream', async () => {
  const server = await startServer({ env: { MAX_CONCURRENT_JOBS: '4', COMPAT_GENERATE_PIPELINE: 'demo' }, pipelines: COMPAT_PIPELINES });
  const project = 'gen-1';
  const running = await createJob(server.url, project, 'demo-slow');
  await waitFor(async () => (await getJson(`${server.url}/api/jobs/${running}`)).body.progress >= 50, 20_000, { what: 'the slow job to build' });
  const service = new ProjectSocketService(server.url);
  let connected = false;
  const completions = [];
  service.on('completion', (m) => completions.push(m));
  service.connect(project, () => {}, () => {}, (up) => (connected = up));
  await waitFor(() => service.frames.length >= 1, 10_000, { what: 'the connection message' });
  assert.equal(connected, true);
  const [welcome] = parsed(service);
  assert.equal(welcome.type, 'connection');
  assert.equal(welcome.project_id, project);
  assert.equal(welcome.message, `Connected to project ${project}`);
  assert.deepEqual(welcome.active_jobs, [{ job_id: running, status: 'running', phase: 'building', progress: 50 }]);

  const generated = await postJson(`${server.url}/api/projects/${project}/generate`, '');
  assert.equal(generated.status, 202, JSON.stringify(generated.body));
  assert.deepEqual(Object.keys(generated.body), ['project_id', 'job_id', 'status']);
  assert.equal(generated.body.status, 'queued');
  const demo = generated.body.job_id;
  const failing = (await postJson(`${server.url}/api/projects/${project}/generate`, { pipeline: 'demo-fail', other: 1 })).body.job_id;
  await waitFor(() => completions.some((c) => c.job_id === demo) && completions.some((c) => c.job_id === failing), 60_000, {
    what: 'the two completions',
  });
  assert.equal((await postJson(`${server.url}/api/jobs/${running}/cancel`, {})).status, 202);
  await waitFor(() => completions.length === 3, 30_000, { what: 'the cancel' });

  const all = parsed(service);
  const of = (id) => all.filter((m) => m.job_id === id);
  // demo, from its first event: status_update queued, agents, logs, completion last.
  const d = of(demo);
  assert.deepEqual(d[0], { ...d[0], type: 'status_update', status: 'queued', phase: 'queued', progress: 0 });
  assert.deepEqual(
    d.filter((m) => m.type === 'agent_update').map((m) => `${m.agent} ${m.status}`),
    ['prepare started', 'prepare completed', 'install started', 'install completed', 'build started', 'build completed', 'test started', 'test completed'],
  );
  const buildDone = d.find((m) => m.type === 'agent_update' && m.agent === 'build' && m.status === 'completed');
  assert.match(buildDone.message, /^Completed build agent in \d+\.\ds$/);
  assert.equal(typeof buildDone.duration, 'number');
  assertRising(d.filter((m) => m.type === 'status_update').map((m) => m.progress), 'progress');
  assert.deepEqual(d.slice(-2).map((m) => m.type), ['status_update', 'completion']);
  assert.deepEqual(
    [d[d.length - 1].status, d[d.length - 1].success, d[d.length - 1].message, d[d.length - 1].artifacts],
    ['completed', true, 'Build completed successfully', ['app.bin']],
  );
  assert.deepEqual(d.filter((m) => m.type === 'log').map((m) => m.message), await fetchLog(server.url, demo));
  // demo-fail: the failed agent carries the error; completion says why.
  const f = of(failing);
  assert.deepEqual(
    f.find((m) => m.type === 'agent_update' && m.status === 'failed'),
    { ...f.find((m) => m.type === 'agent_update' && m.status === 'failed'), agent: 'build', message: 'The build step exited with code 1' },
  );
  assert.equal(f[f.length - 1].message, 'Build failed: The build step exited with code 1');
  // The job that ran before the page: only what happened after it connected, then its cancel.
  const r = of(running);
  assert.equal(r[0].type, 'log');
  assert.deepEqual(r.slice(-3).map((m) => `${m.type} ${m.status ?? ''}`), ['agent_update cancelled', 'status_update cancelled', 'completion cancelled']);
  const log = await fetchLog(server.url, running);
  const seen = r.filter((m) => m.type === 'log').map((m) => m.message);
  assert.deepEqual(log.slice(-seen.length), seen, 'a contiguous tail of the log');
  // Every message names the project and carries an ISO timestamp.
  for (const m of all) {
    assert.equal(m.project_id, project);
    assert.match(m.timestamp, /Z$/);
  }
  // A second page gets the same messages for the jobs it saw whole.
  const second = new ProjectSocketService(server.url);
  second.connect(project, () => {}, () => {}, () => {});
  await waitFor(() => second.frames.length >= 1, 10_000, { what: 'the second connection message' });
  const again = (await postJson(`${server.url}/api/projects/${project}/generate`, {})).body.job_id;
  await waitFor(() => parsed(second).some((m) => m.type === 'completion' && m.job_id === again), 60_000, { what: 'the second page' });
  await waitFor(() => parsed(service).some((m) => m.type === 'completion' && m.job_id === again), 10_000, { what: 'the first page' });
  assert.deepEqual(
    second.frames.filter((x) => JSON.parse(x).job_id === again),
    service.frames.filter((x) => JSON.parse(x).job_id === again),
  );
  // Heartbeat: JSON or text ping, pong; the connection stays open.
  service.send({ type: 'ping' });
  service.ws.send('ping');
  await waitFor(() => parsed(service).filter((m) => m.type === 'pong').length === 2, 5000, { what: 'pongs' });
  assert.ok(await staysOpen(service.ws));
  assert.deepEqual(service.closes, []);
  service.disconnect();
  second.disconnect();
});

test('generate: errors; jwt: builder needed, project claims apply', async () => {
  const SECRET = 'compat-gateway-secret-at-least-32-bytes!';
  const server = await startServer({ env: { AUTH_MODE: 'jwt', JWT_SECRET: SECRET }, pipelines: COMPAT_PIPELINES });
  const builder = mintHmacJwt({ sub: 'b', role: 'builder', projects: ['mine'] }, SECRET);
  const viewer = mintHmacJwt({ sub: 'v', projects: ['mine'] }, SECRET);
  const auth = (t) => ({ authorization: `Bearer ${t}` });
  const noPipeline = await postJson(`${server.url}/api/projects/mine/generate`, '', auth(builder));
  assert.equal(noPipeline.status, 400);
  assert.match(noPipeline.body.error, /COMPAT_GENERATE_PIPELINE/);
  assert.equal((await postJson(`${server.url}/api/projects/mine/generate`, { pipeline: 'nope' }, auth(builder))).status, 400);
  assert.equal((await postJson(`${server.url}/api/projects/mine/generate`, { pipeline: 'demo' }, auth(viewer))).status, 403);
  assert.equal((await postJson(`${server.url}/api/projects/theirs/generate`, { pipeline: 'demo' }, auth(builder))).status, 403);
  assert.equal((await postJson(`${server.url}/api/projects/mine/generate`, { pipeline: 'demo' })).status, 401);
  assert.equal((await postJson(`${server.url}/api/projects/mine/generate`, { pipeline: 'demo' }, auth(builder))).status, 202);
  const refused = rawSocket(`${wsBase(server)}/api/ws/projects/theirs?token=${viewer}`);
  assert.deepEqual(await refused.closed, { code: 1008, reason: 'forbidden' });
  const missing = rawSocket(`${wsBase(server)}/api/ws/projects/mine`);
  assert.deepEqual(await missing.closed, { code: 1008, reason: 'Authentication error' });
  const ok = rawSocket(`${wsBase(server)}/api/ws/projects/mine?token=${viewer}`);
  await waitFor(() => ok.frames.length > 0, 10_000, { what: 'connection' });
  assert.equal(JSON.parse(ok.frames[0]).type, 'connection');
  ok.ws.close();
  await sleep(100);
});

test('COMPAT_GENERATE_PIPELINE must name a pipeline: start-up fails naming it', async () => {
  await assert.rejects(startServer({ env: { COMPAT_GENERATE_PIPELINE: 'nope' }, pipelines: COMPAT_PIPELINES }));
});
