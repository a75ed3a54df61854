// Storage faults and what a seq means: a full disk under a running job (live
// delivery goes on, /health says degraded, replay and REST answer from memory,
// nothing is lost once space returns, also across a restart), and the log cap's
// truncation never giving a delivered seq another content.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { openSync, writeSync, closeSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import {
  startServer,
  makeTempDir,
  connect,
  closeSocket,
  emitAck,
  collect,
  waitFor,
  getJson,
  createJob,
  getJob,
  waitForJobFinished,
  waitForMidStream,
  fetchAllEvents,
  jobEvents,
  assertSeqSeries,
  health,
  projectId as newProjectId,
  JOB_EVENTS,
} from './helpers.mjs';

const PIPELINES = `
[pipelines.steady]
description = "400 padded lines over several seconds"
timeout = "120s"
[pipelines.steady.steps]
prepare = "echo preparing"
build = "for i in $(seq 1 400); do echo \\"steady line $i ..........................................................................\\"; sleep 0.02; done"
test = "echo steady done"

[pipelines.capped]
description = "2000 lines in paced bursts"
timeout = "120s"
[pipelines.capped.steps]
build = "for b in $(seq 1 20); do for i in $(seq 1 100); do echo \\"capped line $b $i\\"; done; sleep 0.05; done"
`;

/** seq -> JSON text of each event, asserting no seq came twice with different content. */
function bySeq(events, label) {
  const map = new Map();
  for (const e of events) {
    const text = JSON.stringify(e.data);
    const seen = map.get(e.data.seq);
    assert.ok(seen === undefined || seen === text, `${label}: seq ${e.data.seq} came twice with different content`);
    map.set(e.data.seq, text);
  }
  return map;
}

/** The events of a job over REST, as {event, data} like collected ones. */
async function restEvents(url, jobId) {
  return (await fetchAllEvents(url, jobId)).map((e) => ({ event: e.event, data: e.data }));
}

/** Subscribes with since:0 on a new socket; resolves with the ack, the events and the time the ack took. */
async function replayAll(url, jobId, lastSeq, done = (events) => events.length >= lastSeq) {
  const socket = await connect(url);
  const got = collect(socket, JOB_EVENTS);
  const started = Date.now();
  const ack = await emitAck(socket, 'subscribe:job', { jobId, since: 0 }, 10_000);
  const ackMs = Date.now() - started;
  await waitFor(() => done(jobEvents(got, jobId)), 10_000, { what: 'the replayed events' });
  const events = jobEvents(got, jobId);
  closeSocket(socket);
  return { ack, events, ackMs };
}

function assertSameContent(expected, actual, label) {
  assert.equal(actual.size, expected.size, `${label}: as many events`);
  for (const [seq, text] of expected) assert.equal(actual.get(seq), text, `${label}: seq ${seq}`);
}

function mountTmpfs(t, dir, size) {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
    return true;
  } catch (e) {
    const why = `cannot mount a tmpfs here (${String(e.stderr ?? e.message).trim()})`;
    console.log(`# SKIPPED full-disk test: ${why}`);
    t.skip(why);
    return false;
  }
}

/** Writes zeros into `file` until the filesystem is full; returns the bytes written. */
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

test('a full disk degrades /health, loses nothing, and history catches up once space returns', async (t) => {
  const dataDir = makeTempDir('buildcast-fulldisk-');
  if (!mountTmpfs(t, dataDir, '4m')) return;
  let server;
  try {
    server = await startServer({ dataDir, pipelines: PIPELINES });
    assert.equal((await health(server.url)).status, 'ok');

    const jobId = await createJob(server.url, newProjectId('full'), 'steady');
    const live = await connect(server.url);
    const liveGot = collect(live, JOB_EVENTS);
    const liveAck = await emitAck(live, 'subscribe:job', { jobId, since: 0 });
    assert.equal(liveAck.ok, true);
    await waitForMidStream(server.url, jobId, 30);

    // Fill the disk while the job logs.
    const filler = path.join(dataDir, 'filler');
    const filled = fillDisk(filler);
    assert.ok(filled > 0, 'the filler took the free space');
    const degraded = await waitFor(
      async () => {
        const h = await health(server.url);
        return h.status === 'degraded' ? h : null;
      },
      15_000,
      { what: '/health to say degraded' },
    );
    assert.equal(degraded.store.ok, false, JSON.stringify(degraded));
    assert.match(degraded.store.error, /full/, JSON.stringify(degraded));
    assert.ok(degraded.store.backlog > 0, JSON.stringify(degraded));

    // The job runs to its end while nothing can be written.
    const finished = await waitForJobFinished(server.url, jobId, 60_000);
    assert.equal(finished.status, 'completed');
    const lastSeq = finished.lastSeq;
    assert.ok(lastSeq > 400, `lastSeq ${lastSeq}`);
    await waitFor(() => jobEvents(liveGot, jobId).length >= lastSeq, 10_000, { what: 'every event live' });
    const liveEvents = jobEvents(liveGot, jobId);
    assertSeqSeries(liveEvents.map((e) => e.data.seq), 1, lastSeq, 'live');
    const expected = bySeq(liveEvents, 'live');
    assert.equal((await health(server.url)).status, 'degraded', 'still nothing written');

    // Replay and REST answer promptly from the store plus memory.
    const full = await replayAll(server.url, jobId, lastSeq);
    assert.ok(full.ackMs < 5_000, `since:0 answered in ${full.ackMs} ms`);
    assert.equal(full.ack.ok, true);
    assert.equal(full.ack.recovered, true, JSON.stringify(full.ack));
    assert.equal(full.ack.job.status, 'completed');
    assert.equal(full.ack.lastSeq, lastSeq);
    assertSeqSeries(full.events.map((e) => e.data.seq), 1, lastSeq, 'replay while full');
    assertSameContent(expected, bySeq(full.events, 'replay while full'), 'replay while full');
    const restStarted = Date.now();
    const restWhileFull = await restEvents(server.url, jobId);
    assert.ok(Date.now() - restStarted < 5_000, 'REST events answered promptly');
    assertSameContent(expected, bySeq(restWhileFull, 'REST while full'), 'REST while full');
    assert.equal((await getJob(server.url, jobId)).status, 'completed');

    // Space returns: the backlog is written and /health is ok again.
    unlinkSync(filler);
    await waitFor(
      async () => {
        const h = await health(server.url);
        return h.status === 'ok' && h.store.ok && h.store.backlog === 0;
      },
      15_000,
      { what: '/health to be ok with no backlog' },
    );
    assertSameContent(expected, bySeq(await restEvents(server.url, jobId), 'REST after'), 'REST after');
    const log = await getJson(`${server.url}/api/jobs/${jobId}/log`);
    const logLines = String(log.body).split('\n').filter(Boolean);
    assert.equal(logLines.filter((l) => l.startsWith('steady line ')).length, 400);

    // After a restart, everything came from SQLite.
    closeSocket(live);
    await server.stop();
    server = await startServer({ dataDir, pipelines: PIPELINES });
    const after = await getJob(server.url, jobId);
    assert.equal(after.status, 'completed');
    assert.equal(after.lastSeq, lastSeq);
    const restarted = await replayAll(server.url, jobId, lastSeq);
    assert.equal(restarted.ack.recovered, true);
    assert.equal(restarted.ack.job.status, 'completed');
    assertSeqSeries(restarted.events.map((e) => e.data.seq), 1, lastSeq, 'replay after restart');
    assertSameContent(expected, bySeq(restarted.events, 'replay after restart'), 'replay after restart');
    assertSameContent(expected, bySeq(await restEvents(server.url, jobId), 'REST after restart'), 'REST after restart');
  } finally {
    if (server) await server.stop().catch(() => server.kill());
    try {
      execFileSync('umount', ['-l', dataDir], { stdio: 'pipe' });
    } catch {}
  }
});

test('past MAX_UNSTORED_BYTES on a full disk, lines go out live, history says which it lacks, and nothing else is lost', async (t) => {
  const dataDir = makeTempDir('buildcast-unkept-');
  if (!mountTmpfs(t, dataDir, '4m')) return;
  let server;
  try {
    server = await startServer({ dataDir, pipelines: PIPELINES, env: { MAX_UNSTORED_BYTES: '8000' } });
    const jobId = await createJob(server.url, newProjectId('unkept'), 'steady');
    const live = await connect(server.url);
    const liveGot = collect(live, JOB_EVENTS);
    assert.equal((await emitAck(live, 'subscribe:job', { jobId, since: 0 })).ok, true);
    await waitForMidStream(server.url, jobId, 30);
    const filler = path.join(dataDir, 'filler');
    fillDisk(filler);
    await waitFor(async () => (await health(server.url)).status === 'degraded', 15_000, { what: 'degraded' });
    const finished = await waitForJobFinished(server.url, jobId, 60_000);
    assert.equal(finished.status, 'completed');
    await waitFor(() => jobEvents(liveGot, jobId).length >= finished.lastSeq, 10_000, { what: 'every event live' });
    const liveEvents = jobEvents(liveGot, jobId);
    assertSeqSeries(liveEvents.map((e) => e.data.seq), 1, finished.lastSeq, 'live');
    const seen = bySeq(liveEvents, 'live');
    const backlog = (await health(server.url)).store.backlog_bytes;
    assert.ok(backlog < 8000 + 2000, `unstored bytes ${backlog} stay near MAX_UNSTORED_BYTES`);

    // While full: the hole is reported, not papered over, and the replay ends.
    const whileFull = await replayAll(server.url, jobId, 0, (events) => events.some((e) => e.event === 'job:completed'));
    assert.ok(whileFull.ackMs < 5_000, `answered in ${whileFull.ackMs} ms`);
    assert.equal(whileFull.ack.recovered, false, JSON.stringify(whileFull.ack));
    assert.match(whileFull.ack.reason, /MAX_UNSTORED_BYTES/);

    unlinkSync(filler);
    await waitFor(
      async () => {
        const h = await health(server.url);
        return h.status === 'ok' && h.store.backlog === 0;
      },
      15_000,
      { what: '/health ok' },
    );
    closeSocket(live);
    await server.stop();
    server = await startServer({ dataDir, pipelines: PIPELINES });
    const after = await getJob(server.url, jobId);
    assert.equal(after.status, 'completed');
    const stored = bySeq(await restEvents(server.url, jobId), 'REST after restart');
    assert.ok(stored.size < seen.size, `some lines were not kept (${stored.size} of ${seen.size})`);
    for (const [seq, text] of stored) assert.equal(text, seen.get(seq), `seq ${seq} as delivered live`);
    const notes = [...stored.values()].filter((text) => text.includes('are not in history'));
    assert.ok(notes.length >= 1, 'a system line says which lines history lacks');
    const missing = [...seen.keys()].filter((seq) => !stored.has(seq));
    assert.ok(missing.length > 0);
    const isLog = (seq) => 'stream' in JSON.parse(seen.get(seq));
    for (const seq of missing) assert.ok(isLog(seq), `only log lines are missing, not ${seen.get(seq)}`);
    for (const seq of seen.keys()) if (!isLog(seq)) assert.ok(stored.has(seq), `non-log event ${seq} is stored`);
  } finally {
    if (server) await server.stop().catch(() => server.kill());
    try {
      execFileSync('umount', ['-l', dataDir], { stdio: 'pipe' });
    } catch {}
  }
});

test('past the log cap, every seq a live client saw keeps its content in replay and REST', async () => {
  const server = await startServer({ pipelines: PIPELINES, env: { MAX_LOG_BYTES_PER_JOB: '20000' } });
  try {
    const jobId = await createJob(server.url, newProjectId('cap'), 'capped');
    const live = await connect(server.url);
    const liveGot = collect(live, JOB_EVENTS);
    assert.equal((await emitAck(live, 'subscribe:job', { jobId, since: 0 })).ok, true);
    const finished = await waitForJobFinished(server.url, jobId);
    assert.equal(finished.status, 'completed');
    await waitFor(() => jobEvents(liveGot, jobId).some((e) => e.event === 'job:completed'), 10_000, {
      what: 'job:completed live',
    });
    const seen = bySeq(jobEvents(liveGot, jobId), 'live');
    closeSocket(live);

    const replay = await replayAll(server.url, jobId, 0, (events) => events.some((e) => e.event === 'job:completed'));
    const sources = [
      ['replay', bySeq(replay.events, 'replay')],
      ['REST', bySeq(await restEvents(server.url, jobId), 'REST')],
    ];
    for (const [label, later] of sources) {
      assert.ok(later.size < seen.size, `${label}: the middle was dropped (${later.size} of ${seen.size})`);
      for (const [seq, text] of later) {
        if (seen.has(seq)) assert.equal(text, seen.get(seq), `${label}: seq ${seq} has the content delivered live`);
      }
      const marker = [...later.values()].filter((text) => text.includes('log truncated'));
      assert.equal(marker.length, 1, `${label}: one truncation line`);
    }
  } finally {
    await server.stop();
  }
});
