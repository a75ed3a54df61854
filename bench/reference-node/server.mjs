// The reference: the Socket.IO server a Node.js team would write for buildcast's
// job:log use case, with socket.io 4.x defaults. See README.md beside this file.
//
//   PORT=3002 LINE_COMMAND='...' node server.mjs [--port-file PATH]
//
// With --port-file, the port it listens on (PORT=0: any free one) is written to
// PATH once it listens, as buildcast does.
//
// POST /api/jobs {projectId, pipeline} starts a job: `sh -c "$LINE_COMMAND"` as a
// child process, each stdout/stderr line emitted as `job:log` to the room
// `job:<id>`. Clients join that room with `subscribe:job`.

import http from 'node:http';
import { spawn } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import readline from 'node:readline';
import { Server } from 'socket.io';

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT || 3002);
const LINE_COMMAND = process.env.LINE_COMMAND || 'echo hello';
// The only options set: the same values buildcast is run with.
const WEBSOCKET_PATH = process.env.WEBSOCKET_PATH || '/ws';
const PING_INTERVAL = Number(process.env.WEBSOCKET_PING_INTERVAL_MS || 25000);
const PING_TIMEOUT = Number(process.env.WEBSOCKET_PING_TIMEOUT_MS || 20000);

const jobs = new Map();

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const httpServer = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/api/jobs') {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      let parsed;
      try { parsed = JSON.parse(body); } catch { return json(res, 400, { error: 'malformed JSON' }); }
      const { projectId, pipeline } = parsed ?? {};
      if (typeof projectId !== 'string' || typeof pipeline !== 'string') {
        return json(res, 400, { error: 'projectId and pipeline must be strings' });
      }
      const jobId = randomUUID();
      startJob(jobId, projectId);
      json(res, 201, { jobId, projectId, pipeline, status: 'queued' });
    });
    return;
  }
  if (req.method === 'GET' && req.url === '/health') {
    return json(res, 200, { status: 'ok', connected_clients: io.engine.clientsCount, jobs: jobs.size });
  }
  json(res, 404, { error: 'not found' });
});

const io = new Server(httpServer, {
  path: WEBSOCKET_PATH,
  pingInterval: PING_INTERVAL,
  pingTimeout: PING_TIMEOUT,
});

io.on('connection', (socket) => {
  socket.on('subscribe:job', (arg, ack) => {
    // A job id, or { jobId, ... }: other keys (buildcast's since, epoch, batch) are
    // ignored, there is no history to resume from and every line is its own job:log.
    const jobId = arg !== null && typeof arg === 'object' ? arg.jobId : arg;
    if (typeof jobId !== 'string' || jobId.length === 0) {
      if (typeof ack === 'function') ack({ ok: false, error: 'jobId must be a non-empty string' });
      return;
    }
    socket.join(`job:${jobId}`);
    if (typeof ack === 'function') ack({ ok: true });
  });
  socket.on('unsubscribe:job', (jobId, ack) => {
    if (typeof jobId === 'string') socket.leave(`job:${jobId}`);
    if (typeof ack === 'function') ack({ ok: true });
  });
});

function startJob(jobId, projectId) {
  const room = `job:${jobId}`;
  const job = { seq: 0 };
  jobs.set(jobId, job);
  const emit = (event, payload) => {
    job.seq += 1;
    io.to(room).emit(event, { ...payload, timestamp: new Date().toISOString(), seq: job.seq });
  };
  const started = Date.now();
  const child = spawn('sh', ['-c', LINE_COMMAND], { stdio: ['ignore', 'pipe', 'pipe'] });
  let open = 3; // stdout, stderr, exit
  let exitCode = null;
  const done = () => {
    open -= 1;
    if (open > 0) return;
    emit('job:completed', {
      jobId, projectId,
      status: exitCode === 0 ? 'completed' : 'failed',
      success: exitCode === 0,
      progress: 100,
      durationMs: Date.now() - started,
      artifacts: [],
    });
    setTimeout(() => jobs.delete(jobId), 30_000).unref();
  };
  for (const stream of ['stdout', 'stderr']) {
    const lines = readline.createInterface({ input: child[stream], crlfDelay: Infinity });
    lines.on('line', (message) => emit('job:log', { jobId, projectId, stream, message }));
    lines.on('close', done);
  }
  child.on('error', (e) => console.error(`job ${jobId}: ${e.message}`));
  child.on('close', (code) => { exitCode = code; done(); });
}

const portFileAt = process.argv.indexOf('--port-file');
const PORT_FILE = portFileAt > 0 ? process.argv[portFileAt + 1] : undefined;

httpServer.listen(PORT, HOST, () => {
  const { port } = httpServer.address();
  if (PORT_FILE) {
    // Whole or not at all: a temporary file, then a rename.
    writeFileSync(`${PORT_FILE}.tmp`, `${port}\n`);
    renameSync(`${PORT_FILE}.tmp`, PORT_FILE);
  }
  console.log(`reference socket.io ${HOST}:${port} path ${WEBSOCKET_PATH}`);
});

const stop = () => { io.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
