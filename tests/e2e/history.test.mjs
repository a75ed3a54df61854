// Event history: late subscribers, resuming after a dropped connection,
// durability across restarts, and the REST history endpoints.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  makeTempDir,
  connect,
  closeSocket,
  closeAllSockets,
  emitAck,
  collect,
  waitFor,
  sleep,
  getJson,
  createJob,
  getJob,
  waitForJobFinished,
  waitForMidStream,
  fetchAllEvents,
  jobEvents,
  assertSeqSeries,
  assertEventShape,
  progressTable,
  projectId as newProjectId,
  SUCCESS_PHASES,
  JOB_EVENTS,
} from './helpers.mjs';

let server;

before(async () => {
  server = await startServer({ env: { MAX_CONCURRENT_JOBS: '4' } });
});

after(async () => {
  closeAllSockets();
  if (server) await server.stop();
});

const summary = (e) => ({ event: e.event, seq: e.data.seq, message: e.data.message ?? null, status: e.data.status ?? null });

test('late subscriber with since:0 after the job finished gets the whole history', async () => {
  const projectId = newProjectId('late');
  const jobId = await createJob(server.url, projectId, 'quick');
  const job = await waitForJobFinished(server.url, jobId);
  assert.equal(job.status, 'completed');
  assert.ok(job.lastSeq >= 10, `lastSeq ${job.lastSeq}`);

  const socket = await connect(server.url);
  const got = collect(socket, JOB_EVENTS);
  const ack = await emitAck(socket, 'subscribe:job', { jobId, since: 0 });
  assert.equal(ack.ok, true);
  assert.equal(ack.job.jobId, jobId);
  assert.equal(ack.job.status, 'completed');
  assert.equal(ack.lastSeq, job.lastSeq);
  assert.equal(typeof ack.epoch, 'string');
  assert.equal(ack.recovered, true, 'replay from 0 of a stored job is a full recovery');
  await waitFor(() => got.length >= job.lastSeq, 10_000, { what: `${job.lastSeq} replayed events` });
  await sleep(200);
  for (const e of got) assertEventShape(e.event, e.data, { jobId, projectId });
  assertSeqSeries(got.map((e) => e.data.seq), 1, job.lastSeq, 'replayed seqs');
  assert.deepEqual(progressTable(got), SUCCESS_PHASES);
  assert.equal(got.at(-1).event, 'job:completed');
  assert.equal(got.at(-1).data.success, true);
  const buildLines = got.filter((e) => e.event === 'job:log' && e.data.message.startsWith('build line')).map((e) => e.data.message);
  assert.deepEqual(buildLines, [1, 2, 3, 4, 5].map((i) => `build line ${i}`));

  // Replay equals what REST has stored.
  const rest = await fetchAllEvents(server.url, jobId);
  assert.deepEqual(
    got.map(summary),
    rest.map((r) => summary({ event: r.event, data: r.data })),
    'socket replay equals REST history',
  );
  for (const r of rest) assert.equal(r.data.seq, r.seq);

  // since:N replays only what came after N.
  const s2 = await connect(server.url);
  const got2 = collect(s2, JOB_EVENTS);
  const ack2 = await emitAck(s2, 'subscribe:job', { jobId, since: 5, epoch: ack.epoch });
  assert.equal(ack2.ok, true);
  assert.equal(ack2.recovered, true);
  await waitFor(() => got2.length >= job.lastSeq - 5, 10_000, { what: 'events after seq 5' });
  await sleep(200);
  assertSeqSeries(got2.map((e) => e.data.seq), 6, job.lastSeq, 'seqs after since=5');
  closeSocket(socket);
  closeSocket(s2);
});

test('late subscriber mid-build gets history then live events with no gap or duplicate', async () => {
  const projectId = newProjectId('mid');
  const jobId = await createJob(server.url, projectId, 'burst');
  await waitForMidStream(server.url, jobId, 400);
  for (const transports of [['websocket'], ['polling']]) {
    const socket = await connect(server.url, { transports });
    const got = collect(socket, JOB_EVENTS);
    const ack = await emitAck(socket, 'subscribe:job', { jobId, since: 0 });
    assert.equal(ack.ok, true);
    await waitFor(() => got.some((e) => e.event === 'job:completed'), 60_000, { what: `job:completed (${transports})` });
    await sleep(200);
    const job = await getJob(server.url, jobId);
    assertSeqSeries(got.map((e) => e.data.seq), 1, job.lastSeq, `seqs over ${transports}`);
    const burst = got.filter((e) => e.event === 'job:log' && /^burst \d+ \d+$/.test(e.data.message));
    assert.equal(burst.length, 3000, 'every burst line');
    assert.equal(burst[0].data.message, 'burst 1 1');
    assert.equal(burst.at(-1).data.message, 'burst 10 300');
    closeSocket(socket);
  }
});

/**
 * Follow a burst job, dropping the transport twice; on every (re)connect the
 * client subscribes with since = the highest seq it has seen.
 */
async function resumeScenario(transports) {
  const projectId = newProjectId('resume');
  const jobId = await createJob(server.url, projectId, 'burst');
  const socket = await connect(server.url, {
    transports,
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 300,
  });
  const seqs = [];
  const acks = [];
  let lastSeen = 0;
  let epoch = null;
  let completed = null;
  let connects = 1;
  let drops = 0;
  const dropAt = [300, 1500];
  for (const ev of JOB_EVENTS) {
    socket.on(ev, (data) => {
      if (data.jobId !== jobId) return;
      seqs.push(data.seq);
      lastSeen = Math.max(lastSeen, data.seq);
      if (ev === 'job:completed') completed = data;
      if (drops < dropAt.length && seqs.length >= dropAt[drops]) {
        drops++;
        // Simulate a network drop: close the transport under the client.
        socket.io.engine.close();
      }
    });
  }
  let subscribeCount = 0;
  const subscribe = async () => {
    const n = ++subscribeCount;
    const payload = { jobId, since: lastSeen };
    if (epoch) payload.epoch = epoch;
    const dropsBefore = drops;
    let ack = null;
    try {
      ack = await emitAck(socket, 'subscribe:job', payload, 5_000);
    } catch (e) {
      // The ack can be lost only if the transport was dropped meanwhile.
      if (drops === dropsBefore) throw e;
    }
    acks.push({ payload, ack, n });
    if (ack?.epoch) epoch = ack.epoch;
  };
  const pending = [];
  socket.on('connect', () => {
    connects++;
    pending.push(subscribe());
  });
  pending.push(subscribe());
  const state = () =>
    `connected=${socket.connected} transport=${socket.io.engine?.transport?.name} drops=${drops} connects=${connects} ` +
    `received=${seqs.length} lastSeen=${lastSeen} acks=${JSON.stringify(acks.map((a) => [a.n, a.payload.since, a.ack && { ok: a.ack.ok, lastSeq: a.ack.lastSeq, recovered: a.ack.recovered, reason: a.ack.reason, error: a.ack.error }]))}`;
  await waitFor(() => completed !== null, 30_000, { what: `job:completed over ${transports}` }).catch(async (e) => {
    const job = await getJob(server.url, jobId);
    throw new Error(`${e.message}; ${state()}; job status=${job.status} lastSeq=${job.lastSeq}`);
  });
  await Promise.all(pending);
  await sleep(300);
  closeSocket(socket);

  const job = await getJob(server.url, jobId);
  assert.equal(job.status, 'completed');
  assert.equal(drops, 2, 'both drops happened');
  assert.ok(connects >= 3, `reconnected after each drop (connects=${connects})`);
  const lastSent = acks.reduce((a, b) => (b.n > a.n ? b : a));
  assert.ok(lastSent.ack, 'the subscription after the last reconnect was acknowledged');
  for (const { payload, ack } of acks) {
    if (ack === null) continue; // lost in a drop
    assert.equal(ack.ok, true, `ack for ${JSON.stringify(payload)}: ${JSON.stringify(ack)}`);
    if (payload.since > 0) assert.equal(ack.recovered, true, `resume from ${payload.since} recovered: ${JSON.stringify(ack)}`);
  }
  const sorted = [...seqs].sort((a, b) => a - b);
  assertSeqSeries(sorted, 1, job.lastSeq, `union of received seqs over ${transports}`);
  assert.equal(seqs.length, job.lastSeq, 'no duplicates');
}

test('resume after a dropped websocket: union of received seqs is exactly 1..lastSeq', async () => {
  await resumeScenario(['websocket']);
});

test('resume after a dropped polling transport: union of received seqs is exactly 1..lastSeq', async () => {
  await resumeScenario(['polling']);
});

async function restartScenario(how) {
  const dataDir = makeTempDir('buildcast-restart-');
  const s1 = await startServer({ dataDir });
  let s2;
  try {
    const projectId = newProjectId(`restart-${how}`);
    const doneId = await createJob(s1.url, projectId, 'quick');
    const done = await waitForJobFinished(s1.url, doneId);
    assert.equal(done.status, 'completed');
    const doneEvents = await fetchAllEvents(s1.url, doneId);
    assert.equal(doneEvents.length, done.lastSeq);
    const doneLog = await (await fetch(`${s1.url}/api/jobs/${doneId}/log`)).text();

    const slowId = await createJob(s1.url, projectId, 'slow');
    await waitFor(
      async () => {
        const evs = await fetchAllEvents(s1.url, slowId);
        return evs.filter((e) => e.event === 'job:log' && String(e.data.message).startsWith('slow ')).length >= 5;
      },
      20_000,
      { interval: 100, what: 'slow job to be building' },
    );

    if (how === 'SIGTERM') {
      const code = await s1.stop('SIGTERM');
      assert.equal(code, 0, 'graceful shutdown exits 0');
    } else {
      s1.kill();
      const { signal } = await s1.exited;
      assert.equal(signal, 'SIGKILL');
    }

    s2 = await startServer({ dataDir });
    const again = await getJob(s2.url, doneId);
    assert.equal(again.status, 'completed');
    assert.equal(again.lastSeq, done.lastSeq);
    assert.deepEqual(again.artifacts, ['result.txt']);
    const againEvents = await fetchAllEvents(s2.url, doneId);
    assert.deepEqual(againEvents, doneEvents, 'finished job history intact after restart');
    const againLog = await (await fetch(`${s2.url}/api/jobs/${doneId}/log`)).text();
    assert.equal(againLog, doneLog, 'finished job log intact after restart');
    const art = await fetch(`${s2.url}/api/jobs/${doneId}/artifacts/result.txt`);
    assert.equal(art.status, 200);
    assert.equal((await art.text()).trim(), 'result');

    const slow = await getJob(s2.url, slowId);
    assert.equal(slow.status, 'failed', `interrupted job is failed after ${how}`);
    const slowEvents = await fetchAllEvents(s2.url, slowId);
    assertSeqSeries(slowEvents.map((e) => e.seq), 1, slow.lastSeq, 'interrupted job seqs');
    const system = slowEvents.filter((e) => e.event === 'job:log' && e.data.stream === 'system');
    assert.ok(
      system.some((e) => /stop|shut ?down|restart|interrupt/i.test(e.data.message)),
      `a system log line says the server stopped: ${JSON.stringify(system.map((e) => e.data.message))}`,
    );
    assert.ok(
      slowEvents.some((e) => e.event === 'job:log' && e.data.message === 'slow 1'),
      'output before the stop is kept',
    );

    // A socket subscriber sees the same stored history, ending in failure.
    const socket = await connect(s2.url);
    const got = collect(socket, JOB_EVENTS);
    const ack = await emitAck(socket, 'subscribe:job', { jobId: slowId, since: 0 });
    assert.equal(ack.ok, true);
    assert.equal(ack.job.status, 'failed');
    await waitFor(() => got.length >= slow.lastSeq, 10_000, { what: 'replay of interrupted job' });
    assertSeqSeries(got.map((e) => e.data.seq), 1, slow.lastSeq, 'replayed seqs of interrupted job');
    closeSocket(socket);

    // The restarted server runs new jobs, with new ids.
    const newId = await createJob(s2.url, projectId, 'quick');
    assert.ok(![doneId, slowId].includes(newId), 'new job id differs from old ones');
    const fresh = await waitForJobFinished(s2.url, newId);
    assert.equal(fresh.status, 'completed');
    const list = await getJson(`${s2.url}/api/jobs?projectId=${encodeURIComponent(projectId)}`);
    assert.deepEqual(new Set(list.body.jobs.map((j) => j.jobId)), new Set([doneId, slowId, newId]));
  } finally {
    s1.kill();
    if (s2) await s2.stop();
  }
}

test('restart after SIGTERM keeps finished jobs and fails the interrupted one', async () => {
  await restartScenario('SIGTERM');
});

test('restart after SIGKILL keeps finished jobs and fails the interrupted one', async () => {
  await restartScenario('SIGKILL');
});

test('REST /events pages with limit and nextSince', async () => {
  const jobId = await createJob(server.url, newProjectId('page'), 'quick');
  const job = await waitForJobFinished(server.url, jobId);
  const N = job.lastSeq;
  assert.ok(N > 12, `quick job has more than 12 events (${N})`);
  const base = `${server.url}/api/jobs/${jobId}/events`;

  const first = await getJson(`${base}?since=0&limit=5`);
  assert.equal(first.status, 200);
  assert.deepEqual(first.body.events.map((e) => e.seq), [1, 2, 3, 4, 5]);
  assert.equal(first.body.nextSince, 5);
  assert.equal(first.body.lastSeq, N);
  for (const e of first.body.events) {
    assert.ok(['job:progress', 'job:log', 'job:completed', 'job:error'].includes(e.event), e.event);
    assert.equal(e.data.seq, e.seq);
    assertEventShape(e.event, e.data, { jobId });
  }
  assert.equal(first.body.events[0].event, 'job:progress');
  assert.equal(first.body.events[0].data.status, 'queued');

  const seen = [];
  let since = 0;
  let pages = 0;
  for (;;) {
    const page = await getJson(`${base}?since=${since}&limit=4`);
    assert.equal(page.status, 200);
    pages++;
    assert.ok(page.body.events.length <= 4, 'limit respected');
    if (page.body.events.length === 0) {
      assert.equal(since, N);
      break;
    }
    seen.push(...page.body.events.map((e) => e.seq));
    assert.equal(page.body.nextSince, page.body.events.at(-1).seq);
    since = page.body.nextSince;
    assert.ok(pages < 100);
  }
  assertSeqSeries(seen, 1, N, 'paged seqs');

  const tail = await getJson(`${base}?since=${N - 2}`);
  assert.deepEqual(tail.body.events.map((e) => e.seq), [N - 1, N]);
  assert.equal(tail.body.events.at(-1).event, 'job:completed');

  const none = await getJson(`${base}?since=${N}`);
  assert.deepEqual(none.body.events, []);
  assert.equal(none.body.nextSince, N);
  assert.equal(none.body.lastSeq, N);

  const unknown = await getJson(`${server.url}/api/jobs/no-such-job/events?since=0`);
  assert.equal(unknown.status, 404);
});

test('REST /log returns every line as text/plain with a Content-Disposition', async () => {
  const jobId = await createJob(server.url, newProjectId('log'), 'quick');
  await waitForJobFinished(server.url, jobId);
  const res = await fetch(`${server.url}/api/jobs/${jobId}/log`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  assert.match(res.headers.get('content-disposition') ?? '', /filename/i);
  const text = await res.text();
  const lines = text.split('\n');
  const expected = ['preparing', 'installing', ...[1, 2, 3, 4, 5].map((i) => `build line ${i}`), 'tests ok', 'warn'];
  let pos = -1;
  for (const want of expected.slice(0, -1)) {
    const i = lines.findIndex((l, k) => k > pos && l.includes(want));
    assert.ok(i > pos, `"${want}" appears in order in the log:\n${text}`);
    pos = i;
  }
  assert.ok(lines.some((l) => l.includes('warn')), 'stderr line is in the log');

  // Every job:log event message is in the text log.
  const events = await fetchAllEvents(server.url, jobId);
  for (const e of events.filter((e) => e.event === 'job:log')) {
    assert.ok(text.includes(e.data.message), `log contains "${e.data.message}"`);
  }

  const unknown = await fetch(`${server.url}/api/jobs/no-such-job/log`);
  await unknown.arrayBuffer();
  assert.equal(unknown.status, 404);
});
