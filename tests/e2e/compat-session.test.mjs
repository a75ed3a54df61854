// The session rules every gateway shares: idle connections on finished jobs
// closed with 1000 (never one watching a running job), 1009 for an oversized
// client message, 1001 at shutdown, client messages over MAX_EVENTS_PER_SECOND
// not answered.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, createJob, waitFor, waitForJobFinished, sleep } from './helpers.mjs';
import { COMPAT_PIPELINES, wsBase, rawSocket } from './compat-helpers.mjs';

test('idle: a finished job\'s silent connection closes with 1000, a running job\'s never; a client message resets it', async () => {
  const server = await startServer({ env: { IDLE_TIMEOUT_SECS: '1' }, pipelines: COMPAT_PIPELINES });
  const done = await createJob(server.url, 'p-idle', 'demo-fail');
  await waitForJobFinished(server.url, done);
  const running = await createJob(server.url, 'p-idle', 'demo-slow');
  const idle = rawSocket(`${wsBase(server)}/ws/build/${done}`);
  const chatty = rawSocket(`${wsBase(server)}/api/v1/ws/jobs/${done}/updates`);
  const watching = rawSocket(`${wsBase(server)}/ws/builds/${running}/`);
  const started = Date.now();
  const pinger = setInterval(() => chatty.ws.readyState === 1 && chatty.ws.send('ping'), 300);
  assert.deepEqual(await idle.closed, { code: 1000, reason: 'idle timeout' });
  assert.ok(Date.now() - started >= 900, 'not before IDLE_TIMEOUT_SECS');
  await sleep(1500);
  assert.equal(chatty.ws.readyState, 1, 'a client that sends stays');
  assert.equal(watching.ws.readyState, 1, 'a connection on a running job is never idle');
  clearInterval(pinger);
  assert.equal((await chatty.closed).code, 1000);
  watching.ws.close();
});

test('a client message over 64 KiB closes with 1009; pings over MAX_EVENTS_PER_SECOND are not answered', async () => {
  const server = await startServer({ env: { MAX_EVENTS_PER_SECOND: '5' }, pipelines: COMPAT_PIPELINES });
  const jobId = await createJob(server.url, 'p-limits', 'demo-slow');
  const burst = rawSocket(`${wsBase(server)}/api/v1/ws/jobs/${jobId}/updates`);
  await waitFor(() => burst.frames.length > 0, 10_000, { what: 'connected' });
  for (let i = 0; i < 50; i++) burst.ws.send('ping');
  await sleep(1500);
  const pongs = burst.json().filter((m) => m.type === 'pong').length;
  assert.ok(pongs >= 5 && pongs <= 10, `${pongs} pongs for 50 pings in a burst`);
  const big = rawSocket(`${wsBase(server)}/ws/build/${jobId}`);
  await big.opened;
  big.ws.send('x'.repeat(70 * 1024));
  assert.equal((await big.closed).code, 1009);
  assert.equal(burst.ws.readyState, 1, 'the others are untouched');
  burst.ws.close();
});

test('shutdown closes every gateway connection with 1001', async () => {
  const server = await startServer({ pipelines: COMPAT_PIPELINES });
  const jobId = await createJob(server.url, 'p-stop', 'demo-slow');
  const clients = [
    `/ws/build/${jobId}`,
    `/api/v1/ws/jobs/${jobId}/updates`,
    `/ws/builds/${jobId}/`,
    '/api/ws/projects/p-stop',
  ].map((path) => rawSocket(`${wsBase(server)}${path}`));
  await Promise.all(clients.map((c) => c.opened));
  await sleep(300);
  const stopped = server.stop('SIGTERM');
  const closes = await Promise.all(clients.map((c) => c.closed));
  assert.deepEqual(closes.map((c) => c.code), [1001, 1001, 1001, 1001]);
  await stopped;
});
