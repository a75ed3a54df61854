// Chromium's own EventSource on a page of another origin follows a build through
// a proxy that drops the connection twice mid-build: the browser reconnects by
// itself with Last-Event-ID and ends with every event exactly once.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, launchBrowser, createJob, allEvents, waitFor, cuttingProxy, pageServer } from './helpers.mjs';

const PAGE = `<!doctype html><meta charset="utf-8"><title>stream</title>
<script>
  window.seqs = [];
  window.opens = 0;
  window.resets = 0;
  window.done = false;
  window.follow = (url) => {
    const source = new EventSource(url);
    source.onopen = () => (window.opens += 1);
    const take = (e) => window.seqs.push(JSON.parse(e.data).seq);
    for (const name of ['job:progress', 'job:log', 'job:error']) source.addEventListener(name, take);
    source.addEventListener('reset', () => (window.resets += 1));
    source.addEventListener('job:completed', (e) => {
      take(e);
      window.done = true;
      source.close();
    });
  };
</script>`;

let browser;
after(async () => {
  await browser?.close();
});

test('EventSource reconnects by itself with Last-Event-ID and gets every event once', async () => {
  const page = await pageServer(PAGE);
  const server = await startServer({ env: { WEBSOCKET_CORS_ORIGIN: page.url } });
  const proxy = await cuttingProxy(server.port);
  browser = await launchBrowser();
  const tab = await browser.newPage();
  await tab.goto(page.url);
  const jobId = await createJob(server, 'p-sse', 'slow');
  await tab.evaluate((url) => window.follow(url), `${proxy.url}/api/jobs/${jobId}/stream`);

  const count = () => tab.evaluate(() => window.seqs.length);
  await waitFor(async () => (await count()) >= 50, { what: '50 events' });
  proxy.cut();
  const afterFirst = await count();
  await waitFor(async () => (await tab.evaluate(() => window.opens)) >= 2 && (await count()) >= afterFirst + 50, {
    what: 'the first reconnection',
  });
  proxy.cut();
  await waitFor(() => tab.evaluate(() => window.done), { timeout: 60_000, what: 'job:completed' });

  const { seqs, opens, resets } = await tab.evaluate(() => ({ seqs: window.seqs, opens: window.opens, resets: window.resets }));
  const history = await allEvents(server, jobId);
  const last = history[history.length - 1].seq;
  assert.deepEqual(seqs, Array.from({ length: last }, (_, i) => i + 1), 'every event once, in order');
  assert.ok(opens >= 3, `reconnected twice (${opens} opens)`);
  assert.equal(resets, 0);
  assert.ok(proxy.cuts >= 2);
  await browser.close();
  browser = null;
  await proxy.close();
  await page.close();
  await server.stop();
});
