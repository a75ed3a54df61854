// The frontends of the four seed systems, as their seeds describe them, for the
// compatibility-gateway suites (tests/e2e/compat-*.test.mjs, and inlined into a
// page by tests/browser/compat.test.mjs). They use the global `WebSocket` (the
// browser's own; in Node the suites install one) and change nothing of what the
// seeds do but the base URL, which the seeds hard-code (ws://localhost:8005,
// :8000) or take from REACT_APP_BACKEND_URL. Each also records the raw frames it
// received (`frames`) and its close events (`closes`) for the assertions.
//
// One deviation: seed 000's class runs `JSON.parse` on every frame and so throws
// on the server's text `pong` (a console error in a browser, as with its original
// server); here the throw is caught and counted (`parseErrors`), because in Node
// an exception in a `ws` listener would end the test process.

/** Seed 000 (VibeAI): the `BuildLogStream` class of BUILD_WEBSOCKET_CLIENT.js. */
export class BuildLogStream {
  constructor(buildId, authToken, base = 'ws://localhost:8005') {
    this.buildId = buildId;
    this.authToken = authToken;
    this.base = base;
    this.handlers = {};
    this.frames = [];
    this.closes = [];
    this.parseErrors = 0;
    this.stopped = false;
  }

  connect() {
    this.ws = new WebSocket(`${this.base}/ws/build/${this.buildId}?token=${this.authToken}`);
    this.ws.onopen = () => this.trigger('open');
    this.ws.onmessage = (event) => {
      this.frames.push(event.data);
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        this.parseErrors += 1;
        return;
      }
      switch (data.type) {
        case 'connected':
          this.trigger('connected', data);
          break;
        case 'log':
          this.trigger('log', data.text);
          break;
        case 'status':
          this.trigger('status', { status: data.status, progress: data.progress });
          break;
        case 'error':
          this.trigger('error', data.error);
          break;
        case 'complete':
          this.trigger('complete', { success: data.success, artifacts: data.artifacts });
          break;
      }
    };
    this.ws.onclose = (event) => {
      this.closes.push({ code: event.code, reason: event.reason });
      this.trigger('disconnected');
      // The published class reconnects after 3 s, whatever the close.
      if (!this.stopped) this.timer = setTimeout(() => this.connect(), 3000);
    };
  }

  on(event, callback) {
    (this.handlers[event] ??= []).push(callback);
  }

  trigger(event, data) {
    for (const callback of this.handlers[event] ?? []) callback(data);
  }

  ping() {
    this.ws.send('ping');
  }

  disconnect() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.ws?.close();
  }
}

/** What seed 000's React example keeps: `logs`, `status` (from CONNECTING), `progress`. */
export function buildMonitor(stream) {
  const view = { logs: [], status: 'CONNECTING', progress: 0, statuses: [], artifacts: null, errors: [] };
  stream.on('log', (text) => view.logs.push(text));
  stream.on('status', ({ status, progress }) => {
    view.status = status;
    view.progress = progress || 0;
    view.statuses.push(`${status}: ${progress}%`);
  });
  stream.on('error', (error) => view.errors.push(error));
  stream.on('complete', ({ success, artifacts }) => {
    view.status = success ? 'SUCCESS' : 'FAILED';
    view.artifacts = artifacts;
  });
  return view;
}

/**
 * Seed 001 (a6hub): `useJobWebSocket` as a class. The text `ping` every 30 s,
 * reconnects (3 s x attempt, at most 5 times) unless the close code is 1000.
 */
export class JobWebSocket {
  constructor({ jobId, token, base = 'ws://localhost:8000', handlers = {} }) {
    this.jobId = jobId;
    this.token = token;
    this.base = base;
    this.handlers = handlers;
    this.frames = [];
    this.closes = [];
    this.isConnected = false;
    this.connectionError = null;
    this.attempts = 0;
    this.enabled = true;
  }

  connect() {
    const ws = new WebSocket(`${this.base}/api/v1/ws/jobs/${this.jobId}/updates?token=${this.token}`);
    this.ws = ws;
    ws.onopen = () => {
      this.isConnected = true;
      this.connectionError = null;
      this.attempts = 0;
      this.pinger = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) ws.send('ping');
      }, 30000);
    };
    ws.onmessage = (event) => {
      this.frames.push(event.data);
      const message = JSON.parse(event.data);
      const data = message.data ?? {};
      const h = this.handlers;
      switch (message.type) {
        case 'status':
          h.onStatusChange?.(data.status);
          break;
        case 'progress':
          h.onProgressUpdate?.(data.progress, data.current_step || '', data.completed_steps || []);
          break;
        case 'log':
          h.onLogUpdate?.(data.log_line);
          break;
        case 'step':
          h.onStepChange?.(data.step_name, data.step_label || data.step_name);
          break;
        case 'complete':
          h.onComplete?.(data.status, data.message);
          break;
        case 'error':
          h.onError?.(data.error_message);
          break;
        case 'pong':
        case 'connected':
          break;
      }
    };
    ws.onerror = () => {
      this.connectionError = 'WebSocket connection error';
    };
    ws.onclose = (event) => {
      this.isConnected = false;
      clearInterval(this.pinger);
      this.closes.push({ code: event.code, reason: event.reason });
      if (this.enabled && event.code !== 1000 && this.attempts < 5) {
        this.attempts += 1;
        this.timer = setTimeout(() => this.connect(), 3000 * this.attempts);
      }
    };
  }

  disconnect() {
    this.enabled = false;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    this.ws?.close(1000);
  }
}

/** What seed 001's build page keeps from the hook's callbacks. */
export function buildPage(token, jobId, base) {
  const page = { logs: '', progress: 0, currentStep: '', status: null, steps: [], completes: [], errors: [], statuses: [] };
  const hook = new JobWebSocket({
    jobId,
    token,
    base,
    handlers: {
      onStatusChange: (status) => {
        page.status = status;
        page.statuses.push(status);
      },
      onProgressUpdate: (progress, step) => {
        page.progress = progress;
        page.currentStep = step;
      },
      onLogUpdate: (line) => (page.logs += line),
      onStepChange: (name, label) => page.steps.push([name, label]),
      onComplete: (status, message) => {
        page.status = status;
        page.completes.push([status, message]);
      },
      onError: (message) => page.errors.push(message),
    },
  });
  return { page, hook };
}

/**
 * Seed 003 (reqpm): `useWebSocket(buildJobId, enabled)`. Sends nothing, never
 * pings, never reconnects; each message only makes the page refetch its queries.
 */
export class BuildJobSocket {
  constructor(buildJobId, base = 'ws://localhost:8000') {
    this.frames = [];
    this.closes = [];
    this.refetches = 0;
    this.ws = new WebSocket(`${base}/ws/builds/${buildJobId}/`);
    this.ws.onmessage = (event) => {
      this.frames.push(event.data);
      const message = JSON.parse(event.data);
      if (message.type === 'build_update' || message.type === 'queue_update') this.refetches += 1;
    };
    this.ws.onclose = (event) => this.closes.push({ code: event.code, reason: event.reason });
  }

  close() {
    this.ws.close();
  }
}

/**
 * Seed 004 (project generator): the singleton `websocket.js` service. URL from
 * REACT_APP_BACKEND_URL (http→ws), a heartbeat ping every 30 s, at most 5
 * reconnections with backoff.
 */
export class ProjectSocketService {
  constructor(backendUrl) {
    this.backendUrl = backendUrl;
    this.listeners = {};
    this.frames = [];
    this.closes = [];
    this.attempts = 0;
    this.wanted = false;
  }

  connect(projectId, onMessage, onError, onConnectionChange) {
    this.projectId = projectId;
    this.callbacks = { onMessage, onError, onConnectionChange };
    this.wanted = true;
    const url = `${this.backendUrl.replace(/^http/, 'ws')}/api/ws/projects/${projectId}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempts = 0;
      onConnectionChange?.(true);
      this.heartbeat = setInterval(() => this.send({ type: 'ping' }), 30000);
    };
    ws.onmessage = (event) => {
      this.frames.push(event.data);
      const message = JSON.parse(event.data);
      onMessage?.(message);
      for (const callback of this.listeners[message.type] ?? []) callback(message);
    };
    ws.onerror = (error) => onError?.(error);
    ws.onclose = (event) => {
      clearInterval(this.heartbeat);
      this.closes.push({ code: event.code, reason: event.reason });
      onConnectionChange?.(false);
      if (this.wanted && this.attempts < 5) {
        const delay = Math.min(2000 * 1.5 ** this.attempts, 30000);
        this.attempts += 1;
        this.timer = setTimeout(() => this.connect(projectId, onMessage, onError, onConnectionChange), delay);
      }
    };
  }

  on(type, callback) {
    (this.listeners[type] ??= []).push(callback);
  }

  off(type, callback) {
    this.listeners[type] = (this.listeners[type] ?? []).filter((c) => c !== callback);
  }

  send(data) {
    if (this.isConnected()) this.ws.send(JSON.stringify(data));
  }

  isConnected() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  disconnect() {
    this.wanted = false;
    clearTimeout(this.timer);
    clearInterval(this.heartbeat);
    this.ws?.close();
  }
}
