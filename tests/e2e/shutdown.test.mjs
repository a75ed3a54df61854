// Stopping the server: what real socket.io-client clients see on SIGTERM (the
// last events of the stopped builds, then a clean close, over both transports),
// that stalled clients cannot hold a shutdown past its grace period, and that a
// SIGKILLed server leaves no build process behind (after a restart at the latest).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';

import {
  startServer,
  connect,
  closeSocket,
  emitAck,
  waitForEvent,
  waitForMidStream,
  waitForJobFinished,
  createJob,
  getJob,
  getJson,
  waitFor,
  sleep,
  projectId as newProjectId,
  DEFAULT_PIPELINES,
  abandonedPolling,
} from './helpers.mjs';

const PIPELINES = `${DEFAULT_PIPELINES}
[pipelines.long]
description = "a line every 50 ms for a minute and a half"
timeout = "300s"
[pipelines.long.steps]
prepare = "echo preparing"
build = "for i in $(seq 1 2000); do echo long $i; sleep 0.05; done"

[pipelines.flood]
description = "20 MB of lines (more than loopback socket buffers hold), then a long wait"
timeout = "300s"
[pipelines.flood.steps]
build = '''seq 1 20000 | awk '{ printf "flood %d %01000d\\n", $1, 0 }'; echo flooded; sleep 120'''

[pipelines.orphans]
description = "a step that leaves a background process and waits in the foreground"
timeout = "300s"
[pipelines.orphans.steps]
build = "sleep 1000 & echo started; sleep 1001; echo never"
`;

const CLEAN_REASONS = ['io server disconnect', 'transport close'];

/** Resolves with the reason of the socket's next disconnect. */
const disconnected = (socket) => new Promise((resolve) => socket.once('disconnect', (reason) => resolve(reason)));

for (const transports of [['polling'], ['websocket']]) {
  test(`SIGTERM: a ${transports[0]} client gets the stopped build's job:completed, then a clean close`, async () => {
    const server = await startServer({ pipelines: PIPELINES });
    const socket = await connect(server.url, { transports });
    const jobId = await createJob(server.url, newProjectId('stop'), 'long');
    assert.equal((await emitAck(socket, 'subscribe:job', jobId)).ok, true);
    await waitForMidStream(server.url, jobId, 20);
    const completed = waitForEvent(socket, 'job:completed', (e) => e.jobId === jobId, 20_000);
    const reason = disconnected(socket);
    const code = await server.stop('SIGTERM');
    assert.equal(code, 0, 'graceful shutdown exits 0');
    const event = await completed;
    assert.equal(event.status, 'failed', 'the server records a stopped build as failed');
    assert.equal(event.success, false);
    const why = await reason;
    assert.ok(CLEAN_REASONS.includes(why), `clean close, not "${why}"`);
    closeSocket(socket);
  });
}

/** A masked WebSocket text frame (clients must mask). */
function wsFrame(text) {
  const payload = Buffer.from(text);
  const mask = crypto.randomBytes(4);
  const head =
    payload.length < 126
      ? Buffer.from([0x81, 0x80 | payload.length])
      : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([head, mask, body]);
}

/**
 * A raw WebSocket Socket.IO client that connects, replays `jobId` from the start,
 * then stops reading (its socket is paused, so the kernel's buffers fill up).
 */
function stalledWebSocket(port, jobId) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => {
      const key = crypto.randomBytes(16).toString('base64');
      sock.write(
        `GET /ws/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    let seen = '';
    let sentConnect = false;
    const onData = (chunk) => {
      seen += chunk.toString('latin1');
      if (!sentConnect && seen.includes('"sid"')) {
        sentConnect = true;
        sock.write(wsFrame('40'));
      }
      if (sentConnect && /40\{"sid"/.test(seen)) {
        sock.off('data', onData);
        sock.write(wsFrame(`42["subscribe:job",{"jobId":"${jobId}","since":0}]`));
        sock.pause();
        resolve(sock);
      }
    };
    sock.on('data', onData);
    sock.on('error', reject);
  });
}

test('SIGTERM: stalled clients (a WebSocket that stopped reading, a session that stopped polling) do not hold the shutdown past its grace period', async () => {
  const server = await startServer({ pipelines: PIPELINES, env: { SHUTDOWN_GRACE_SECS: '2' } });
  const jobId = await createJob(server.url, newProjectId('stall'), 'flood');
  await waitFor(async () => (await getJob(server.url, jobId)).lastSeq > 20_000, 60_000, { what: 'the flood' });
  const raw = await stalledWebSocket(server.port, jobId);
  const { ack } = await abandonedPolling(server.url);
  assert.match(ack, /(^|\x1e)40\{"sid"/, `the abandoned session connected: ${ack}`);
  // A healthy polling client next to them still gets its events and a clean close.
  const socket = await connect(server.url, { transports: ['polling'] });
  assert.equal((await emitAck(socket, 'subscribe:job', jobId)).ok, true);
  const completed = waitForEvent(socket, 'job:completed', (e) => e.jobId === jobId, 20_000);
  const reason = disconnected(socket);
  await sleep(1000); // the replay fills the stalled WebSocket's buffers
  const started = Date.now();
  await server.stop('SIGTERM', 20_000);
  const took = Date.now() - started;
  // Stopping the build's step takes a moment, then at most the 2 s grace period.
  assert.ok(took < 5_000, `stopped in ${took} ms`);
  assert.equal((await completed).status, 'failed');
  const why = await reason;
  assert.ok(CLEAN_REASONS.includes(why), `clean close, not "${why}"`);
  raw.destroy();
  closeSocket(socket);
});

/** Pids of live processes whose environment carries BUILDCAST_JOB_ID=<jobId>. */
function processesOf(jobId) {
  const marker = `BUILDCAST_JOB_ID=${jobId}\0`;
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue; // a zombie is dead
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(marker)) pids.push(Number(entry));
    } catch {}
  }
  return pids;
}

const killAll = (pids) => {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
};

test('SIGKILL: the step dies with the server, and a restart kills what it left behind; the job ends failed', async () => {
  const server = await startServer({ pipelines: PIPELINES });
  const jobId = await createJob(server.url, newProjectId('orphans'), 'orphans');
  let restarted;
  try {
    await waitFor(async () => (await getJson(`${server.url}/api/jobs/${jobId}/events?since=0`)).body.events.some((e) => e.data.message === 'started'), 15_000, { what: 'the step to start' });
    // The shell, the background sleep and the foreground sleep.
    await waitFor(() => processesOf(jobId).length >= 2, 5_000, { what: 'the step processes' });
    const before = processesOf(jobId);
    server.kill();
    await server.exited;
    // The step's shell (the group leader) dies with the server.
    const leader = Math.min(...before);
    await waitFor(() => !processesOf(jobId).includes(leader), 5_000, { what: 'the step shell to die with the server' });
    // A restart on the same data folder kills the rest of its process group.
    restarted = await startServer({ pipelines: PIPELINES, dataDir: server.dataDir });
    await waitFor(() => processesOf(jobId).length === 0, 5_000, { what: `no process of the job left (${processesOf(jobId)})` });
    assert.match(restarted.output(), /killed processes left by the last run/);
    const job = await waitForJobFinished(restarted.url, jobId, 10_000);
    assert.equal(job.status, 'failed');
  } finally {
    killAll(processesOf(jobId));
    if (restarted) await restarted.stop();
  }
});
