// Following a build without Socket.IO, with real clients: curl on the followed
// plain-text log, NDJSON parsed line by line, Server-Sent Events resumed with a
// wrong epoch, and `buildcast watch` (plain, under a pty, across a server restart).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import {
  BIN,
  STREAM_PIPELINES,
  assertSeqSeries,
  createJob,
  fetchLog,
  freePort,
  getJob,
  makeTempDir,
  mintHmacJwt,
  parseSse,
  REDIS_SERVER,
  runProgram,
  sleep,
  startRedis,
  startServer,
  waitForJobFinished,
  waitFor,
  waitForMidStream,
} from './helpers.mjs';

const start = (opts = {}) => startServer({ pipelines: STREAM_PIPELINES, ...opts });

test('curl -N on log?follow=1 gets all 5,000 lines once, in order, and exits when the job ends', async () => {
  const server = await start();
  const jobId = await createJob(server.url, 'p1', 'lines5k');
  await waitForMidStream(server.url, jobId, 20);
  const headers = path.join(makeTempDir(), 'headers');
  const curl = await runProgram('curl', ['-sSN', '-D', headers, `${server.url}/api/jobs/${jobId}/log?follow=1`]);
  assert.equal(curl.code, 0, `${curl.signal} ${curl.stderr}`);
  assert.match(readFileSync(headers, 'utf8'), /x-buildcast-last-seq: \d+/i);
  const job = await getJob(server.url, jobId);
  assert.ok(job.finishedAt, 'curl ended only once the job had ended');
  const built = curl.stdout.split('\n').filter((l) => l.startsWith('line '));
  assert.equal(built.length, 5000);
  built.forEach((l, i) => assert.equal(l, `line ${i + 1}`));
  // The whole log, exactly as the plain log has it.
  assert.deepEqual(curl.stdout.split('\n').filter((l) => l !== ''), await fetchLog(server.url, jobId));
});

test('log?follow=1 with tail, timestamps and ansi=strip', async () => {
  const server = await start();
  const jobId = await createJob(server.url, 'p1', 'ansi');
  await waitForJobFinished(server.url, jobId);
  const base = `${server.url}/api/jobs/${jobId}/log`;
  const raw = (await runProgram('curl', ['-sSN', `${base}?follow=1`])).stdout;
  assert.ok(raw.includes('\u001b[1;32mgreen\u001b[0m ok'));
  const stripped = (await runProgram('curl', ['-sSN', `${base}?follow=1&ansi=strip`])).stdout;
  assert.ok(stripped.includes('green ok\n'));
  assert.ok(stripped.includes('red err\n'));
  assert.ok(!stripped.includes('\u001b'));
  const tail = (await runProgram('curl', ['-sSN', `${base}?follow=1&tail=2&ansi=strip`])).stdout;
  const all = stripped.split('\n').filter((l) => l !== '');
  assert.deepEqual(tail.split('\n').filter((l) => l !== ''), all.slice(-2));
  const stamped = (await runProgram('curl', ['-sSN', `${base}?follow=1&timestamps=1`])).stdout;
  for (const line of stamped.split('\n').filter((l) => l !== '')) {
    assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z /);
  }
});

test('NDJSON follow: one object per line, contiguous seqs, live until the end', async () => {
  const server = await start();
  const jobId = await createJob(server.url, 'p1', 'slow');
  await waitForMidStream(server.url, jobId, 10);
  const res = await fetch(`${server.url}/api/jobs/${jobId}/events?follow=1`, {
    headers: { accept: 'application/x-ndjson' },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/x-ndjson');
  const seqs = [];
  let rest = '';
  const decoder = new TextDecoder();
  let last;
  for await (const chunk of res.body) {
    rest += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const obj = JSON.parse(rest.slice(0, nl));
      rest = rest.slice(nl + 1);
      assert.equal(obj.data.seq, obj.seq);
      seqs.push(obj.seq);
      last = obj;
    }
  }
  assert.equal(rest, '');
  assert.equal(last.event, 'job:completed');
  const job = await getJob(server.url, jobId);
  assertSeqSeries(seqs, 1, job.lastSeq);
});

test('SSE resumed with a wrong epoch gets reset, then the whole history', async () => {
  const server = await start();
  const jobId = await createJob(server.url, 'p1', 'quick');
  const job = await waitForJobFinished(server.url, jobId);
  const res = await fetch(`${server.url}/api/jobs/${jobId}/stream`, { headers: { 'last-event-id': 'stale-epoch:4' } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  const messages = parseSse(await res.text());
  assert.equal(messages[0].event, 'reset');
  const reset = JSON.parse(messages[0].data);
  assert.equal(reset.recovered, false);
  assert.equal(reset.epoch, job.epoch);
  const events = messages.filter((m) => m.event.startsWith('job:'));
  assertSeqSeries(events.map((m) => JSON.parse(m.data).seq), 1, job.lastSeq);
  events.forEach((m) => assert.equal(m.id, `${job.epoch}:${JSON.parse(m.data).seq}`));
});

test('streams: no token is 401, a foreign project is 404 for a restricted user', async () => {
  const secret = 'stream-test-secret-that-is-long-enough';
  const server = await start({ env: { AUTH_MODE: 'jwt', JWT_SECRET: secret } });
  const builder = mintHmacJwt({ sub: 'b', role: 'builder' }, secret);
  const created = await fetch(`${server.url}/api/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${builder}` },
    body: JSON.stringify({ projectId: 'p1', pipeline: 'quick' }),
  });
  const { jobId } = await created.json();
  const foreign = mintHmacJwt({ sub: 'r', projects: ['p2'] }, secret);
  for (const path of [`/api/jobs/${jobId}/stream`, `/api/jobs/${jobId}/log?follow=1`, `/api/jobs/${jobId}/events?follow=1`]) {
    assert.equal((await fetch(`${server.url}${path}`)).status, 401, path);
    const sep = path.includes('?') ? '&' : '?';
    assert.equal((await fetch(`${server.url}${path}${sep}token=${foreign}`)).status, 404, path);
    assert.equal((await fetch(`${server.url}/api/jobs/${jobId}`, { headers: { authorization: `Bearer ${foreign}` } })).status, 404);
  }
  // A job id nobody knows: still 404 for a restricted user (no waiting for it).
  assert.equal((await fetch(`${server.url}/api/jobs/unknown-${Date.now()}/stream?token=${foreign}`)).status, 404);
  const own = mintHmacJwt({ sub: 'v', projects: ['p1'] }, secret);
  const ok = await runProgram(BIN, ['watch', jobId, '--url', server.url, '--token', own], { env: { PATH: process.env.PATH } });
  assert.equal(ok.code, 0, ok.stderr);
  const refused = await runProgram(BIN, ['watch', jobId, '--url', server.url, '--token', foreign], { env: { PATH: process.env.PATH } });
  assert.equal(refused.code, 2);
});

test('buildcast watch: plain output and exit codes when stdout is not a terminal', async () => {
  const server = await start();
  const env = { PATH: process.env.PATH };
  const ok = await createJob(server.url, 'p1', 'quick');
  const done = await runProgram(BIN, ['watch', ok, '--url', server.url], { env });
  assert.equal(done.code, 0, done.stderr);
  assert.ok(!done.stdout.includes('\u001b'), 'no escapes in plain output');
  assert.match(done.stdout, /\[building 50%\]/);
  assert.match(done.stdout, /\[completed 100%\]/);
  for (const line of await fetchLog(server.url, ok)) assert.ok(done.stdout.includes(`${line}\n`), line);

  const failing = await createJob(server.url, 'p1', 'fail');
  assert.equal((await runProgram(BIN, ['watch', failing, '--url', server.url], { env })).code, 1);

  const slow = await createJob(server.url, 'p1', 'slow');
  await waitForMidStream(server.url, slow, 5);
  const watching = runProgram(BIN, ['watch', slow, '--url', server.url], { env });
  await waitForMidStream(server.url, slow, 20);
  await fetch(`${server.url}/api/jobs/${slow}/cancel`, { method: 'POST' });
  assert.equal((await watching).code, 130);

  // --no-follow on a running job: what is there, then exit.
  const running = await createJob(server.url, 'p1', 'slow');
  await waitForMidStream(server.url, running, 10);
  const snapshot = await runProgram(BIN, ['watch', running, '--no-follow', '--url', server.url], { env, timeoutMs: 5_000 });
  assert.equal(snapshot.code, 0);
  assert.match(snapshot.stdout, /slow 1\n/);
});

test('buildcast watch under a pty draws a progress bar that reaches 100 %', { skip: !existsSync('/usr/bin/script') }, async () => {
  const server = await start();
  const jobId = await createJob(server.url, 'p1', 'quick');
  const run = await runProgram('script', ['-qec', `${BIN} watch ${jobId} --url ${server.url}`, '/dev/null'], {
    env: { PATH: process.env.PATH, TERM: 'xterm' },
  });
  assert.equal(run.code, 0, run.stdout);
  assert.match(run.stdout, /100%/);
  assert.match(run.stdout, /=====/, 'a bar is drawn');
  assert.match(run.stdout, /\u001b\[31mwarn\u001b\[0m/, 'stderr lines are red');
});

test('buildcast watch loses no line when the server is killed and restarted mid-build', async () => {
  const port = await freePort();
  const env = { PORT: String(port) };
  const first = await start({ env });
  const jobId = await createJob(first.url, 'p1', 'slow');
  await waitForMidStream(first.url, jobId, 30);
  let printed = 0;
  const watching = runProgram(BIN, ['watch', jobId, '--url', first.url], {
    env: { PATH: process.env.PATH },
    onStdout: (chunk) => (printed += (chunk.match(/^slow \d+$/gm) ?? []).length),
  });
  await waitForMidStream(first.url, jobId, 60);
  first.kill();
  await first.exited;
  await new Promise((r) => setTimeout(r, 500));
  const second = await start({ env, dataDir: first.dataDir });
  const result = await watching;
  // The restarted server marks the interrupted job failed.
  assert.equal(result.code, 1, result.stderr);
  assert.ok(printed > 0);
  const out = result.stdout.split('\n');
  const history = await fetchLog(second.url, jobId);
  for (const line of history) assert.ok(out.includes(line), `missing ${line}`);
  // Nothing twice: each "slow N" at most once.
  const slow = out.filter((l) => /^slow \d+$/.test(l));
  assert.equal(new Set(slow).size, slow.length, 'a line was printed twice');
  assert.match(result.stderr, /reconnecting/);
});

test('cluster: an SSE stream opened on node B before the job exists gets every event once the job starts on node A', { skip: !REDIS_SERVER && 'redis-server is not installed' }, async () => {
  const redis = await startRedis();
  const WORKER_TOKEN = 'e2e-worker-token-0123456789';
  const env = { REDIS_URL: redis.url, WORKER_TOKEN };
  const [a, b] = await Promise.all([start({ env }), start({ env })]);
  for (const n of [a, b]) await waitFor(async () => (await (await fetch(`${n.url}/health`)).json()).redis === 'ok', 10_000);

  const jobId = `ext-stream-${Date.now()}`;
  // Opened on B first: B knows nothing of the job; the stream waits for it.
  const res = await fetch(`${b.url}/api/jobs/${jobId}/stream`);
  assert.equal(res.status, 200);
  const body = res.text();
  let ended = false;
  body.finally(() => { ended = true; });
  await sleep(500);
  assert.equal(ended, false, 'the stream waits for a job it does not know yet');

  // A worker builds the job through A.
  const ingest = async (events) => {
    const r = await fetch(`${a.url}/api/jobs/${jobId}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${WORKER_TOKEN}` },
      body: JSON.stringify(events),
    });
    assert.equal(r.status, 200, await r.text());
  };
  await ingest([
    { type: 'status', data: { status: 'running' }, projectId: 'p1', pipeline: 'celery' },
    { type: 'step', data: { step_name: 'init', step_label: 'Initialization' } },
    { type: 'progress', data: { progress: 10, current_step: 'init', completed_steps: [] } },
  ]);
  for (let batch = 0; batch < 5; batch++) {
    await ingest(Array.from({ length: 100 }, (_, i) => ({ type: 'log', data: { log_line: `worker line ${batch * 100 + i + 1}\n` } })));
    await sleep(50);
  }
  await ingest([{ type: 'complete', data: { status: 'completed', message: 'Build completed successfully' } }]);

  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('the stream on B did not end')), 30_000); });
  const text = await Promise.race([body, late]).finally(() => clearTimeout(timer));
  const job = await (await fetch(`${a.url}/api/jobs/${jobId}`)).json();
  const messages = parseSse(text).filter((m) => m.event.startsWith('job:'));
  const seqs = messages.map((m) => JSON.parse(m.data).seq);
  assert.ok(job.lastSeq > 500, `lastSeq ${job.lastSeq}`);
  assertSeqSeries(seqs, 1, job.lastSeq, 'SSE on B, job on A');
  assert.equal(messages.at(-1).event, 'job:completed');
  const lines = messages.filter((m) => m.event === 'job:log').map((m) => JSON.parse(m.data).message).filter((l) => l.startsWith('worker line '));
  assert.deepEqual(lines, Array.from({ length: 500 }, (_, i) => `worker line ${i + 1}`));
  for (const m of messages) assert.equal(m.id, `${job.epoch}:${JSON.parse(m.data).seq}`);
  await redis.stop();
});
