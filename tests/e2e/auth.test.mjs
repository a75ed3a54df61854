// Authentication, authorization and per-client limits, from the real socket.io-client:
// token sources, refusals with the exact `connect_error` text frontends check,
// project restrictions on subscribe, replay and REST, roles, connection limits,
// idle timeout and rate limiting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import {
  startServer,
  connect,
  makeSocket,
  emitAck,
  collect,
  sleep,
  waitFor,
  makeTempDir,
  projectId,
  abandonedPolling,
} from './helpers.mjs';

const SECRET = 'e2e-secret-that-is-long-enough-for-hs256!';
const now = () => Math.floor(Date.now() / 1000);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** An HS* token signed with `secret`. */
function mint(claims, { secret = SECRET, alg = 'HS256' } = {}) {
  const head = b64({ alg, typ: 'JWT' });
  const body = b64({ exp: now() + 600, ...claims });
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
  const sig = crypto.createHmac(hash, secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** A token signed with an asymmetric private key (RS256 or ES256). */
function mintWithKey(claims, privateKey, alg) {
  const head = b64({ alg, typ: 'JWT' });
  const body = b64({ exp: now() + 600, ...claims });
  const opts = alg === 'ES256' ? { key: privateKey, dsaEncoding: 'ieee-p1363' } : privateKey;
  const sig = crypto.sign('sha256', Buffer.from(`${head}.${body}`), opts).toString('base64url');
  return `${head}.${body}.${sig}`;
}

const JWT_ENV = { AUTH_MODE: 'jwt', JWT_SECRET: SECRET };

/** Resolves with 'connected' or the connect_error message. */
function attempt(url, opts) {
  return new Promise((resolve) => {
    const socket = makeSocket(url, { reconnection: false, transports: ['websocket'], ...opts });
    socket.on('connect', () => resolve({ result: 'connected', socket }));
    socket.on('connect_error', (err) => {
      socket.disconnect();
      resolve({ result: err.message, socket });
    });
  });
}

async function api(url, method, route, { token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body) headers['content-type'] = 'application/json';
  const res = await fetch(url + route, { method, headers, body: body && JSON.stringify(body) });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

test('a valid token is accepted from auth, from the query and from the Authorization header', async () => {
  const server = await startServer({ env: JWT_ENV });
  const token = mint({ sub: 'alice' });
  for (const opts of [{ auth: { token } }, { query: { token } }, { extraHeaders: { authorization: `Bearer ${token}` } }]) {
    const { result, socket } = await attempt(server.url, opts);
    assert.equal(result, 'connected', JSON.stringify(Object.keys(opts)));
    socket.disconnect();
  }
  // Polling too: the token in the query survives every long-polling request.
  const { result, socket } = await attempt(server.url, { transports: ['polling'], query: { token } });
  assert.equal(result, 'connected');
  const ack = await emitAck(socket, 'subscribe:project', 'any-project');
  assert.equal(ack.ok, true);
  socket.disconnect();
});

test('missing, expired, forged, alg:none, wrong-algorithm and garbage tokens get exactly "Authentication error"', async () => {
  const server = await startServer({ env: JWT_ENV });
  const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'mallory', exp: now() + 600 })}.`;
  const cases = {
    missing: {},
    empty: { auth: { token: '' } },
    expired: { auth: { token: mint({ sub: 'a', exp: now() - 3600 }) } },
    'wrong signature': { auth: { token: mint({ sub: 'a' }, { secret: 'another-secret-that-is-long-enough!!' }) } },
    'alg none': { auth: { token: unsigned } },
    'wrong algorithm (HS384)': { auth: { token: mint({ sub: 'a' }, { alg: 'HS384' }) } },
    'no exp': { auth: { token: (() => { const h = b64({ alg: 'HS256', typ: 'JWT' }); const p = b64({ sub: 'a' }); return `${h}.${p}.${crypto.createHmac('sha256', SECRET).update(`${h}.${p}`).digest('base64url')}`; })() } },
    garbage: { auth: { token: 'not.a.jwt' } },
    'number token': { auth: { token: 42 } },
  };
  for (const [name, opts] of Object.entries(cases)) {
    const { result } = await attempt(server.url, opts);
    assert.equal(result, 'Authentication error', name);
  }
  // The reason is logged, the token never is.
  assert.match(server.output(), /connection refused: authentication/);
  assert.ok(!server.output().includes(cases['wrong signature'].auth.token), 'token leaked into the log');
  // A refused client never counted as connected.
  const h = await (await fetch(`${server.url}/health`)).json();
  assert.equal(h.websocket.connected_clients, 0);
});

test('RS256 and ES256 public keys verify their tokens and refuse HS256 ones', async () => {
  for (const [alg, gen] of [
    ['RS256', () => crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })],
    ['ES256', () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })],
  ]) {
    const { publicKey, privateKey } = gen();
    const file = path.join(makeTempDir('buildcast-key-'), 'key.pem');
    writeFileSync(file, publicKey.export({ type: 'spki', format: 'pem' }));
    const server = await startServer({ env: { AUTH_MODE: 'jwt', JWT_PUBLIC_KEY_FILE: file } });
    const good = await attempt(server.url, { auth: { token: mintWithKey({ sub: 'k' }, privateKey, alg) } });
    assert.equal(good.result, 'connected', alg);
    good.socket.disconnect();
    const hs = await attempt(server.url, { auth: { token: mint({ sub: 'k' }) } });
    assert.equal(hs.result, 'Authentication error', `${alg} server must refuse HS256`);
    await server.stop();
  }
});

test('issuer and audience are checked when configured', async () => {
  const server = await startServer({ env: { ...JWT_ENV, JWT_ISSUER: 'ci.example', JWT_AUDIENCE: 'buildcast' } });
  const ok = await attempt(server.url, { auth: { token: mint({ sub: 'a', iss: 'ci.example', aud: 'buildcast' }) } });
  assert.equal(ok.result, 'connected');
  ok.socket.disconnect();
  for (const claims of [{ sub: 'a', iss: 'evil', aud: 'buildcast' }, { sub: 'a', iss: 'ci.example', aud: 'other' }, { sub: 'a' }]) {
    const { result } = await attempt(server.url, { auth: { token: mint(claims) } });
    assert.equal(result, 'Authentication error', JSON.stringify(claims));
  }
});

test('a restricted user cannot subscribe to, replay or read jobs of other projects', async () => {
  const server = await startServer({ env: JWT_ENV });
  const mine = projectId('mine');
  const theirs = projectId('theirs');
  const admin = mint({ sub: 'root', role: 'admin' });
  const viewer = mint({ sub: 'val', role: 'viewer', projects: [mine] });

  const other = await api(server.url, 'POST', '/api/jobs', { token: admin, body: { projectId: theirs, pipeline: 'quick' } });
  assert.equal(other.status, 201);
  const own = await api(server.url, 'POST', '/api/jobs', { token: admin, body: { projectId: mine, pipeline: 'quick' } });
  assert.equal(own.status, 201);
  await waitFor(async () => (await api(server.url, 'GET', `/api/jobs/${other.json.jobId}`, { token: admin })).json.finishedAt, 30_000);

  const socket = await connect(server.url, { auth: { token: viewer }, transports: ['websocket'] });
  const got = collect(socket, ['job:progress', 'job:log', 'job:completed', 'project:progress', 'project:completed']);
  assert.deepEqual(await emitAck(socket, 'subscribe:job', other.json.jobId), { ok: false, error: 'forbidden' });
  assert.deepEqual(await emitAck(socket, 'subscribe:job', { jobId: other.json.jobId, since: 0 }), { ok: false, error: 'forbidden' });
  assert.deepEqual(await emitAck(socket, 'subscribe:project', theirs), { ok: false, error: 'forbidden' });
  // A job that does not exist yet could end up in any project: refused for restricted users.
  assert.deepEqual(await emitAck(socket, 'subscribe:job', 'not-created-yet'), { ok: false, error: 'forbidden' });
  await sleep(300);
  assert.equal(got.filter((e) => e.data.projectId === theirs).length, 0, 'no event of a forbidden project may arrive');

  const allowed = await emitAck(socket, 'subscribe:job', { jobId: own.json.jobId, since: 0 });
  assert.equal(allowed.ok, true);
  await waitFor(() => got.some((e) => e.event === 'job:completed' && e.data.jobId === own.json.jobId), 30_000);

  // REST: 401 without token, 404 (like an unknown id) for jobs outside the projects,
  // 403 for a project outside them, filtered listings.
  assert.equal((await api(server.url, 'GET', `/api/jobs/${own.json.jobId}`)).status, 401);
  assert.equal((await api(server.url, 'GET', `/api/jobs/${other.json.jobId}`, { token: viewer })).status, 404);
  assert.equal((await api(server.url, 'GET', `/api/jobs/${other.json.jobId}/events?since=0`, { token: viewer })).status, 404);
  assert.equal((await api(server.url, 'GET', `/api/jobs/${other.json.jobId}/log`, { token: viewer })).status, 404);
  assert.equal((await api(server.url, 'GET', `/api/jobs?projectId=${theirs}`, { token: viewer })).status, 403);
  const listed = await api(server.url, 'GET', '/api/jobs', { token: viewer });
  assert.equal(listed.status, 200);
  assert.deepEqual(listed.json.jobs.map((j) => j.projectId), [mine]);
  const viaQuery = await fetch(`${server.url}/api/jobs/${own.json.jobId}/log?token=${viewer}`);
  assert.equal(viaQuery.status, 200, 'download links may carry the token in the query');
  const unauthorized = await api(server.url, 'GET', '/api/jobs', { token: 'garbage' });
  assert.equal(unauthorized.status, 401);
  assert.match(unauthorized.json.error, /authentication/);
});

test('roles: viewers read, builders start and cancel in their projects, admins everywhere', async () => {
  const server = await startServer({ env: JWT_ENV });
  const p = projectId('roles');
  const viewer = mint({ sub: 'v', role: 'viewer' });
  const noRole = mint({ sub: 'n' });
  const builder = mint({ sub: 'b', role: 'builder', projects: [p] });
  const admin = mint({ sub: 'a', role: 'admin' });

  for (const token of [viewer, noRole]) {
    const res = await api(server.url, 'POST', '/api/jobs', { token, body: { projectId: p, pipeline: 'slow' } });
    assert.equal(res.status, 403, 'a viewer (or a token without role) may not start builds');
    assert.match(res.json.error, /builder/);
  }
  assert.equal((await api(server.url, 'POST', '/api/jobs', { token: builder, body: { projectId: 'elsewhere', pipeline: 'quick' } })).status, 403);
  const job = await api(server.url, 'POST', '/api/jobs', { token: builder, body: { projectId: p, pipeline: 'slow' } });
  assert.equal(job.status, 201);
  assert.equal((await api(server.url, 'GET', `/api/jobs/${job.json.jobId}`, { token: viewer })).status, 200);
  assert.equal((await api(server.url, 'POST', `/api/jobs/${job.json.jobId}/cancel`, { token: viewer })).status, 403);
  assert.equal((await api(server.url, 'POST', `/api/jobs/${job.json.jobId}/cancel`, { token: builder })).status, 202);
  const other = await api(server.url, 'POST', '/api/jobs', { token: admin, body: { projectId: 'elsewhere', pipeline: 'slow' } });
  assert.equal(other.status, 201);
  // A job outside the builder's projects is answered like one that does not exist.
  assert.equal((await api(server.url, 'POST', `/api/jobs/${other.json.jobId}/cancel`, { token: builder })).status, 404);
  assert.equal((await api(server.url, 'POST', `/api/jobs/${other.json.jobId}/cancel`, { token: admin })).status, 202);
});

test('/health needs no token and shows no job or user data', async () => {
  const server = await startServer({ env: JWT_ENV });
  const admin = mint({ sub: 'secret-user', role: 'admin' });
  await api(server.url, 'POST', '/api/jobs', { token: admin, body: { projectId: 'hidden-project', pipeline: 'quick' } });
  const res = await fetch(`${server.url}/health`);
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.equal(JSON.parse(text).status, 'ok');
  assert.ok(!text.includes('hidden-project') && !text.includes('secret-user'), text);
});

test('the 11th connection of one user is refused while 10 stay connected; another user is unaffected', async () => {
  const server = await startServer({ env: JWT_ENV });
  const alice = mint({ sub: 'alice' });
  const sockets = [];
  for (let i = 0; i < 10; i++) {
    const { result, socket } = await attempt(server.url, { auth: { token: alice } });
    assert.equal(result, 'connected', `connection ${i + 1}`);
    sockets.push(socket);
  }
  const eleventh = await attempt(server.url, { auth: { token: alice } });
  assert.equal(eleventh.result, 'Too many connections');
  assert.ok(sockets.every((s) => s.connected), 'the first ten stay connected');
  const bob = await attempt(server.url, { auth: { token: mint({ sub: 'bob' }) } });
  assert.equal(bob.result, 'connected');
  bob.socket.disconnect();
  // Closing one frees a slot.
  sockets.pop().disconnect();
  await waitFor(async () => (await attempt(server.url, { auth: { token: alice } })).result === 'connected', 5_000);
  sockets.forEach((s) => s.disconnect());
});

test('a polling client that stops polling without closing gives its connection slot back within seconds; one that polls keeps it', async () => {
  const server = await startServer({
    env: { ...JWT_ENV, MAX_CONNECTIONS_PER_USER: '1', WEBSOCKET_POLLING_TIMEOUT_MS: '1000' },
  });
  const alice = mint({ sub: 'alice' });
  const { ack } = await abandonedPolling(server.url, { token: alice });
  assert.match(ack, /(^|\x1e)40\{"sid"/, `the abandoned session connected: ${ack}`);
  // A polling client of another user that keeps polling (and sends nothing).
  const bob = await attempt(server.url, { auth: { token: mint({ sub: 'bob' }) }, transports: ['polling'] });
  assert.equal(bob.result, 'connected');
  let bobLeft = null;
  bob.socket.on('disconnect', (reason) => (bobLeft = reason));
  const refused = await attempt(server.url, { auth: { token: alice }, transports: ['polling'] });
  assert.equal(refused.result, 'Too many connections', 'the abandoned session holds the slot at first');
  const started = Date.now();
  let back;
  await waitFor(
    async () => {
      back = await attempt(server.url, { auth: { token: alice }, transports: ['polling'] });
      return back.result === 'connected';
    },
    5_000,
    { interval: 200, what: "alice's slot to be given back" },
  );
  assert.ok(Date.now() - started < 5_000);
  await sleep(1500);
  assert.equal(bobLeft, null, 'a client that polls is not taken for gone');
  assert.ok(bob.socket.connected && back.socket.connected);
  bob.socket.disconnect();
  back.socket.disconnect();
});

test('an idle socket (no subscription, no event) is disconnected; a subscribed one stays', async () => {
  const server = await startServer({ env: { IDLE_TIMEOUT_SECS: '1' } });
  const idle = await connect(server.url, { transports: ['websocket'], reconnection: false });
  const busy = await connect(server.url, { transports: ['websocket'], reconnection: false });
  assert.equal((await emitAck(busy, 'subscribe:project', 'kept')).ok, true);
  const reason = await new Promise((resolve) => idle.on('disconnect', resolve));
  assert.equal(reason, 'io server disconnect');
  await sleep(1_500);
  assert.ok(busy.connected, 'a socket with a subscription is not idle');
});

test('more than MAX_EVENTS_PER_SECOND events are answered "rate limited" and the connection stays up', async () => {
  const server = await startServer({ env: { MAX_EVENTS_PER_SECOND: '20' } });
  const socket = await connect(server.url, { transports: ['websocket'] });
  const acks = await Promise.all(Array.from({ length: 40 }, () => emitAck(socket, 'subscribe:project', 'rate')));
  const limited = acks.filter((a) => a.ok === false);
  assert.ok(limited.length >= 15, `expected at least 15 refusals, got ${limited.length}`);
  assert.ok(limited.every((a) => a.error === 'rate limited'), JSON.stringify(limited[0]));
  assert.ok(socket.connected);
  await sleep(1_100);
  assert.equal((await emitAck(socket, 'subscribe:project', 'rate')).ok, true, 'the budget refills');
});

test('at most MAX_SUBSCRIPTIONS_PER_SOCKET subscriptions per socket', async () => {
  const server = await startServer({ env: { MAX_SUBSCRIPTIONS_PER_SOCKET: '3' } });
  const socket = await connect(server.url, { transports: ['websocket'] });
  for (const id of ['a', 'b', 'c']) assert.equal((await emitAck(socket, 'subscribe:job', id)).ok, true);
  const fourth = await emitAck(socket, 'subscribe:project', 'd');
  assert.equal(fourth.ok, false);
  assert.match(fourth.error, /too many subscriptions/);
  assert.equal((await emitAck(socket, 'subscribe:job', 'a')).ok, true, 'resubscribing is not a new subscription');
  assert.equal((await emitAck(socket, 'unsubscribe:job', 'c')).ok, true);
  assert.equal((await emitAck(socket, 'subscribe:project', 'd')).ok, true);
});

test('AUTH_MODE=none is refused on a non-loopback HOST unless AUTH_ALLOW_ANONYMOUS=true', async () => {
  const { spawnSync } = await import('node:child_process');
  const { BIN } = await import('./helpers.mjs');
  const base = { PATH: process.env.PATH, PORT: '0', DATA_DIR: makeTempDir(), NO_COLOR: '1' };
  const refused = spawnSync(BIN, [], { env: { ...base, HOST: '0.0.0.0', AUTH_MODE: 'none' }, timeout: 10_000, encoding: 'utf8' });
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr, /AUTH_MODE/);
  assert.match(refused.stderr, /AUTH_ALLOW_ANONYMOUS/);
  assert.ok(!refused.stderr.includes('panicked'));
  const noSecret = spawnSync(BIN, [], { env: { ...base, HOST: '0.0.0.0' }, timeout: 10_000, encoding: 'utf8' });
  assert.notEqual(noSecret.status, 0);
  assert.match(noSecret.stderr, /JWT_SECRET/);
});

test('a token minted by `buildcast token` is accepted', async () => {
  const { execFileSync } = await import('node:child_process');
  const { BIN } = await import('./helpers.mjs');
  const token = execFileSync(BIN, ['token', '--sub', 'cli-user', '--role', 'builder', '--projects', 'web,api'], {
    env: { PATH: process.env.PATH, JWT_SECRET: SECRET },
    encoding: 'utf8',
  }).trim();
  const server = await startServer({ env: JWT_ENV });
  const { result, socket } = await attempt(server.url, { auth: { token } });
  assert.equal(result, 'connected');
  socket.disconnect();
  const res = await api(server.url, 'POST', '/api/jobs', { token, body: { projectId: 'web', pipeline: 'quick' } });
  assert.equal(res.status, 201);
});

test('MAX_CONNECTIONS: the next connection is refused with "Too many connections", whoever it is; a freed slot is taken again', async () => {
  const server = await startServer({ env: { MAX_CONNECTIONS: '3' } });
  const sockets = [];
  for (let i = 0; i < 3; i++) {
    const { result, socket } = await attempt(server.url);
    assert.equal(result, 'connected', `connection ${i + 1}`);
    sockets.push(socket);
  }
  const fourth = await attempt(server.url);
  assert.equal(fourth.result, 'Too many connections');
  assert.ok(sockets.every((s) => s.connected), 'the first three stay connected');
  sockets.pop().disconnect();
  await waitFor(
    async () => {
      const again = await attempt(server.url);
      if (again.result === 'connected') sockets.push(again.socket);
      return again.result === 'connected';
    },
    10_000,
    { what: 'a freed slot' },
  );
  sockets.forEach((s) => s.disconnect());
});
