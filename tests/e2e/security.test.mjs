// Issue 11, from real clients: the Origin check of the Socket.IO endpoint (cross-site
// WebSocket hijacking), tokens not valid yet, and a restricted user who must not tell
// a foreign job from one that does not exist.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';

import WebSocket from 'ws';

import { startServer, connect, makeSocket, emitAck, waitFor, projectId } from './helpers.mjs';

const SECRET = 'e2e-secret-that-is-long-enough-for-hs256!';
const now = () => Math.floor(Date.now() / 1000);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

function mint(claims) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ exp: now() + 600, ...claims });
  const sig = crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const APP = 'https://app.example.com';
const EVIL = 'https://evil.example';

/** A plain HTTP request (any header allowed, Origin included): status and body. */
function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'] ?? '', text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A polling handshake (GET) with `origin` (none when null). */
function pollingHandshake(url, origin) {
  return request(`${url}/ws/?EIO=4&transport=polling`, { headers: origin ? { origin } : {} });
}

/** A raw WebSocket handshake: 'open' or the HTTP status and body of the refusal. */
function websocketHandshake(url, origin) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/ws/?EIO=4&transport=websocket`, origin ? { origin } : {});
    ws.on('open', () => {
      ws.close();
      resolve({ result: 'open' });
    });
    ws.on('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ result: res.statusCode, type: res.headers['content-type'] ?? '', text }));
    });
    ws.on('error', (err) => resolve({ result: err.message }));
  });
}

/** socket.io-client: 'connected' or the connect_error message. */
function attempt(url, opts) {
  return new Promise((resolve) => {
    const socket = makeSocket(url, { reconnection: false, ...opts });
    socket.on('connect', () => {
      socket.disconnect();
      resolve('connected');
    });
    socket.on('connect_error', (err) => {
      socket.disconnect();
      resolve(err.message);
    });
  });
}

function assertForbidden(answer, what) {
  const status = answer.status ?? answer.result;
  assert.equal(status, 403, `${what}: ${JSON.stringify(answer)}`);
  assert.match(answer.type, /application\/json/, what);
  const body = JSON.parse(answer.text);
  assert.deepEqual(Object.keys(body), ['error'], what);
  assert.match(body.error, /origin/, what);
}

test('with an origin list, foreign origins are refused on websocket and polling; listed and absent origins pass', async () => {
  const server = await startServer({ env: { WEBSOCKET_CORS_ORIGIN: `${APP}, https://admin.example.com:8443` } });

  assertForbidden(await websocketHandshake(server.url, EVIL), 'websocket upgrade from a foreign origin');
  assertForbidden(await pollingHandshake(server.url, EVIL), 'polling GET from a foreign origin');
  assertForbidden(await pollingHandshake(server.url, 'null'), 'polling GET from an opaque origin');
  // A polling POST of a session opened without Origin, sent with a foreign one.
  const open = await pollingHandshake(server.url, null);
  assert.equal(open.status, 200, open.text);
  const sid = JSON.parse(open.text.slice(1)).sid;
  const post = await request(`${server.url}/ws/?EIO=4&transport=polling&sid=${sid}`, {
    method: 'POST',
    headers: { origin: EVIL, 'content-type': 'text/plain;charset=UTF-8' },
    body: '40',
  });
  assertForbidden(post, 'polling POST from a foreign origin');
  assert.equal(
    await attempt(server.url, { transports: ['websocket'], extraHeaders: { origin: EVIL } }),
    'websocket error',
    'socket.io-client from a foreign origin cannot connect',
  );

  assert.equal((await websocketHandshake(server.url, APP)).result, 'open');
  assert.equal((await websocketHandshake(server.url, 'https://admin.example.com:8443')).result, 'open');
  assert.equal((await pollingHandshake(server.url, APP)).status, 200);
  assert.equal((await websocketHandshake(server.url, null)).result, 'open', 'no Origin: a non-browser client');
  assert.equal(await attempt(server.url, { transports: ['websocket'], extraHeaders: { origin: APP } }), 'connected');
  assert.equal(await attempt(server.url, { transports: ['websocket'] }), 'connected');
  assert.equal(await attempt(server.url, { transports: ['polling'] }), 'connected');
  // The REST API is CORS's business, not this check's.
  assert.equal((await request(`${server.url}/health`, { headers: { origin: EVIL } })).status, 200);
});

test('with WEBSOCKET_CORS_ORIGIN=* every origin may connect', async () => {
  const server = await startServer({ env: { WEBSOCKET_CORS_ORIGIN: '*' } });
  assert.equal((await websocketHandshake(server.url, EVIL)).result, 'open');
  assert.equal((await pollingHandshake(server.url, EVIL)).status, 200);
  assert.equal(await attempt(server.url, { transports: ['websocket'], extraHeaders: { origin: EVIL } }), 'connected');
});

test('a token whose nbf is in the future gets "Authentication error"; one already valid connects', async () => {
  const server = await startServer({ env: { AUTH_MODE: 'jwt', JWT_SECRET: SECRET } });
  for (const transports of [['websocket'], ['polling']]) {
    assert.equal(
      await attempt(server.url, { transports, auth: { token: mint({ sub: 'a', nbf: now() + 3600 }) } }),
      'Authentication error',
      transports[0],
    );
    assert.equal(await attempt(server.url, { transports, auth: { token: mint({ sub: 'a', nbf: now() - 5 }) } }), 'connected');
  }
});

test('a restricted user gets the same subscribe:job answer for a foreign job and an unknown one', async () => {
  const server = await startServer({ env: { AUTH_MODE: 'jwt', JWT_SECRET: SECRET } });
  const mine = projectId('mine');
  const theirs = projectId('theirs');
  const admin = mint({ sub: 'root', role: 'admin' });
  const res = await fetch(`${server.url}/api/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ projectId: theirs, pipeline: 'quick' }),
  });
  assert.equal(res.status, 201);
  const foreign = (await res.json()).jobId;
  await waitFor(async () => {
    const job = await fetch(`${server.url}/api/jobs/${foreign}`, { headers: { authorization: `Bearer ${admin}` } });
    return (await job.json()).finishedAt;
  }, 30_000);

  const socket = await connect(server.url, { auth: { token: mint({ sub: 'val', projects: [mine] }) } });
  for (const payload of [(id) => id, (id) => ({ jobId: id }), (id) => ({ jobId: id, since: 0 }), (id) => ({ jobId: id, since: 3, batch: true })]) {
    const a = await emitAck(socket, 'subscribe:job', payload(foreign));
    const b = await emitAck(socket, 'subscribe:job', payload('no-such-job-0000'));
    assert.deepEqual(a, b, JSON.stringify(payload('x')));
    assert.deepEqual(a, { ok: false, error: 'forbidden' });
  }
  // An unrestricted user still learns the truth.
  const root = await connect(server.url, { auth: { token: admin } });
  const seen = await emitAck(root, 'subscribe:job', foreign);
  assert.equal(seen.ok, true);
  assert.equal(seen.job.jobId, foreign);
});
