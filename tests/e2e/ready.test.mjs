// GET /ready against real faults: the data folder stops taking writes (a full
// tmpfs, which stops root too; plus a read-only folder when not root) and Redis
// killed, each flipping /ready to 503 naming the failing part, and back to 200
// once the fault is gone. /health keeps answering 200 with version and uptime.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { openSync, writeSync, closeSync, unlinkSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { startServer, makeTempDir, waitFor, startRedis, REDIS_SERVER } from './helpers.mjs';

async function ready(url) {
  const res = await fetch(`${url}/ready`);
  return { status: res.status, body: await res.json() };
}

function mountTmpfs(t, dir, size) {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
    return true;
  } catch (e) {
    const why = `cannot mount a tmpfs here (${String(e.stderr ?? e.message).trim()})`;
    console.log(`# SKIPPED: ${why}`);
    t.skip(why);
    return false;
  }
}

function fillDisk(file) {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(16 * 1024);
  let written = 0;
  try {
    for (;;) written += writeSync(fd, chunk);
  } catch (e) {
    if (e.code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
  return written;
}

test('/health carries version and uptimeSecs; /ready is 200 with every part ok', async () => {
  const server = await startServer();
  const health = await (await fetch(`${server.url}/health`)).json();
  assert.match(health.version, /^\d+\.\d+\.\d+/);
  assert.equal(typeof health.uptimeSecs, 'number');
  const r = await ready(server.url);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.status, 'ready');
  assert.deepEqual(Object.keys(r.body.checks).sort(), ['runner', 'store']);
  await server.stop();
});

test('/ready is 503 naming the store while the data folder takes no write, and 200 again after', async (t) => {
  const dataDir = makeTempDir('buildcast-ready-');
  if (!mountTmpfs(t, dataDir, '4m')) return;
  let server;
  try {
    server = await startServer({ dataDir });
    assert.equal((await ready(server.url)).status, 200);
    const filler = path.join(dataDir, 'filler');
    assert.ok(fillDisk(filler) > 0);
    const failed = await waitFor(
      async () => {
        const r = await ready(server.url);
        return r.status === 503 ? r : null;
      },
      10_000,
      { what: '/ready to answer 503' },
    );
    assert.deepEqual(failed.body.failing, ['store'], JSON.stringify(failed.body));
    assert.equal(failed.body.checks.store.ok, false);
    assert.match(failed.body.checks.store.error, /space|full/i, JSON.stringify(failed.body));
    assert.match(failed.body.error, /^store: /);
    assert.equal(failed.body.checks.runner.ok, true);
    // Liveness is not readiness: /health still answers 200.
    assert.equal((await fetch(`${server.url}/health`)).status, 200);

    unlinkSync(filler);
    await waitFor(async () => (await ready(server.url)).status === 200, 10_000, { what: '/ready to recover' });

    if (process.getuid?.() !== 0) {
      // Not root: a folder without write permission fails the probe too.
      chmodSync(dataDir, 0o555);
      try {
        await waitFor(async () => (await ready(server.url)).status === 503, 10_000, { what: '503 on a read-only folder' });
      } finally {
        chmodSync(dataDir, 0o755);
      }
      await waitFor(async () => (await ready(server.url)).status === 200, 10_000, { what: '200 once writable' });
    }
  } finally {
    if (server) await server.stop().catch(() => server.kill());
    try {
      execFileSync('umount', ['-l', dataDir], { stdio: 'pipe' });
    } catch {}
  }
});

test('/ready is 503 naming redis while Redis is down, and 200 once it is back', { skip: !REDIS_SERVER && 'redis-server is not installed' }, async () => {
  const redis = await startRedis();
  const server = await startServer({ env: { REDIS_URL: redis.url } });
  try {
    await waitFor(async () => (await ready(server.url)).status === 200, 10_000, { what: '/ready with Redis up' });
    const up = await ready(server.url);
    assert.equal(up.body.checks.redis.ok, true);

    await redis.kill();
    const failed = await waitFor(
      async () => {
        const r = await ready(server.url);
        return r.status === 503 ? r : null;
      },
      10_000,
      { what: '/ready to answer 503 without Redis' },
    );
    assert.deepEqual(failed.body.failing, ['redis'], JSON.stringify(failed.body));
    assert.match(failed.body.error, /^redis: /);
    assert.equal(failed.body.checks.store.ok, true);

    const again = await startRedis(redis.port);
    await waitFor(async () => (await ready(server.url)).status === 200, 20_000, { what: '/ready once Redis is back' });
    await again.stop();
  } finally {
    await server.stop().catch(() => server.kill());
  }
});
