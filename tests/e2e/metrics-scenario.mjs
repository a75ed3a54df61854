// The scripted scenario of tests/metrics.rs (not a test file itself): against a
// server at argv[2] with JWT_SECRET argv[3], it connects three clients over both
// transports, tries a refused token, runs two builds (one fails), resumes with
// `since`, disconnects everyone, and prints as JSON what it saw, from which the
// Rust test derives the exact value of each counter. On the way it is refused
// once at each other door: a gateway and a REST call with a bad token, and (the
// server allows 3 connections per user) a fourth connection of the same user
// over Socket.IO and over a gateway.

import crypto from 'node:crypto';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

const [url, secret] = process.argv.slice(2);
const b64url = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function mint(claims, key = secret) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url({ exp: Math.floor(Date.now() / 1000) + 600, ...claims });
  const sig = crypto.createHmac('sha256', key).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const token = mint({ sub: 'ops', role: 'admin' });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect(transports, auth = { token }) {
  const socket = io(url, { path: '/ws', transports, auth, reconnection: false, forceNew: true });
  const got = {};
  socket.onAny((event) => (got[event] = (got[event] ?? 0) + 1));
  socket.got = got;
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (e) => reject(e));
  });
}

async function api(path, init = {}) {
  const res = await fetch(`${url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
  });
  return res.json();
}

async function finished(jobId) {
  for (let i = 0; i < 600; i++) {
    const job = await api(`/api/jobs/${jobId}`);
    if (['completed', 'failed', 'cancelled'].includes(job.status)) return job;
    await sleep(50);
  }
  throw new Error(`job ${jobId} did not finish`);
}

const c1 = await connect(['websocket']);
const c2 = await connect(['polling']);
const c3 = await connect(['websocket']);
let refused = null;
try {
  await connect(['websocket'], { token: mint({ sub: 'mallory', role: 'admin' }, 'not-the-secret-but-just-as-long-0123') });
} catch (e) {
  refused = e.message;
}

/** How a seed 001 gateway connection ends: its close code and reason. */
function gatewayClose(jobId, bearer) {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/api/v1/ws/jobs/${jobId}/updates?token=${bearer}`);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the gateway did not close the connection')), 10_000);
    ws.on('error', reject);
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
  });
}
const forged = mint({ sub: 'mallory', role: 'admin' }, 'not-the-secret-but-just-as-long-0123');
const gatewayRefused = await gatewayClose('no-such-job', forged);
const restRefused = (await fetch(`${url}/api/jobs`, { headers: { authorization: `Bearer ${forged}` } })).status;
const gatewayFull = await gatewayClose('no-such-job', token);
let socketFull = null;
try {
  await connect(['websocket']);
} catch (e) {
  socketFull = e.message;
}

const project = 'metrics';
const projectAck = await c3.timeout(5_000).emitWithAck('subscribe:project', project);
const ok = (await api('/api/jobs', { method: 'POST', body: JSON.stringify({ projectId: project, pipeline: 'ok' }) })).jobId;
const bad = (await api('/api/jobs', { method: 'POST', body: JSON.stringify({ projectId: project, pipeline: 'bad' }) })).jobId;
const ack1 = await c1.timeout(5_000).emitWithAck('subscribe:job', { jobId: ok });
const ack2 = await c2.timeout(5_000).emitWithAck('subscribe:job', { jobId: bad });
const jobOk = await finished(ok);
const jobBad = await finished(bad);
await sleep(300);

// Resume job `ok` from seq 2: every later event comes from history.
const resume = await c3.timeout(5_000).emitWithAck('subscribe:job', { jobId: ok, since: 2 });
const replayedWanted = jobOk.lastSeq - 2;
for (let i = 0; i < 200 && Object.entries(c3.got).filter(([e]) => e.startsWith('job:')).reduce((n, [, v]) => n + v, 0) < replayedWanted; i++) await sleep(25);

let logBytes = 0;
for (const id of [ok, bad]) {
  const { events } = await api(`/api/jobs/${id}/events?limit=1000`);
  for (const e of events) if (e.event === 'job:log') logBytes += Buffer.byteLength(e.data.message);
}

const counts = { c1: { ...c1.got }, c2: { ...c2.got }, c3: { ...c3.got } };
for (const s of [c1, c2, c3]) s.close();
await sleep(500);
console.log(
  JSON.stringify({
    refused,
    gatewayRefused,
    restRefused,
    gatewayFull,
    socketFull,
    acks: [projectAck.ok, ack1.ok, ack2.ok, resume.ok],
    resume: { recovered: resume.recovered, lastSeq: resume.lastSeq },
    jobs: { ok: { status: jobOk.status, lastSeq: jobOk.lastSeq }, bad: { status: jobBad.status, lastSeq: jobBad.lastSeq } },
    replayedWanted,
    logBytes,
    counts,
  }),
);
process.exit(0);
