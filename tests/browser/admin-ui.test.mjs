// The official Socket.IO Admin UI (@socket.io/admin-ui, installed by npm in this
// suite, its ui/dist served by buildcast at /admin-ui/ through ADMIN_UI_DIR) in
// Chromium against the real server: it logs in, lists the connected test sockets
// with their job:<id> rooms and address, shows their events (received and sent),
// and disconnecting a socket from
// the UI disconnects that client. A wrong password is refused with the UI's own
// "Invalid credentials"; in read-only mode the server offers and performs no
// operation.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { createRequire } from 'node:module';
import { io } from 'socket.io-client';

import { startServer, launchBrowser, newPage, createJob, api, waitFor, screenshotPath } from './helpers.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const require = createRequire(import.meta.url);
const UI_DIR = path.join(path.dirname(require.resolve('@socket.io/admin-ui/package.json')), 'ui', 'dist');
const USER = 'ops';
const PASSWORD = 'correct horse battery';
// bcrypt of PASSWORD (cost 10).
const HASH = '$2a$10$BQ7SaLic0fjdwCNwROrtEuhDDRsSphmFq2wvpQMHs0oJqGLeelNVK';
const SECRET = 'a-secret-long-enough-for-hs256-signing-0123';

const clients = [];
after(() => clients.forEach((c) => c.close()));

function client(server, transports) {
  const socket = io(server.url, { path: '/ws', transports, reconnection: false, forceNew: true });
  clients.push(socket);
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

function adminSocket(server, auth) {
  const socket = io(`${server.url}/admin`, { path: '/ws', transports: ['websocket'], reconnection: false, forceNew: true, auth });
  clients.push(socket);
  const got = [];
  socket.onAny((event, ...args) => got.push({ event, args }));
  const connected = new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
  return { socket, got, connected };
}

/** Opens the served UI, pointed at this server with path /ws, and logs in. */
async function logIn(page, server, password) {
  await page.goto(`${server.url}/admin-ui/`);
  await page.evaluate((url) => {
    localStorage.setItem('server_url', url);
    localStorage.setItem('path', '/ws');
    localStorage.setItem('namespace', '/admin');
  }, server.url);
  await page.reload();
  await page.getByLabel('Username').fill(USER);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Connect' }).click();
}

test('the Admin UI served by buildcast logs in, shows sockets, rooms and events, and disconnects a client', async () => {
  const server = await startServer({ env: { ADMIN_UI_USERNAME: USER, ADMIN_UI_PASSWORD_HASH: HASH, ADMIN_UI_DIR: UI_DIR } });
  const browser = await launchBrowser();
  try {
    // /admin-ui redirects to /admin-ui/ (the page's assets are relative).
    const redirect = await fetch(`${server.url}/admin-ui`, { redirect: 'manual' });
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.get('location'), '/admin-ui/');

    const jobId = await createJob(server, 'admin-ui', 'slow');
    const ws = await client(server, ['websocket']);
    const polling = await client(server, ['polling']);
    for (const s of [ws, polling]) {
      const ack = await s.timeout(5_000).emitWithAck('subscribe:job', { jobId });
      assert.equal(ack.ok, true, JSON.stringify(ack));
    }

    // A wrong password: the UI's own message for the exact "invalid credentials".
    const wrong = await newPage(browser, server);
    await logIn(wrong, server, 'not the password');
    await wrong.getByText('Invalid credentials').waitFor({ timeout: 15_000 });

    const page = await newPage(browser, server);
    await logIn(page, server, PASSWORD);
    await page.getByRole('dialog').waitFor({ state: 'hidden', timeout: 15_000 });
    // The login left a session id: a reload reconnects with it alone.
    await waitFor(async () => /^[0-9a-f]{16}$/.test((await page.evaluate(() => localStorage.getItem('session_id'))) ?? ''), {
      timeout: 10_000,
      what: 'the session id the server sent at login, kept by the UI',
    });

    await page.goto(`${server.url}/admin-ui/#/sockets/`);
    for (const s of [ws, polling]) await page.getByText(s.id).first().waitFor({ timeout: 15_000 });

    await page.goto(`${server.url}/admin-ui/#/rooms/`);
    await page.getByText(`job:${jobId}`).first().waitFor({ timeout: 15_000 });

    await page.goto(`${server.url}/admin-ui/#/n/%2F/sockets/${ws.id}`);
    await page.getByText(`job:${jobId}`).first().waitFor({ timeout: 15_000 });
    await page.getByText('127.0.0.1', { exact: true }).first().waitFor({ timeout: 5_000 });
    await page.screenshot({ path: screenshotPath('admin-ui-socket.png') });

    // Events happen while the UI watches (once the first job's lines have
    // stopped, so they are on the Events page's first screen): a new client
    // subscribes.
    await waitFor(async () => (await api(server, `/api/jobs/${jobId}`)).body.status === 'completed', { timeout: 30_000, what: 'the first job to end' });
    await sleep(500);
    const late = await client(server, ['websocket']);
    await late.timeout(5_000).emitWithAck('subscribe:job', { jobId });
    await page.goto(`${server.url}/admin-ui/#/events/`);
    await page.getByText(late.id).first().waitFor({ timeout: 15_000 });
    await page.getByText('subscribe:job').first().waitFor({ timeout: 15_000 });
    // What the fan-out sends the test clients is shown too.
    const running = await createJob(server, 'admin-ui', 'slow');
    await late.timeout(5_000).emitWithAck('subscribe:job', { jobId: running });
    await page
      .getByText('job:log')
      .first()
      .waitFor({ timeout: 15_000 })
      .catch(async (e) => {
        await page.screenshot({ path: screenshotPath('admin-ui-events-failure.png'), timeout: 60_000 }).catch(() => {});
        throw e;
      });
    late.close();

    // Disconnect the WebSocket client from the socket's page.
    const gone = new Promise((resolve) => ws.once('disconnect', resolve));
    await page.goto(`${server.url}/admin-ui/#/n/%2F/sockets/${ws.id}`);
    await page.locator('button:has(.mdi-logout)').first().click();
    const reason = await Promise.race([gone, new Promise((r) => setTimeout(() => r('timeout'), 10_000))]);
    assert.equal(reason, 'io server disconnect');
    assert.equal(polling.connected, true, 'the other client stays');
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('read-only mode offers no operation and ignores those sent anyway; no JWT is asked of /admin, an admin JWT is accepted', async () => {
  const server = await startServer({
    env: { ADMIN_UI_USERNAME: USER, ADMIN_UI_PASSWORD_HASH: HASH, ADMIN_UI_READONLY: 'true', AUTH_MODE: 'jwt', JWT_SECRET: SECRET },
  });
  try {
    const refused = adminSocket(server, { username: USER, password: 'wrong' });
    await assert.rejects(refused.connected, (e) => e.message === 'invalid credentials');

    const admin = adminSocket(server, { username: USER, password: PASSWORD });
    await admin.connected;
    await waitFor(() => admin.got.some((e) => e.event === 'config') && admin.got.some((e) => e.event === 'all_sockets'), { timeout: 10_000, what: 'config and all_sockets' });
    const config = admin.got.find((e) => e.event === 'config').args[0];
    assert.deepEqual(config.supportedFeatures.sort(), ['AGGREGATED_EVENTS', 'ALL_EVENTS']);
    const session = admin.got.find((e) => e.event === 'session')?.args[0];
    assert.match(session, /^[0-9a-f]{16}$/);

    // A session id alone logs in again.
    const again = adminSocket(server, { sessionId: session });
    await again.connected;

    // server_stats every 2 s, with what the UI reads.
    await waitFor(() => admin.got.some((e) => e.event === 'server_stats'), { timeout: 6_000, what: 'server_stats' });
    const stats = admin.got.find((e) => e.event === 'server_stats').args[0];
    for (const key of ['serverId', 'hostname', 'pid', 'uptime', 'clientsCount', 'pollingClientsCount', 'aggregatedEvents', 'namespaces']) {
      assert.ok(key in stats, `${key} in ${JSON.stringify(stats)}`);
    }

    // A JWT with the admin role logs in too; a viewer's does not.
    const mint = (claims) => {
      const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const head = b64({ alg: 'HS256', typ: 'JWT' });
      const body = b64({ exp: Math.floor(Date.now() / 1000) + 600, ...claims });
      const sig = crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
      return `${head}.${body}.${sig}`;
    };
    await adminSocket(server, { token: mint({ sub: 'root', role: 'admin' }) }).connected;
    await assert.rejects(adminSocket(server, { token: mint({ sub: 'val', role: 'viewer' }) }).connected, (e) => e.message === 'invalid credentials');

    // The operations are ignored: nothing disconnects the admin's own socket.
    admin.socket.emit('_disconnect', '/admin', false, again.socket.id);
    admin.socket.emit('join', '/admin', 'somewhere', again.socket.id);
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(again.socket.connected, true, 'read-only: _disconnect is ignored');
    assert.ok(!admin.got.some((e) => e.event === 'room_joined' && e.args[1] === 'somewhere'), 'read-only: join is ignored');
  } finally {
    await server.stop();
  }
});
