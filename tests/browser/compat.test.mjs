// Seeds 000 and 001 in Chromium: their client class and hook (the same code as
// the Node suites, inlined into a page of another origin) with the browser's own
// WebSocket: a build watched to its end, the origin check, and the close codes
// as a browser sees them.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { startServer, launchBrowser, createJob, waitFor, pageServer, api } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLIENTS = readFileSync(path.resolve(here, '../support/seed-clients.mjs'), 'utf8');
const PAGE = `<!doctype html><meta charset="utf-8"><title>seed clients</title>
<script type="module">
${CLIENTS}
window.seeds = { BuildLogStream, buildMonitor, buildPage };
window.ready = true;
</script>`;

const SECRET = 'compat-browser-secret-at-least-32-bytes';

/** An HS256 token over SECRET, valid ten minutes. */
function mintHmacJwt(claims, secret) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

let browser;
/** Servers and page servers to stop after the suite. */
const started = [];
after(async () => {
  await browser?.close();
  for (const s of started) await (s.stop ?? s.close)();
});

async function server(env) {
  const s = await startServer({ env });
  started.push(s);
  return s;
}

async function site(html) {
  const s = await pageServer(html);
  started.push(s);
  return s;
}

async function log(server, jobId) {
  const res = await fetch(`${server.url}/api/jobs/${jobId}/log`);
  return (await res.text()).split('\n').filter((l) => l !== '');
}

async function openPage(html = PAGE) {
  const origin = await site(html);
  browser ??= await launchBrowser();
  const tab = await browser.newPage();
  tab.errors = [];
  tab.on('pageerror', (e) => tab.errors.push(String(e)));
  await tab.goto(origin.url);
  await waitFor(() => tab.evaluate(() => window.ready === true), { what: 'the seed clients to load' });
  return { site: origin, tab };
}

test('in Chromium, seed 000 and seed 001 pages watch a build to its end, from an allowed origin', async () => {
  const { site: page000, tab } = await openPage();
  const buildcast = await server({ WEBSOCKET_CORS_ORIGIN: page000.url });
  const ws = buildcast.url.replace('http', 'ws');
  const jobId = await createJob(buildcast, 'p-browser', 'colors');
  await tab.evaluate(
    ({ jobId, ws }) => {
      const stream = new window.seeds.BuildLogStream(jobId, undefined, ws);
      window.view000 = window.seeds.buildMonitor(stream);
      window.stream000 = stream;
      stream.connect();
      const { page, hook } = window.seeds.buildPage(undefined, jobId, ws);
      window.page001 = page;
      window.hook001 = hook;
      hook.connect();
    },
    { jobId, ws },
  );
  await waitFor(() => tab.evaluate(() => window.view000.artifacts !== null && window.page001.completes.length === 1), {
    timeout: 60_000,
    what: 'both pages to see the end',
  });
  const { view, page, closes, ready } = await tab.evaluate(() => ({
    view: window.view000,
    page: window.page001,
    closes: [...window.stream000.closes, ...window.hook001.closes],
    ready: [window.stream000.ws.readyState, window.hook001.ws.readyState],
  }));
  const lines = await log(buildcast, jobId);
  assert.deepEqual(view.logs, lines);
  assert.equal(view.status, 'SUCCESS');
  assert.equal(view.progress, 100);
  assert.deepEqual(view.artifacts, ['result.txt']);
  assert.equal(view.statuses[view.statuses.length - 1], 'SUCCESS: 100%');
  // Seed 001 has no replay: the page gets what follows its connection, a contiguous tail.
  assert.ok(page.logs.length > 0 && lines.map((l) => `${l}\n`).join('').endsWith(page.logs), page.logs);
  assert.deepEqual(page.completes, [['completed', 'Build completed successfully']]);
  assert.equal(page.currentStep, 'completed');
  assert.deepEqual(closes, []);
  assert.deepEqual(ready, [1, 1], 'both stay open after the end');
  // The 000 page's ping: the text pong, which its JSON.parse rejects (counted).
  await tab.evaluate(() => window.stream000.ping());
  await waitFor(() => tab.evaluate(() => window.stream000.frames.includes('pong')), { what: 'pong' });
  assert.deepEqual(tab.errors, []);
  await tab.evaluate(() => {
    window.stream000.disconnect();
    window.hook001.disconnect();
  });
});

test('in Chromium: a foreign origin cannot connect (1006, HTTP 403); 4004 and jwt close codes reach the page', async () => {
  const allowed = await site('<!doctype html><title>allowed</title>');
  const guarded = await server({ WEBSOCKET_CORS_ORIGIN: allowed.url, AUTH_MODE: 'jwt', JWT_SECRET: SECRET });
  const { tab } = await openPage();
  const ws = guarded.url.replace('http', 'ws');
  const closes = await tab.evaluate(
    (ws) =>
      new Promise((resolve) => {
        const s = new WebSocket(`${ws}/ws/build/some-build?token=x`);
        s.onclose = (e) => resolve({ code: e.code, opened: s.__opened === true });
        s.onopen = () => (s.__opened = true);
      }),
    ws,
  );
  assert.deepEqual(closes, { code: 1006, opened: false }, 'the handshake was refused');

  // From the allowed origin: the seeds' codes are visible.
  const page2 = await site(PAGE);
  const server2 = await server({ WEBSOCKET_CORS_ORIGIN: page2.url, AUTH_MODE: 'jwt', JWT_SECRET: SECRET });
  const tab2 = await browser.newPage();
  await tab2.goto(page2.url);
  await waitFor(() => tab2.evaluate(() => window.ready === true), { what: 'the seed clients' });
  const ws2 = server2.url.replace('http', 'ws');
  const admin = mintHmacJwt({ sub: 'admin', role: 'admin' }, SECRET);
  const started = await api(server2, '/build/start', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
    body: JSON.stringify({ project_id: 'mine', build_type: 'colors' }),
  });
  assert.equal(started.status, 200);
  const jobId = started.body.build_id;
  const stranger = mintHmacJwt({ sub: 'v', projects: ['theirs'] }, SECRET);
  const codes = await tab2.evaluate(
    async ({ ws, jobId, admin, stranger }) => {
      const closeOf = (url) =>
        new Promise((resolve) => {
          const s = new WebSocket(url);
          s.onclose = (e) => resolve([e.code, e.reason]);
        });
      return {
        notFound: await closeOf(`${ws}/api/v1/ws/jobs/no-such-job/updates?token=${admin}`),
        noToken001: await closeOf(`${ws}/api/v1/ws/jobs/${jobId}/updates?token=undefined`),
        other001: await closeOf(`${ws}/api/v1/ws/jobs/${jobId}/updates?token=${stranger}`),
        noToken000: await closeOf(`${ws}/ws/build/${jobId}?token=undefined`),
        other000: await closeOf(`${ws}/ws/build/${jobId}?token=${stranger}`),
      };
    },
    { ws: ws2, jobId, admin, stranger },
  );
  assert.deepEqual(codes, {
    notFound: [4004, 'Job not found'],
    noToken001: [4001, 'Authentication failed'],
    other001: [4003, 'Access denied'],
    noToken000: [1008, 'Authentication error'],
    other000: [1008, 'forbidden'],
  });
  // With a good token the 001 hook connects and follows the build.
  await tab2.evaluate(
    ({ ws, jobId, admin }) => {
      const { page, hook } = window.seeds.buildPage(admin, jobId, ws);
      window.page001 = page;
      hook.connect();
    },
    { ws: ws2, jobId, admin },
  );
  await waitFor(() => tab2.evaluate(() => window.page001.completes.length === 1), { timeout: 60_000, what: 'complete' });
});
