// A socket.io-client in its own process, for adversarial.test.mjs: it follows one
// job, resuming with `since` on every reconnect, and prints one line per event
// (`event <seq> <name>`) and per connection change, so the test can stop and
// resume the whole process (SIGSTOP / SIGCONT) like a frozen browser tab.
//
// usage: node adversarial-client.mjs <url> <jobId>

import { io } from 'socket.io-client';

const [url, jobId] = process.argv.slice(2);
let lastSeen = 0;
let epoch;
const socket = io(url, {
  path: '/ws',
  transports: ['websocket'],
  forceNew: true,
  reconnection: true,
  reconnectionDelay: 100,
  reconnectionDelayMax: 500,
});
const out = (line) => process.stdout.write(`${line}\n`);
socket.on('connect', () => {
  out(`connect ${lastSeen}`);
  socket.emit('subscribe:job', { jobId, since: lastSeen, ...(epoch ? { epoch } : {}) }, (ack) => {
    if (ack?.epoch) epoch = ack.epoch;
    out(`ack ${JSON.stringify({ ok: ack?.ok, lastSeq: ack?.lastSeq, recovered: ack?.recovered, reason: ack?.reason, error: ack?.error })}`);
  });
});
socket.on('disconnect', (reason) => out(`disconnect ${reason}`));
for (const name of ['job:progress', 'job:log', 'job:error', 'job:completed']) {
  socket.on(name, (data) => {
    if (data.jobId !== jobId) return;
    lastSeen = Math.max(lastSeen, data.seq);
    out(`event ${data.seq} ${name}`);
    if (name === 'job:completed') {
      out('done');
      socket.close();
      process.exit(0);
    }
  });
}
