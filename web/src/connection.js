// The page's one Socket.IO connection: its state for the indicator (Live /
// Reconnecting / Offline), the token as `auth`, and the routing of job and project
// events to whoever follows them. Rooms do not survive a reconnect, so pages
// register what to (re)subscribe on every connect.

import { io } from 'socket.io-client';
import { getToken } from './api.js';

const JOB_EVENTS = ['job:progress', 'job:log', 'job:error', 'job:completed'];
const PROJECT_EVENTS = ['project:progress', 'project:completed'];

export class Connection {
  constructor() {
    /** 'connecting' | 'live' | 'reconnecting' | 'offline' */
    this.state = 'connecting';
    /** The last connect error's message (e.g. "Authentication error"), or null. */
    this.error = null;
    this.stateListeners = new Set();
    this.connectHooks = new Set();
    this.jobs = new Map(); // jobId -> (event, data) => void
    this.projectListeners = new Set();
    this.createdListeners = new Set();
    this.history = []; // state changes, for tests and debugging

    const socket = io({
      path: '/ws',
      transports: ['websocket', 'polling'],
      // Called at every (re)connect, so a new token is used at once.
      auth: (cb) => {
        const token = getToken();
        cb(token ? { token } : undefined);
      },
      reconnectionDelay: 500,
      reconnectionDelayMax: 3000,
    });
    this.socket = socket;

    socket.on('connect', () => {
      this.error = null;
      this.setState('live');
      for (const hook of this.connectHooks) hook();
    });
    socket.on('disconnect', (reason) => {
      if (reason === 'io server disconnect') {
        // The server closed this connection (e.g. it is restarting): socket.io does
        // not retry by itself then. Try again; a refusal ends in connect_error.
        clearTimeout(this.retry);
        this.retry = setTimeout(() => {
          if (!socket.connected && !socket.active) socket.connect();
        }, 500 + Math.random() * 500);
        this.setState('reconnecting', reason);
        return;
      }
      this.setState(socket.active ? 'reconnecting' : 'offline', reason);
    });
    socket.on('connect_error', (err) => {
      this.error = err?.message ?? String(err);
      // A refusal by the server (authentication) is final: socket.active is false.
      this.setState(socket.active ? (this.state === 'connecting' ? 'connecting' : 'reconnecting') : 'offline', this.error);
    });
    for (const name of JOB_EVENTS) {
      socket.on(name, (d) => {
        const fn = d && this.jobs.get(d.jobId);
        if (fn) fn(name, d);
      });
    }
    // Pages subscribe with `batch: true`: log lines come as runs, each line as job:log.
    socket.on('job:logs', (lines) => {
      if (!Array.isArray(lines)) return;
      for (const d of lines) {
        const fn = d && this.jobs.get(d.jobId);
        if (fn) fn('job:log', d);
      }
    });
    for (const name of PROJECT_EVENTS) {
      socket.on(name, (d) => {
        for (const fn of this.projectListeners) fn(name, d);
      });
    }
    // `subscribe:jobs`: a new job of any project this token may see.
    socket.on('jobs:created', (d) => {
      if (d && d.jobId) for (const fn of this.createdListeners) fn(d);
    });
  }

  setState(state, detail) {
    const changed = state !== this.state;
    this.state = state;
    if (changed) this.history.push({ state, at: Date.now(), detail: detail ?? null });
    for (const fn of this.stateListeners) fn(state, this.error);
  }

  onState(fn) {
    this.stateListeners.add(fn);
    fn(this.state, this.error);
    return () => this.stateListeners.delete(fn);
  }

  /** Runs `fn` now if connected, and on every later (re)connect. */
  onConnect(fn) {
    this.connectHooks.add(fn);
    if (this.socket.connected) fn();
    return () => this.connectHooks.delete(fn);
  }

  /** Routes job events of `jobId` to `fn`. */
  routeJob(jobId, fn) {
    this.jobs.set(jobId, fn);
    return () => {
      if (this.jobs.get(jobId) === fn) this.jobs.delete(jobId);
    };
  }

  onProject(fn) {
    this.projectListeners.add(fn);
    return () => this.projectListeners.delete(fn);
  }

  /** Calls `fn` with the first event of every new job (after `subscribe:jobs`). */
  onCreated(fn) {
    this.createdListeners.add(fn);
    return () => this.createdListeners.delete(fn);
  }

  /** Emits with an acknowledgement, if connected (else the next connect does it). */
  request(event, payload) {
    return new Promise((resolve) => {
      if (!this.socket.connected) return resolve({ ok: false, error: 'not connected' });
      this.socket.emit(event, payload, (ack) => resolve(ack));
    });
  }

  emit(event, payload) {
    if (this.socket.connected) this.socket.emit(event, payload);
  }

  /** Reconnects, e.g. with a new token. */
  reconnect() {
    clearTimeout(this.retry);
    this.socket.disconnect();
    this.setState('connecting');
    this.socket.connect();
  }
}
