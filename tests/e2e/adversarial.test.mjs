// Adversarial end-to-end cases: what an attacker, a crash or a hostile network
// does to buildcast, asserted from what a user sees. No seq is lost or doubled,
// refusals are clear, the server stays up and /health tells the truth.
//
// Some cases check defects that are known and being fixed; they fail until then.
// Each case bounds its client count and time, and talks only to 127.0.0.1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  startServer,
  makeTempDir,
  connect,
  makeSocket,
  closeSocket,
  emitAck,
  collect,
  waitFor,
  sleep,
  getJson,
  createJob,
  getJob,
  waitForMidStream,
  waitForJobFinished,
  fetchAllEvents,
  health,
  assertSeqSeries,
  followResumable,
  assertMatchesHistory,
  projectId as newProjectId,
  JOB_EVENTS,
  DEFAULT_PIPELINES,
  REDIS_SERVER,
  startRedis,
  mintHmacJwt,
  b64url,
  rawWebSocket,
  rawPollingSession,
} from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

// The default test pipelines plus a few that produce load.
const PIPELINES = `${DEFAULT_PIPELINES}
[pipelines.firehose]
description = "80,000 lines as fast as the shell writes them, in 400 bursts"
timeout = "120s"
[pipelines.firehose.steps]
prepare = "echo preparing"
build = "for b in $(seq 1 400); do seq -f \\"fire $b %g\\" 1 200; sleep 0.02; done"

[pipelines.storm]
description = "1,200 lines over about six seconds"
timeout = "120s"
[pipelines.storm.steps]
prepare = "echo preparing"
build = "for b in $(seq 1 30); do seq -f \\"storm $b %g\\" 1 40; sleep 0.2; done"

[pipelines.flood]
description = "20,000 lines of about 1 KB (20 MB) in 40 bursts"
timeout = "120s"
[pipelines.flood.steps]
prepare = "echo preparing"
build = "pad=$(printf '%01000d' 0); for b in $(seq 1 40); do seq -f \\"flood $b %g $pad\\" 1 500; sleep 0.1; done"
`;

const STOPPED_RE = /stop|shut ?down|restart|interrupt/i;

/** The follower's seqs must be exactly 1..lastSeq, each once. */
function assertComplete(f, lastSeq, label) {
  assertSeqSeries(f.seqs(), 1, lastSeq, `${label}: union of received seqs (${f.describe()})`);
}

// ---------------------------------------------------------------------------
// 1. kill -9 under write load

test('kill -9 mid-build under write load: after a restart every line any client saw is in the history, 1..lastSeq, job failed with a system line', async () => {
  const dataDir = makeTempDir('buildcast-adv-kill-');
  const env = { HISTORY_WINDOW: '256', MAX_CONCURRENT_JOBS: '2' };
  const s1 = await startServer({ dataDir, pipelines: PIPELINES, env });
  const jobId = await createJob(s1.url, newProjectId('kill9'), 'firehose');
  const followers = [
    followResumable(s1.url, jobId, { transports: ['websocket'] }),
    followResumable(s1.url, jobId, { transports: ['websocket'] }),
    followResumable(s1.url, jobId, { transports: ['polling'] }),
  ];
  await waitForMidStream(s1.url, jobId, 15_000, 30_000);
  await waitFor(() => followers.every((f) => f.lastSeen >= 12_000), 30_000, { what: 'every client to be mid-stream' });

  s1.kill();
  assert.equal((await s1.exited).signal, 'SIGKILL');
  const seenBeforeKill = followers.map((f) => new Map(f.bySeq));
  const maxSeen = Math.max(...followers.map((f) => f.lastSeen));

  // Same port, so the clients' own reconnects find the restarted server.
  const s2 = await startServer({ dataDir, pipelines: PIPELINES, env: { ...env, PORT: String(s1.port) } });
  const job = await waitForJobFinished(s2.url, jobId, 10_000);
  assert.equal(job.status, 'failed', 'the interrupted job is marked failed');
  const history = await fetchAllEvents(s2.url, jobId);
  assertSeqSeries(history.map((e) => e.seq), 1, job.lastSeq, 'stored history after the restart');
  assert.ok(job.lastSeq > maxSeen, `the history (lastSeq ${job.lastSeq}) holds at least what clients saw (${maxSeen}), plus the stop`);
  const system = history.filter((e) => e.event === 'job:log' && e.data.stream === 'system');
  assert.ok(system.some((e) => STOPPED_RE.test(e.data.message)), `a system line says the server stopped: ${JSON.stringify(system.map((e) => e.data.message))}`);
  assert.equal(history.at(-1).event, 'job:completed');
  assert.equal(history.at(-1).data.status, 'failed');

  // Nothing a client saw before the kill is lost or changed.
  const stored = new Map(history.map((e) => [e.seq, e]));
  followers.forEach((f, i) => {
    const lost = [];
    const changed = [];
    for (const [seq, { event, data }] of seenBeforeKill[i]) {
      const s = stored.get(seq);
      if (!s) lost.push(seq);
      else if (s.event !== event || JSON.stringify(s.data) !== JSON.stringify(data)) changed.push({ seq, seen: data.message ?? event, stored: s.data.message ?? s.event });
    }
    assert.deepEqual({ lost: lost.slice(0, 10), lostCount: lost.length, changed: changed.slice(0, 5) }, { lost: [], lostCount: 0, changed: [] }, `client ${i} before the kill`);
  });

  // The clients reconnect by themselves, resume with since and end with the whole job.
  await waitFor(() => followers.every((f) => f.completed), 30_000, {
    what: `every client to resume and see job:completed (${followers.map((f) => f.describe()).join(' | ')})`,
  });
  await sleep(200);
  followers.forEach((f, i) => {
    assertMatchesHistory(f, history, `client ${i}`);
    assertComplete(f, job.lastSeq, `client ${i}`);
    assert.equal(f.completed.status, 'failed');
    f.close();
  });
  assert.equal((await health(s2.url)).status, 'ok');
  await s2.stop();
});

// ---------------------------------------------------------------------------
// 2. Reconnect storm

test('reconnect storm: 200 clients (half websocket, half polling) each drop their transport 3 times and resume; each ends with exactly 1..lastSeq', async () => {
  const CLIENTS = 200;
  const DROPS = 3;
  const server = await startServer({ pipelines: PIPELINES, env: { MAX_CONCURRENT_JOBS: '2' } });
  const jobId = await createJob(server.url, newProjectId('storm'), 'storm');
  const followers = [];
  const timers = [];
  let drops = 0;
  for (let i = 0; i < CLIENTS; i++) {
    const f = followResumable(server.url, jobId, { transports: i % 2 === 0 ? ['websocket'] : ['polling'] });
    followers.push(f);
    // Drop at random moments over the job's ~6 s (some during the first replay).
    for (let d = 0; d < DROPS; d++) {
      timers.push(
        setTimeout(() => {
          if (f.socket.connected) {
            drops++;
            f.socket.io.engine.close();
          }
        }, 200 + Math.random() * 6_000),
      );
    }
  }
  try {
    await waitFor(() => followers.every((f) => f.completed), 120_000, {
      interval: 200,
      what: `every client to see job:completed; stuck: ${followers.filter((f) => !f.completed).slice(0, 3).map((f) => f.describe()).join(' | ')}`,
    });
  } finally {
    timers.forEach(clearTimeout);
  }
  await sleep(300);
  const job = await getJob(server.url, jobId);
  assert.equal(job.status, 'completed');
  const history = await fetchAllEvents(server.url, jobId);
  assert.ok(drops >= CLIENTS, `transports were dropped (${drops})`);
  const reconnected = followers.filter((f) => f.connects > 1).length;
  assert.ok(reconnected >= CLIENTS / 2, `most clients reconnected at least once (${reconnected})`);
  followers.forEach((f, i) => {
    const label = `client ${i} (${i % 2 === 0 ? 'websocket' : 'polling'})`;
    assertComplete(f, job.lastSeq, label);
    assert.deepEqual(f.duplicates.slice(0, 10), [], `${label}: no seq twice (${f.describe()})`);
    assertMatchesHistory(f, history, label);
    for (const { payload, ack } of f.acks) {
      if (ack && payload.since > 0) assert.equal(ack.recovered, true, `${label}: resume from ${payload.since}: ${JSON.stringify(ack)}`);
    }
  });
  followers.forEach((f) => f.close());
  await waitFor(async () => (await health(server.url)).websocket.connected_clients === 0, 10_000, { what: 'every client to be counted out' });
  assert.equal((await health(server.url)).status, 'ok');
  await server.stop();
});
