// REST API contract: job creation and validation, job state, listing,
// artifacts (including traversal attempts) and the pipeline catalogue.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import {
  startServer,
  getJson,
  postJob,
  createJob,
  getJob,
  waitFor,
  waitForJobFinished,
  projectId as newProjectId,
} from './helpers.mjs';

let server;

before(async () => {
  server = await startServer({ env: { MAX_CONCURRENT_JOBS: '4' } });
});

after(async () => {
  if (server) await server.stop();
});

const post = (body, headers = { 'content-type': 'application/json' }) =>
  getJson(`${server.url}/api/jobs`, { method: 'POST', headers, body });

test('POST /api/jobs creates a job and returns 201 with its id', async () => {
  const projectId = newProjectId('rest');
  const res = await postJob(server.url, projectId, 'quick');
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  assert.equal(typeof res.body.jobId, 'string');
  assert.match(res.body.jobId, /^[A-Za-z0-9._:-]{1,128}$/, 'job id is itself a valid id');
  assert.equal(res.body.projectId, projectId);
  assert.equal(res.body.pipeline, 'quick');
  assert.equal(typeof res.body.status, 'string');

  const other = await createJob(server.url, projectId, 'quick');
  assert.notEqual(other, res.body.jobId, 'ids are unique');

  const job = await waitForJobFinished(server.url, res.body.jobId);
  for (const k of ['jobId', 'projectId', 'pipeline', 'status', 'phase', 'progress', 'message', 'createdAt', 'startedAt', 'finishedAt', 'artifacts', 'lastSeq', 'epoch']) {
    assert.ok(k in job, `job state has ${k}`);
  }
  assert.equal(job.status, 'completed');
  assert.ok(Date.parse(job.createdAt) <= Date.parse(job.startedAt));
  assert.ok(Date.parse(job.startedAt) <= Date.parse(job.finishedAt));
});

test('POST /api/jobs rejects bad input with a JSON error', async () => {
  const cases = [
    ['unknown pipeline', JSON.stringify({ projectId: 'p1', pipeline: 'nope' }), [400]],
    ['missing pipeline', JSON.stringify({ projectId: 'p1' }), [400, 422]],
    ['missing projectId', JSON.stringify({ pipeline: 'quick' }), [400, 422]],
    ['projectId with a slash', JSON.stringify({ projectId: 'a/b', pipeline: 'quick' }), [400]],
    ['projectId with a space', JSON.stringify({ projectId: 'a b', pipeline: 'quick' }), [400]],
    ['empty projectId', JSON.stringify({ projectId: '', pipeline: 'quick' }), [400]],
    ['129-character projectId', JSON.stringify({ projectId: 'x'.repeat(129), pipeline: 'quick' }), [400]],
    ['numeric projectId', JSON.stringify({ projectId: 7, pipeline: 'quick' }), [400, 422]],
    ['malformed JSON', '{"projectId": "p1", "pipeline": ', [400, 422]],
    ['not an object', '"quick"', [400, 422]],
  ];
  const problems = [];
  for (const [label, body, statuses] of cases) {
    const res = await post(body);
    if (!statuses.includes(res.status)) problems.push(`${label}: status ${res.status}, expected ${statuses}`);
    else if (typeof res.body?.error !== 'string' || !res.body.error) problems.push(`${label}: body ${JSON.stringify(res.body)} has no error string`);
  }
  assert.deepEqual(problems, []);

  // A connection reset can eat the response; retry a few times, but any
  // response that does arrive must be 413.
  const outcomes = [];
  for (let i = 0; i < 5 && !outcomes.includes(413); i++) {
    outcomes.push(await postLargeBody(server.port, '/api/jobs', 4 * 1024 * 1024));
  }
  assert.ok(outcomes.includes(413), `too large body gets 413: ${JSON.stringify(outcomes)}`);
  assert.ok(outcomes.every((o) => o === 413 || String(o).startsWith('error ')), `only 413 responses: ${JSON.stringify(outcomes)}`);

  // None of the rejected requests created a job.
  const list = await getJson(`${server.url}/api/jobs?projectId=p1`);
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.jobs, []);
});

test('GET /api/jobs/{id} of an unknown or invalid id is 404', async () => {
  for (const id of ['no-such-job', 'x'.repeat(100)]) {
    const res = await getJson(`${server.url}/api/jobs/${id}`);
    assert.equal(res.status, 404, id);
    assert.equal(typeof res.body?.error, 'string');
  }
});

test('GET /api/jobs filters by status and projectId', async () => {
  const projectId = newProjectId('list');
  const quick = await createJob(server.url, projectId, 'quick');
  await waitForJobFinished(server.url, quick);
  const slow = await createJob(server.url, projectId, 'slow');
  await waitFor(async () => (await getJob(server.url, slow)).status !== 'queued', 10_000, { what: 'slow job to start' });

  const all = await getJson(`${server.url}/api/jobs?projectId=${projectId}`);
  assert.equal(all.status, 200);
  assert.deepEqual(all.body.jobs.map((j) => j.jobId).sort(), [quick, slow].sort());
  assert.ok(all.body.jobs.every((j) => j.projectId === projectId));

  const active = await getJson(`${server.url}/api/jobs?status=active&projectId=${projectId}`);
  assert.deepEqual(active.body.jobs.map((j) => j.jobId), [slow]);
  const finished = await getJson(`${server.url}/api/jobs?status=finished&projectId=${projectId}`);
  assert.deepEqual(finished.body.jobs.map((j) => j.jobId), [quick]);

  const globalActive = await getJson(`${server.url}/api/jobs?status=active`);
  assert.ok(globalActive.body.jobs.some((j) => j.jobId === slow));
  assert.ok(globalActive.body.jobs.every((j) => j.finishedAt === null), 'active jobs are unfinished');

  const none = await getJson(`${server.url}/api/jobs?projectId=${newProjectId('empty')}`);
  assert.deepEqual(none.body.jobs, []);

  const cancel = await getJson(`${server.url}/api/jobs/${slow}/cancel`, { method: 'POST' });
  assert.equal(cancel.status, 202);
  await waitForJobFinished(server.url, slow);
});

test('artifacts are served by name and traversal attempts are 404', async () => {
  const jobId = await createJob(server.url, newProjectId('art'), 'quick');
  const job = await waitForJobFinished(server.url, jobId);
  assert.deepEqual(job.artifacts, ['result.txt']);
  const res = await fetch(`${server.url}/api/jobs/${jobId}/artifacts/result.txt`);
  assert.equal(res.status, 200);
  assert.equal((await res.text()).trim(), 'result');

  const bad = [
    'missing.txt',
    '..%2F..%2F..%2F..%2Fetc%2Fpasswd',
    '%2E%2E%2F%2E%2E%2Fetc%2Fpasswd',
    '..%5C..%5Cetc%5Cpasswd',
    'out%2Fresult.txt',
  ];
  for (const name of bad) {
    const r = await fetch(`${server.url}/api/jobs/${jobId}/artifacts/${name}`);
    const body = await r.text();
    assert.equal(r.status, 404, `artifact ${name}`);
    assert.ok(!body.includes('root:'), `no file contents leaked for ${name}`);
  }
  // Raw (unnormalised) traversal in the path.
  const raw = await rawGet(server.port, `/api/jobs/${jobId}/artifacts/../../../../etc/passwd`);
  assert.ok(!raw.includes('root:'), 'raw ../ traversal leaks nothing');
  assert.match(raw, /^HTTP\/1\.1 (404|400)/, 'raw ../ traversal is refused');

  const unknownJob = await fetch(`${server.url}/api/jobs/no-such-job/artifacts/result.txt`);
  await unknownJob.arrayBuffer();
  assert.equal(unknownJob.status, 404);
});

/**
 * POST a large JSON body on its own connection, in 16 KB chunks, and stop
 * sending as soon as a response arrives (a server refusing an oversized body
 * may close the connection before reading it all).
 */
function postLargeBody(port, path, totalBytes) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v) => {
      if (!done) {
        done = true;
        resolve(v);
      }
    };
    const req = http.request({
      host: '127.0.0.1',
      port,
      path,
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json' },
    });
    req.on('response', (res) => {
      res.resume();
      finish(res.statusCode);
    });
    req.on('error', (e) => setTimeout(() => finish(`error ${e.code}`), 500));
    const chunk = 'x'.repeat(16 * 1024);
    let sent = 0;
    req.write('{"projectId":"p1","pipeline":"quick","pad":"');
    const pump = () => {
      if (done || req.destroyed) return;
      if (sent >= totalBytes) {
        req.end('"}');
        return;
      }
      sent += chunk.length;
      req.write(chunk);
      setTimeout(pump, 2);
    };
    pump();
  });
}

function rawGet(port, path) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    });
    let data = '';
    sock.on('data', (c) => (data += c));
    sock.on('end', () => resolve(data));
    sock.on('error', reject);
    sock.setTimeout(5_000, () => {
      sock.destroy();
      resolve(data);
    });
  });
}

test('GET /api/pipelines lists the configured pipelines', async () => {
  const res = await getJson(`${server.url}/api/pipelines`);
  assert.equal(res.status, 200);
  const byName = Object.fromEntries(res.body.pipelines.map((p) => [p.name, p]));
  assert.deepEqual(Object.keys(byName).sort(), ['burst', 'fail', 'quick', 'slow']);
  assert.equal(byName.quick.description, 'fast test pipeline');
});
