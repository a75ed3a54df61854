// No silent stop: a socket whose client stops reading is either delivered to
// again once it reads, or disconnected for real; never left connected and deaf.
// Each client here is a process of its own (fixtures/follower.mjs), frozen with
// SIGSTOP while the server's queue for it fills, then thawed with SIGCONT.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  startServer,
  waitFor,
  sleep,
  createJob,
  getJob,
  getJson,
  waitForJobFinished,
  assertSeqSeries,
  projectId as newProjectId,
  DEFAULT_PIPELINES,
} from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const PIPELINES = `${DEFAULT_PIPELINES}
[pipelines.flood]
description = "a pause, then 6000 lines of 4 KB (24 MB, more than loopback socket buffers hold)"
[pipelines.flood.steps]
prepare = "sleep 1"
build = '''seq 1 6000 | awk '{ printf "flood %d %04000d\\n", $1, 0 }' '''
`;

// A tiny queue so it fills at once, and a heartbeat long enough that Engine.IO
// does not end the frozen client by itself: what happens then is buildcast's doing.
const ENV = {
  WEBSOCKET_MAX_BUFFER_SIZE: '4',
  WEBSOCKET_PING_INTERVAL_MS: '60000',
  WEBSOCKET_PING_TIMEOUT_MS: '60000',
};

const followers = new Set();
after(() => {
  for (const f of followers) f.kill();
});

function follow(url, jobId, projectId) {
  const args = [path.join(here, 'fixtures/follower.mjs'), url, jobId];
  if (projectId) args.push(projectId);
  const proc = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const events = [];
  let partial = '';
  proc.stdout.on('data', (chunk) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop();
    for (const line of lines) if (line) events.push(JSON.parse(line));
  });
  const follower = {
    events,
    of: (name) => events.filter((e) => e.event === name),
    freeze: () => proc.kill('SIGSTOP'),
    thaw: () => proc.kill('SIGCONT'),
    kill: () => {
      proc.kill('SIGCONT');
      proc.kill('SIGKILL');
      followers.delete(follower);
    },
  };
  followers.add(follower);
  return follower;
}

// Every seq of the job, each with one content, whatever reconnects happened.
async function assertWholeJob(url, follower, jobId) {
  const job = await getJob(url, jobId);
  const bySeq = new Map();
  for (const e of follower.events) {
    if (!e.event.startsWith('job:') || e.data?.jobId !== jobId) continue;
    const seen = bySeq.get(e.data.seq);
    if (seen !== undefined) assert.deepEqual(e.data, seen, `seq ${e.data.seq} came twice with different contents`);
    bySeq.set(e.data.seq, e.data);
  }
  assertSeqSeries([...bySeq.keys()].sort((a, b) => a - b), 1, job.lastSeq, 'seqs the client received');
}

test('a client frozen longer than 30 s while being caught up gets every event once it reads again', async () => {
  const server = await startServer({ env: ENV, pipelines: PIPELINES });
  try {
    const jobId = await createJob(server.url, newProjectId('stall'), 'flood');
    const client = follow(server.url, jobId);
    await waitFor(() => client.of('job:log').length > 0, 15_000, { what: 'the first lines' });
    client.freeze();
    await waitForJobFinished(server.url, jobId, 60_000);
    await sleep(34_000);
    client.thaw();
    await waitFor(() => client.of('job:completed').length > 0, 90_000, { what: 'job:completed after the thaw' });
    await assertWholeJob(server.url, client, jobId);
    assert.deepEqual(client.of('disconnect'), [], 'it stayed connected: it never had to resume');
    const health = await getJson(`${server.url}/health`);
    assert.ok(health.body.delivery.lagged_catch_ups > 0, 'its queue filled');
    client.kill();
  } finally {
    await server.stop();
  }
});

test('a project subscriber whose queue is full still gets every project event', async () => {
  const server = await startServer({ env: ENV, pipelines: PIPELINES });
  try {
    const project = newProjectId('overflow');
    const flood = await createJob(server.url, project, 'flood');
    const client = follow(server.url, flood, project);
    await waitFor(() => client.of('job:log').length > 0, 15_000, { what: 'the first lines' });
    client.freeze();
    // The flood fills the kernel's buffers, then the socket's queue. Quick jobs
    // of the same project run until project events have found that queue full
    // (the flood's own may already have): at least one runs, so that project
    // events go on arriving behind the held ones.
    await waitForJobFinished(server.url, flood, 60_000);
    const quicks = [];
    const waited = async () => {
      const { delivery } = (await getJson(`${server.url}/health`)).body;
      return delivery.project_catch_ups > 0 || delivery.dropped_project_sockets > 0;
    };
    do {
      await sleep(1_000);
      const quick = await createJob(server.url, project, 'quick');
      quicks.push(quick);
      await waitForJobFinished(server.url, quick, 30_000);
    } while (quicks.length < 10 && !(await waited()));
    assert.ok(await waited(), 'a project event met a full queue');
    await sleep(3_000);
    client.thaw();
    const jobs = [flood, ...quicks];
    await waitFor(
      () => new Set(client.of('project:completed').map((e) => e.data.jobId)).size === jobs.length,
      60_000,
      { what: 'project:completed of every job' },
    );
    // Project progress comes in the order it was recorded, job by job, each job's
    // to its end.
    const progressOf = (id) => client.of('project:progress').filter((e) => e.data.jobId === id).map((e) => e.data.progress);
    for (const id of jobs) {
      const progress = progressOf(id);
      assert.deepEqual(progress, [...progress].sort((a, b) => a - b), `progress of ${id} in order`);
      assert.ok(progress.includes(100) || progress.includes(90), `progress of ${id}: ${progress}`);
    }
    await waitFor(() => client.of('job:completed').length > 0, 60_000, { what: 'the flood job to the end' });
    await assertWholeJob(server.url, client, flood);
    const health = await getJson(`${server.url}/health`);
    assert.equal(health.body.delivery.dropped_project_sockets, 0);
    client.kill();
  } finally {
    await server.stop();
  }
});
