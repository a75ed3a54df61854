// Shared helpers of the browser suite: the real server binary, Debian's chromium
// through playwright-core, and a few waits.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { launchServer } from '../support/server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

export const BIN = process.env.BUILDCAST_BIN
  ? path.resolve(process.env.BUILDCAST_BIN)
  : path.resolve(here, '../../target/debug/buildcast');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const ARTIFACTS = path.resolve(here, '../artifacts');

// Pipelines of this suite. `colors` prints 30 numbered lines, one of them with
// ANSI colours and one on stderr.
export const PIPELINES = `
[pipelines.colors]
description = "30 numbered lines, one coloured, one on stderr"
timeout = "60s"
artifacts = ["out/*"]
[pipelines.colors.steps]
prepare = "echo 'preparing the workspace'"
install = "echo 'installing 2 packages'; sleep 0.1"
build = '''
mkdir -p out
for i in $(seq 1 30); do
  if [ $i -eq 10 ]; then printf 'line %02d \\033[1;32mgreen bold\\033[0m and \\033[31mred\\033[0m\\n' $i;
  elif [ $i -eq 20 ]; then echo "line $i on stderr" >&2;
  else echo "line $(printf %02d $i) of the build"; fi
  sleep 0.03
done
echo artifact > out/result.txt
'''
test = "echo 'all 3 tests passed'"

[pipelines.broken]
description = "fails in its build step"
timeout = "60s"
[pipelines.broken.steps]
prepare = "echo 'preparing'"
build = """
echo "compiling main.rs"
echo "error[E0425]: cannot find value 'x' in this scope" >&2
exit 2
"""

[pipelines.slow]
description = "400 lines over about 8 seconds"
timeout = "120s"
[pipelines.slow.steps]
prepare = "echo 'preparing'"
build = "for i in $(seq 1 400); do echo \\"slow line $i\\"; sleep 0.02; done"
test = "echo 'slow done'"

[pipelines.burst]
description = "waits for a go file beside its workspace (at most 30 s), then 60,000 lines at once"
timeout = "120s"
[pipelines.burst.steps]
prepare = "for i in $(seq 1 600); do [ -e ../go ] && break; sleep 0.05; done"
build = "seq 1 60000 | sed 's/^/burst line /'"

[pipelines.huge]
description = "200,000 lines"
timeout = "300s"
[pipelines.huge.steps]
build = "seq 1 200000"
`;

const cleanup = new Set();
function cleanUp() {
  for (const fn of cleanup) {
    try {
      fn();
    } catch {}
  }
}
process.on('exit', cleanUp);
// A test run that is stopped (or timed out by the runner) leaves no server behind.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    cleanUp();
    process.exit(1);
  });
}

export function tempDir(prefix) {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Starts the server binary; resolves once it listens (the shared launcher learns
 * the port from the server: tests/support/server.mjs).
 * Pass `dataDir` and `port` to restart a server on the same data and address.
 */
export function startServer({ dataDir, port = 0, pipelines = PIPELINES, env = {}, timeoutMs = 20_000 } = {}) {
  if (!existsSync(BIN)) throw new Error(`buildcast binary not found at ${BIN}: run cargo build or set BUILDCAST_BIN`);
  dataDir ??= tempDir('buildcast-browser-data-');
  const pipelinesFile = path.join(tempDir('buildcast-browser-pipelines-'), 'pipelines.toml');
  writeFileSync(pipelinesFile, pipelines);
  let output = '';
  const keep = (chunk) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  const { proc, ready } = launchServer({
    bin: BIN,
    cwd: tempDir('buildcast-browser-cwd-'),
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME ?? tmpdir(),
      HOST: '127.0.0.1',
      PORT: String(port),
      DATA_DIR: dataDir,
      PIPELINES_FILE: pipelinesFile,
      NO_COLOR: '1',
      RUST_LOG: 'warn,buildcast=info',
      ...env,
    },
    timeoutMs,
    onStdout: keep,
    onStderr: keep,
  });
  const kill = () => proc.kill('SIGKILL');
  cleanup.add(kill);
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const server = {
    proc,
    dataDir,
    output: () => output,
    exited,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
      cleanup.delete(kill);
    },
  };
  return ready.then(
    ({ port: bound, url }) => {
      server.url = url;
      server.port = bound;
      return server;
    },
    (err) => {
      throw new Error(`${err.message}:\n${output}`);
    },
  );
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`chromium not found at ${CHROMIUM}: apt-get install -y chromium`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  cleanup.add(() => browser.process()?.kill('SIGKILL'));
  return browser;
}

/** A new page that records console errors and failed requests to outside hosts. */
export async function newPage(browser, server, { viewport = { width: 1360, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.errors = [];
  page.external = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') page.errors.push(m.text());
  });
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (!['127.0.0.1', 'localhost'].includes(u.hostname) && !u.protocol.startsWith('data') && !u.protocol.startsWith('blob')) page.external.push(r.url());
  });
  page.base = server?.url;
  return page;
}

export function screenshotPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}

export async function api(server, route, init) {
  const res = await fetch(`${server.url}${route}`, init);
  const text = await res.text();
  return { status: res.status, body: text ? (res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) : null };
}

export async function createJob(server, projectId, pipeline) {
  const res = await api(server, '/api/jobs', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ projectId, pipeline }),
  });
  if (res.status !== 201) throw new Error(`POST /api/jobs: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.jobId;
}

/** Every recorded event of a job, from the REST history. */
export async function allEvents(server, jobId) {
  const out = [];
  let since = 0;
  for (;;) {
    const { body } = await api(server, `/api/jobs/${jobId}/events?since=${since}&limit=10000`);
    out.push(...body.events);
    if (!body.events.length || body.nextSince >= body.lastSeq) return out;
    since = body.nextSince;
  }
}

export async function waitFor(fn, { timeout = 30_000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ` (last: ${JSON.stringify(last)})`}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** The job page's model through the test hook. */
export function jobState(page) {
  return page.evaluate(() => window.__buildcast.job());
}

/**
 * The page's address's `#…` as the page has it now (`page.url()` learns of a
 * `history.replaceState` only later).
 */
export function hashOf(page) {
  return page.evaluate(() => location.hash);
}

export function pageLines(page, from, to) {
  return page.evaluate(([a, b]) => window.__buildcast.lines(a, b), [from, to]);
}

/**
 * A TCP proxy in front of the server whose `cut()` drops every open connection,
 * as a flaky network does. `url` is the proxy's base URL.
 */
export async function cuttingProxy(targetPort) {
  const net = await import('node:net');
  const open = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    open.add(pair);
    const end = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const proxy = {
    url: `http://127.0.0.1:${server.address().port}`,
    cuts: 0,
    cut() {
      proxy.cuts += 1;
      for (const { client, upstream } of [...open]) {
        client.destroy();
        upstream.destroy();
      }
    },
    close: () => new Promise((r) => {
      proxy.cut();
      server.close(r);
    }),
  };
  cleanup.add(() => server.close());
  return proxy;
}

/** A tiny page server (another origin than buildcast's): `html` at `/`. */
export async function pageServer(html) {
  const http = await import('node:http');
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  cleanup.add(() => server.close());
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((r) => {
        server.close(r);
        server.closeAllConnections();
      }),
  };
}
