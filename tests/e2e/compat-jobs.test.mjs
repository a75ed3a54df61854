// Seed 001 (a6hub "WebSocket Integration Guide") against the real server: its
// `useJobWebSocket` hook and build page, unchanged but for the base URL, on
// `WS /api/v1/ws/jobs/{id}/updates`; close codes 4001/4003/4004.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, createJob, waitFor, waitForJobFinished, fetchLog, mintHmacJwt, sleep, getJson } from './helpers.mjs';
import { COMPAT_PIPELINES, wsBase, rawSocket, assertRising, staysOpen, postJson } from './compat-helpers.mjs';
import { buildPage } from '../support/seed-clients.mjs';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

function parsed(hook) {
  return hook.frames.map((f) => JSON.parse(f));
}

test('a demo build watched from the queue: connected, status, step, progress, log, complete, exactly as the seed gives them', async () => {
  const server = await startServer({ env: { MAX_CONCURRENT_JOBS: '1' }, pipelines: COMPAT_PIPELINES });
  const blocker = await createJob(server.url, 'p-block', 'demo-slow');
  const jobId = await createJob(server.url, 'p-demo', 'demo');
  const { page, hook } = buildPage('undefined', jobId, wsBase(server));
  hook.connect();
  await waitFor(() => hook.frames.length >= 1, 10_000, { what: 'connected' });
  const [connected] = parsed(hook);
  assert.deepEqual(connected.data, { job_id: jobId, status: 'pending', current_step: 'queued', progress: 0 });
  assert.match(connected.timestamp, ISO);
  assert.equal((await postJson(`${server.url}/api/jobs/${blocker}/cancel`, {})).status, 202);
  await waitFor(() => page.completes.length === 1, 60_000, { what: 'complete' });
  const all = parsed(hook);
  const types = all.map((m) => m.type);
  assert.deepEqual(types.slice(0, 4), ['connected', 'status', 'step', 'progress']);
  assert.deepEqual(all[1].data, { status: 'running' });
  assert.deepEqual(all[2].data, { step_name: 'prepare', step_label: 'Preparing the workspace' });
  assert.deepEqual(all[3].data, { progress: 10, current_step: 'prepare', completed_steps: [] });
  assert.deepEqual(page.steps, [
    ['prepare', 'Preparing the workspace'],
    ['install', 'Installing dependencies'],
    ['build', 'Running the build'],
    ['test', 'Running the tests'],
  ]);
  const progress = all.filter((m) => m.type === 'progress').map((m) => m.data);
  assert.deepEqual(
    progress.map((p) => [p.progress, p.current_step, p.completed_steps.length]),
    [
      [10, 'prepare', 0],
      [30, 'install', 1],
      [50, 'build', 2],
      [70, 'test', 3],
      [90, 'completed', 4],
      [100, 'completed', 4],
    ],
  );
  assertRising(progress.map((p) => p.progress), 'progress');
  assert.deepEqual(all[all.length - 1].data, { status: 'completed', message: 'Build completed successfully' });
  assert.deepEqual(page.statuses, ['running'], 'no terminal status message, only complete');
  for (const m of all) {
    assert.deepEqual(Object.keys(m), ['type', 'data', 'timestamp']);
    assert.match(m.timestamp, ISO);
  }
  // The page's log is the job's log, each line with its newline.
  const log = await fetchLog(server.url, jobId);
  assert.equal(page.logs, log.map((l) => `${l}\n`).join(''));
  // Timestamps are the events': the same as the recorded ones.
  const events = (await getJson(`${server.url}/api/jobs/${jobId}/events?limit=1000`)).body.events;
  const logStamps = events.filter((e) => e.event === 'job:log').map((e) => e.data.timestamp);
  assert.deepEqual(all.filter((m) => m.type === 'log').map((m) => m.timestamp), logStamps);
  assert.ok(await staysOpen(hook.ws), 'the server does not close because the job finished');
  hook.ws.send('ping');
  hook.ws.send(JSON.stringify({ type: 'ping' }));
  hook.ws.send('something else');
  await waitFor(() => parsed(hook).filter((m) => m.type === 'pong').length === 2, 5000, { what: 'two pongs' });
  assert.deepEqual(parsed(hook).find((m) => m.type === 'pong').data, {});
  hook.disconnect();
  await sleep(200);
  assert.deepEqual(hook.closes.map((c) => c.code), [1000], 'the close is answered');
});

test('a finished job: connected then complete; demo-fail: error then complete failed; cancel; a second client the same suffix', async () => {
  const server = await startServer({ env: { MAX_CONCURRENT_JOBS: '4' }, pipelines: COMPAT_PIPELINES });
  const done = await createJob(server.url, 'p1', 'demo');
  const failing = await createJob(server.url, 'p1', 'demo-fail');
  const slow = await createJob(server.url, 'p1', 'demo-slow');
  await waitForJobFinished(server.url, done);
  await waitForJobFinished(server.url, failing);

  const finished = buildPage('undefined', done, wsBase(server));
  finished.hook.connect();
  await waitFor(() => finished.page.completes.length === 1, 10_000, { what: 'complete' });
  const f = parsed(finished.hook);
  assert.deepEqual(f.map((m) => m.type), ['connected', 'complete']);
  assert.deepEqual(f[0].data, { job_id: done, status: 'completed', current_step: 'completed', progress: 100 });

  const fail = buildPage('undefined', failing, wsBase(server));
  fail.hook.connect();
  await waitFor(() => fail.page.completes.length === 1, 10_000, { what: 'complete' });
  assert.deepEqual(parsed(fail.hook)[0].data, { job_id: failing, status: 'failed', current_step: 'build', progress: 50 });
  assert.deepEqual(fail.page.completes, [['failed', 'Build failed: The build step exited with code 1']]);

  // The replay extension: everything after seq 0, translated, after connected.
  const replay = rawSocket(`${wsBase(server)}/api/v1/ws/jobs/${failing}/updates?since=0`);
  await waitFor(() => replay.json().some((m) => m.type === 'complete'), 10_000, { what: 'complete' });
  const r = replay.json();
  assert.deepEqual(r[0].data, { job_id: failing, status: 'pending', current_step: 'queued', progress: 0 });
  assert.deepEqual(r.slice(-3).map((m) => m.type), ['log', 'error', 'complete']);
  assert.deepEqual(r[r.length - 2].data, { error_message: 'The build step exited with code 1' });
  const replayLog = r.filter((m) => m.type === 'log').map((m) => m.data.log_line).join('');
  assert.equal(replayLog, (await fetchLog(server.url, failing)).map((l) => `${l}\n`).join(''));

  const a = buildPage('undefined', slow, wsBase(server));
  a.hook.connect();
  await waitFor(() => a.page.logs.split('\n').length > 30, 30_000, { what: 'lines' });
  const b = buildPage('undefined', slow, wsBase(server));
  b.hook.connect();
  await waitFor(() => b.hook.frames.length > 5, 30_000, { what: 'lines on the second client' });
  assert.equal((await postJson(`${server.url}/api/jobs/${slow}/cancel`, {})).status, 202);
  await waitFor(() => a.page.completes.length === 1 && b.page.completes.length === 1, 30_000, { what: 'both completes' });
  assert.deepEqual(a.page.completes, [['cancelled', 'Build cancelled']]);
  // The later client's messages after its snapshot are the earlier one's last ones.
  const later = b.hook.frames.slice(1);
  assert.deepEqual(a.hook.frames.slice(-later.length), later);
  assert.ok(a.page.logs.endsWith(b.page.logs));
  assert.ok(await staysOpen(a.hook.ws));
  for (const c of [finished, fail, a, b]) c.hook.disconnect();
  replay.ws.close();
});

test('unknown job: 4004 Job not found; jwt: 4001 without a valid token, 4003 for another project', async () => {
  const SECRET = 'compat-gateway-secret-at-least-32-bytes!';
  const server = await startServer({ env: { AUTH_MODE: 'jwt', JWT_SECRET: SECRET }, pipelines: COMPAT_PIPELINES });
  const admin = mintHmacJwt({ sub: 'admin', role: 'admin' }, SECRET);
  const res = await postJson(`${server.url}/build/start`, { project_id: 'mine', build_type: 'demo' }, { authorization: `Bearer ${admin}` });
  const jobId = res.body.build_id;
  const cases = [
    [`no-such-job?token=${admin}`, 4004, 'Job not found'],
    [`${jobId}?token=garbage`, 4001, 'Authentication failed'],
    [`${jobId}`, 4001, 'Authentication failed'],
    [`${jobId}?token=${mintHmacJwt({ sub: 'v', projects: ['theirs'] }, SECRET)}`, 4003, 'Access denied'],
  ];
  for (const [rest, code, reason] of cases) {
    const [id, query] = rest.split('?');
    const c = rawSocket(`${wsBase(server)}/api/v1/ws/jobs/${id}/updates${query ? `?${query}` : ''}`);
    assert.deepEqual(await c.closed, { code, reason }, rest);
  }
  const { hook } = buildPage(mintHmacJwt({ sub: 'v', projects: ['mine'] }, SECRET), jobId, wsBase(server));
  hook.connect();
  await waitFor(() => hook.frames.length > 0, 10_000, { what: 'connected with a token' });
  assert.equal(parsed(hook)[0].data.job_id, jobId);
  // Authorization: Bearer works for non-browser clients.
  const bearer = rawSocket(`${wsBase(server)}/api/v1/ws/jobs/${jobId}/updates`, { headers: { authorization: `Bearer ${admin}` } });
  await waitFor(() => bearer.frames.length > 0, 10_000, { what: 'connected with a bearer token' });
  hook.disconnect();
  bearer.ws.close();
});
