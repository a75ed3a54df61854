// Starts the real buildcast binary for a JavaScript suite (tests/e2e,
// tests/browser) and learns its port from the server itself: it runs with
// `--port-file <file>` and the launcher waits for the file, which the server
// writes (whole, by a rename) once it listens. The Rust tests do the same
// through tests/support/server.rs. Only node: built-ins, so any suite can import
// it whatever its node_modules holds.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** The URL a client uses for a server listening on `host`:`port`. */
export function serverUrl(host, port) {
  if (!host || host === '0.0.0.0' || host === 'localhost') return `http://127.0.0.1:${port}`;
  if (host === '::') return `http://[::1]:${port}`;
  return host.includes(':') ? `http://[${host}]:${port}` : `http://${host}:${port}`;
}

/**
 * Spawns `bin` with `env` (used as the whole environment) in `cwd`.
 * Returns at once `{ proc, ready }`: `ready` resolves to `{ port, url }` once
 * the server listens, and rejects if it exits first or takes longer than
 * `timeoutMs` (then it is killed). `onStdout` / `onStderr` get every chunk.
 */
export function launchServer({ bin, env, cwd, args = [], timeoutMs = 20_000, onStdout, onStderr }) {
  const portDir = mkdtempSync(path.join(tmpdir(), 'buildcast-port-'));
  const portFile = path.join(portDir, 'port');
  const proc = spawn(bin, ['--port-file', portFile, ...args], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  if (onStdout) proc.stdout.on('data', onStdout);
  else proc.stdout.resume();
  if (onStderr) proc.stderr.on('data', onStderr);
  else proc.stderr.resume();

  const ready = new Promise((resolve, reject) => {
    let settled = false;
    const started = Date.now();
    const finish = (fn, value) => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      rmSync(portDir, { recursive: true, force: true });
      fn(value);
    };
    const poll = setInterval(() => {
      let text = null;
      try {
        text = readFileSync(portFile, 'utf8');
      } catch {}
      const port = text === null ? NaN : Number(text.trim());
      if (Number.isInteger(port) && port > 0) {
        finish(resolve, { port, url: serverUrl(env?.HOST, port) });
      } else if (Date.now() - started > timeoutMs) {
        try {
          proc.kill('SIGKILL');
        } catch {}
        finish(reject, new Error(`buildcast did not listen within ${timeoutMs} ms`));
      }
    }, 10);
    proc.on('error', (err) => finish(reject, err));
    proc.on('exit', (code, signal) =>
      finish(reject, new Error(`buildcast exited (code ${code}, signal ${signal}) before listening`)),
    );
  });
  return { proc, ready };
}
