// Shared by the compatibility-gateway suites (compat-*.test.mjs): pipelines
// like buildcast's `demo` ones but quicker, a global `WebSocket` for the seed
// clients when Node has none (Node < 22: the `ws` package's, which answers
// protocol pings as browsers do), and a raw WebSocket that records everything.

import assert from 'node:assert/strict';
import WebSocketImpl from 'ws';
import { waitFor } from './helpers.mjs';

if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WebSocketImpl;

export const COMPAT_PIPELINES = `
[pipelines.demo]
description = "demo, quicker: four steps and an artifact"
timeout = "60s"
artifacts = ["dist/*"]
[pipelines.demo.steps]
prepare = "echo \\"Preparing workspace for project $BUILDCAST_PROJECT_ID\\"; mkdir -p dist"
install = "for dep in serde tokio axum; do echo \\"Fetching $dep\\"; sleep 0.05; done"
build = "for i in $(seq 1 20); do echo \\"Compiling unit $i/20\\"; sleep 0.05; done; echo bin > dist/app.bin"
test = "for t in parse emit replay; do echo \\"test $t ... ok\\"; done; echo '3 passed; 0 failed'"

[pipelines.demo-fail]
description = "fails in its build step"
timeout = "60s"
[pipelines.demo-fail.steps]
prepare = "echo 'Preparing'"
install = "echo 'Installing'"
build = "echo 'Compiling...'; sleep 0.2; echo \\"error[E0425]: cannot find value 'x' in this scope\\" >&2; exit 1"

[pipelines.demo-slow]
description = "a build that runs long enough to be cancelled or watched late"
timeout = "120s"
[pipelines.demo-slow.steps]
prepare = "echo 'Preparing'"
build = "for i in $(seq 1 400); do echo \\"slow line $i\\"; sleep 0.05; done"
test = "echo 'slow done'"

[pipelines.flood]
description = "100,000 log lines as fast as they come"
timeout = "300s"
[pipelines.flood.steps]
build = "seq 1 100000 | sed 's/^/flood line /'"
`;

/** The ws:// base URL of a server. */
export function wsBase(server) {
  return server.url.replace(/^http/, 'ws');
}

/**
 * A raw WebSocket (the `ws` package, which can set headers) that records every
 * frame. `opened` resolves on open or rejects with the HTTP status of a refused
 * handshake; `closed` resolves with `{ code, reason }`.
 */
export function rawSocket(url, { headers = {}, origin } = {}) {
  const ws = new WebSocketImpl(url, { headers, origin });
  const frames = [];
  ws.on('message', (data, isBinary) => frames.push(isBinary ? data : data.toString()));
  const opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
    });
    ws.once('error', reject);
  });
  opened.catch(() => {});
  const closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  return { ws, frames, opened, closed, json: () => frames.map((f) => JSON.parse(f)) };
}

/** Waits until `client.frames` holds a frame for which `predicate(parsed)` is true. */
export function waitForFrame(client, predicate, what = 'a frame', timeoutMs = 60_000) {
  return waitFor(
    () =>
      client.frames.some((f) => {
        try {
          return predicate(JSON.parse(f));
        } catch {
          return false;
        }
      }),
    timeoutMs,
    { what },
  );
}

/** Asserts that the numbers never decrease. */
export function assertRising(values, label) {
  for (let i = 1; i < values.length; i++) {
    assert.ok(values[i] >= values[i - 1], `${label} went down at ${i}: ${values.slice(0, i + 1).join(', ')}`);
  }
}

/** Whether a WebSocket is still open after `ms` more milliseconds. */
export async function staysOpen(ws, ms = 1500) {
  await new Promise((r) => setTimeout(r, ms));
  return ws.readyState === 1;
}

/** POST JSON; resolves with `{ status, body }`. */
export async function postJson(url, body, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}
