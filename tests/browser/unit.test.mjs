// Unit tests of the dashboard's pure modules (no browser): the ANSI converter, the
// log model (with the sections the log marks), permalinks, the resubscription
// bookkeeping, and the paged log of a log too big for the tab.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { ansiToHtml, parseAnsi, plainText, escapeHtml, color256 } from '../../web/src/ansi.js';
import { JobFeed, JobLog, parseMarker } from '../../web/src/logmodel.js';
import { parsePermalink } from '../../web/src/jobpage.js';
import { PagedLog } from '../../web/src/pagedlog.js';

test('ansi: plain text is escaped and unchanged', () => {
  assert.equal(ansiToHtml('a < b && c > d'), 'a &lt; b &amp;&amp; c &gt; d');
  assert.equal(plainText('hello world'), 'hello world');
  assert.equal(escapeHtml('"quoted"'), '"quoted"');
});

test('ansi: standard, bright, 256 and truecolor colours and attributes', () => {
  assert.equal(ansiToHtml('\x1b[31mred\x1b[0m plain'), '<span class="a-fg1">red</span> plain');
  assert.equal(ansiToHtml('\x1b[1;32mok\x1b[0m'), '<span class="a-fg2 a-b">ok</span>');
  assert.equal(ansiToHtml('\x1b[94mbright\x1b[39m'), '<span class="a-fg12">bright</span>');
  assert.equal(ansiToHtml('\x1b[41;97mbg\x1b[49m'), '<span class="a-fg15 a-bg1">bg</span>');
  assert.equal(ansiToHtml('\x1b[38;5;196mx'), '<span style="color:rgb(255,0,0)">x</span>');
  assert.equal(ansiToHtml('\x1b[38;5;3mx'), '<span class="a-fg3">x</span>');
  assert.equal(ansiToHtml('\x1b[48;2;1;2;3mx'), '<span style="background-color:rgb(1,2,3)">x</span>');
  assert.equal(ansiToHtml('\x1b[3;4;9mx\x1b[23;24;29my'), '<span class="a-i a-u a-s">x</span>y');
  assert.equal(ansiToHtml('\x1b[1mb\x1b[22mn'), '<span class="a-b">b</span>n');
  assert.equal(ansiToHtml('\x1b[mreset'), 'reset');
  assert.equal(color256(232), 'rgb(8,8,8)');
  assert.equal(color256(21), 'rgb(0,0,255)');
});

test('ansi: inverse swaps foreground and background', () => {
  assert.equal(ansiToHtml('\x1b[7mx'), '<span style="color:var(--log-bg);background-color:var(--log-fg)">x</span>');
  assert.equal(ansiToHtml('\x1b[31;7mx'), '<span class="a-bg1" style="color:var(--log-bg)">x</span>');
});

test('ansi: other escapes and control characters are removed', () => {
  assert.equal(plainText('\x1b[2K\x1b[1Gdone'), 'done');
  assert.equal(plainText('\x1b]0;title\x07text'), 'text');
  assert.equal(plainText('\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\'), 'link');
  assert.equal(plainText('bell\x07 back\x08'), 'bell back');
  assert.equal(plainText('tab\there'), 'tab\there');
  assert.equal(plainText('trailing escape \x1b'), 'trailing escape ');
  assert.equal(plainText('\x1b[31'), '');
});

test('ansi: a carriage return keeps what was drawn last', () => {
  assert.equal(plainText('10%\r50%\r100%'), '100%');
  assert.equal(plainText('crlf line\r'), 'crlf line');
});

test('ansi: search ranges are marked across colour changes', () => {
  const html = ansiToHtml('ab\x1b[31mcd\x1b[0mef', [[1, 5]]);
  assert.equal(html, 'a<mark>b</mark><span class="a-fg1"><mark>cd</mark></span><mark>e</mark>f');
  assert.equal(ansiToHtml('x<y', [[1, 2]]), 'x<mark>&lt;</mark>y');
  const segs = parseAnsi('\x1b[32mgreen\x1b[0m');
  assert.deepEqual(segs, [{ text: 'green', cls: 'a-fg2', css: '' }]);
});

const at = (s) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
const progress = (seq, phase, progress, s = seq) => ['job:progress', { jobId: 'j', projectId: 'p', status: phase, phase, progress, message: `${phase} ${progress}`, timestamp: at(s), seq }];
const log = (seq, message, stream = 'stdout') => ['job:log', { jobId: 'j', projectId: 'p', stream, message, timestamp: at(seq), seq }];

test('model: sections follow progress steps, with durations', () => {
  const m = new JobLog('j');
  for (const [n, d] of [
    progress(1, 'queued', 0),
    progress(2, 'preparing', 10),
    log(3, 'Running the prepare step', 'system'),
    log(4, 'hello'),
    progress(5, 'building', 50),
    log(6, 'compiling'),
    log(7, 'warning', 'stderr'),
    progress(9, 'building', 70),
    log(10, 'tests'),
  ]) m.apply(n, d);
  assert.deepEqual(
    m.sections.map((s) => [s.phase, s.progress, s.first, s.count]),
    [['queued', 0, 0, 0], ['preparing', 10, 0, 2], ['building', 50, 2, 2], ['building', 70, 4, 1]],
  );
  assert.equal(m.sectionDuration(1), 3000);
  assert.equal(m.sectionDuration(2), 4000);
  assert.deepEqual(m.lines(3, 4), [{ seq: 7, stream: 'stderr', text: 'warning' }]);
  assert.deepEqual(m.search('in'), [0, 2, 3]);
  assert.deepEqual(m.search('t'), [0, 4]);
  m.apply('job:completed', { status: 'completed', progress: 100, durationMs: 9000, artifacts: [], timestamp: at(12), seq: 11 });
  assert.equal(m.finished, true);
  assert.equal(m.sectionDuration(3), 3000);
  assert.equal(m.phaseDurations().building, 7000);
});

test('feed: duplicates are dropped and resubscription resumes after the last seq', () => {
  const f = new JobFeed('j');
  assert.deepEqual(f.subscribeRequest(), { jobId: 'j', since: 0, batch: true });
  for (const e of [progress(1, 'queued', 0), log(2, 'a'), log(3, 'b')]) assert.equal(f.receive(...e), true);
  assert.deepEqual(f.acknowledge({ ok: true, epoch: 'E1', recovered: true, lastSeq: 3, job: null }), {});
  assert.equal(f.receive(...log(3, 'b')), false, 'seq 3 again is a duplicate');
  f.drain();
  assert.deepEqual(f.subscribeRequest(), { jobId: 'j', since: 3, batch: true, epoch: 'E1' });
  f.receive(...log(4, 'c'));
  f.acknowledge({ ok: true, epoch: 'E1', recovered: true, lastSeq: 4 });
  f.drain();
  assert.deepEqual(f.log.lines().map((l) => l.text), ['a', 'b', 'c']);
  assert.equal(f.stats.duplicates, 1);
});

test('feed: a replay that restarts from seq 1 (recovered: false) rebuilds the log', () => {
  const f = new JobFeed('j');
  f.subscribeRequest();
  for (const e of [progress(1, 'queued', 0), log(2, 'old a'), log(3, 'old b'), log(4, 'old c')]) f.receive(...e);
  f.acknowledge({ ok: true, epoch: 'E1', recovered: true });
  f.drain();
  // reconnect: the server's history was recreated, it replays from seq 1
  assert.deepEqual(f.subscribeRequest(), { jobId: 'j', since: 4, batch: true, epoch: 'E1' });
  for (const e of [progress(1, 'queued', 0), log(2, 'new a')]) f.receive(...e);
  const r = f.acknowledge({ ok: true, epoch: 'E2', recovered: false, reason: 'epoch mismatch' });
  assert.equal(r.rebuilt, true);
  f.receive(...log(3, 'new b'));
  const { reset } = f.drain();
  assert.equal(reset, true);
  assert.deepEqual(f.log.lines().map((l) => l.text), ['new a', 'new b']);
  assert.equal(f.epoch, 'E2');
});

test('feed: recovered: false without a restart keeps the log and says so', () => {
  const f = new JobFeed('j');
  f.subscribeRequest();
  f.receive(...log(1, 'a'));
  f.acknowledge({ ok: true, epoch: 'E1', recovered: true });
  f.subscribeRequest();
  f.receive(...log(7, 'after the dropped middle'));
  const r = f.acknowledge({ ok: true, epoch: 'E1', recovered: false, reason: 'dropped' });
  assert.equal(r.gap, 'dropped');
  f.drain();
  assert.deepEqual(
    f.log.lines().map((l) => [l.seq, l.stream]),
    [[1, 'stdout'], [7, 'stdout'], [0, 'system']],
  );
});

test('feed: events still in flight from an earlier subscription neither double nor drop a line', () => {
  const f = new JobFeed('j');
  f.subscribeRequest();
  for (let s = 1; s <= 10; s++) f.receive(...log(s, `l${s}`));
  f.acknowledge({ ok: true, epoch: 'E1', recovered: true });
  // resubscribe from 10; the old subscription still delivers 9, 12 and 11 around the replay
  f.subscribeRequest();
  for (const s of [9, 12, 11, 13, 12, 14]) f.receive(...log(s, `l${s}`));
  assert.deepEqual(f.acknowledge({ ok: true, epoch: 'E1', recovered: true }), {});
  f.receive(...log(15, 'l15'));
  f.drain();
  assert.deepEqual(f.log.lines().map((l) => l.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  assert.equal(f.stats.gaps, 0);
  assert.equal(f.stats.restarts, 0);
});

test('feed: a subscription given up before its ack keeps what it delivered', () => {
  const f = new JobFeed('j');
  f.subscribeRequest();
  for (let s = 1; s <= 5; s++) f.receive(...log(s, `l${s}`));
  f.acknowledge({ ok: true, epoch: 'E1', recovered: true });
  f.subscribeRequest(); // since 5
  f.receive(...log(7, 'l7'));
  f.receive(...log(6, 'l6'));
  f.abandon(); // e.g. the page catches up through REST instead
  f.receive(...log(8, 'l8')); // still in flight from the abandoned subscription
  f.drain();
  assert.deepEqual(f.log.lines().map((l) => l.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(f.stats.gaps, 0);
});

test('model: a step the pipeline lacks is reported as skipped', () => {
  const m = new JobLog('j');
  for (const [n, d] of [
    progress(1, 'queued', 0),
    progress(2, 'preparing', 10),
    log(3, 'Running the prepare step', 'system'),
    progress(4, 'installing', 30),
    progress(5, 'building', 50),
  ]) m.apply(n, d);
  assert.equal(m.sectionSkipped(1), false);
  assert.equal(m.sectionSkipped(2), true, 'install has no script');
  assert.equal(m.sectionSkipped(3), false, 'still running, not yet known');
  assert.deepEqual([...m.skippedPhases()], ['installing']);
});

test('markers: GitHub, GitLab and Buildkite, plain or wrapped in escape sequences', () => {
  assert.deepEqual(parseMarker('::group::Build it'), { type: 'github-start', title: 'Build it' });
  assert.deepEqual(parseMarker('\x1b[36m::group::Coloured\x1b[0m'), { type: 'github-start', title: 'Coloured' });
  assert.deepEqual(parseMarker('::endgroup::'), { type: 'github-end' });
  assert.deepEqual(parseMarker('section_start:1700000000:tests[collapsed=true]\r\x1b[0KRunning tests'), { type: 'gitlab-start', name: 'tests', title: 'Running tests', collapsed: true, rest: '' });
  assert.deepEqual(parseMarker('\x1b[0Ksection_start:1:deps\r\x1b[0K'), { type: 'gitlab-start', name: 'deps', title: 'deps', collapsed: false, rest: '' });
  assert.deepEqual(parseMarker('\x1b[0Ksection_end:1700000001:tests\r\x1b[0K'), { type: 'gitlab-end', name: 'tests', rest: '' });
  assert.equal(parseMarker('section_end:1:a\r\x1b[0Ksection_start:2:b\r\x1b[0KB').rest, 'section_start:2:b\rB');
  assert.deepEqual(parseMarker('--- Setup'), { type: 'buildkite-start', title: 'Setup', collapsed: true, dim: false });
  assert.deepEqual(parseMarker('+++ Tests'), { type: 'buildkite-start', title: 'Tests', collapsed: false, dim: false });
  assert.deepEqual(parseMarker('~~~ Noise'), { type: 'buildkite-start', title: 'Noise', collapsed: true, dim: true });
  assert.deepEqual(parseMarker('\x1b[1m--- Bold\x1b[0m'), { type: 'buildkite-start', title: 'Bold', collapsed: true, dim: false });
  assert.deepEqual(parseMarker('^^^ +++'), { type: 'buildkite-expand' });
  for (const plain of ['---', 'hello', 'section_start', ' ::group::indented', 'a ::group:: b', '--x']) assert.equal(parseMarker(plain), null, plain);
});

test('model: marked sections nest inside the step, end with their markers, and a failure marks the open ones', () => {
  const log = new JobLog('j');
  let seq = 0;
  const at = (ms) => new Date(1_700_000_000_000 + ms).toISOString();
  const ev = (name, d, ms) => log.apply(name, { ...d, timestamp: at(ms), seq: ++seq });
  const line = (message, ms, stream = 'stdout') => ev('job:log', { stream, message }, ms);
  ev('job:progress', { status: 'building', phase: 'building', progress: 40, message: 'Build' }, 0);
  line('--- Setup', 10);
  line('::group::Fetch', 20);
  line('fetching', 30);
  line('::endgroup::', 130);
  line('+++ Tests', 140);
  line('section_start:1:unit[collapsed=true]\r\x1b[0KUnit', 150);
  line('boom', 400, 'stderr');
  ev('job:error', { phase: 'building', message: 'exit 1' }, 450);
  ev('job:completed', { status: 'failed', progress: 40, durationMs: 460 }, 460);
  const t = log.sections.map((s) => [s.title, s.kind, s.dialect, s.depth, s.parent, s.count, s.end - s.start, s.failed]);
  assert.deepEqual(t, [
    ['Build', 'phase', null, 0, -1, 2, 460, true],
    ['Setup', 'log', 'buildkite', 1, 0, 1, 130, false],
    ['Fetch', 'log', 'github', 2, 1, 1, 110, false],
    ['Tests', 'log', 'buildkite', 1, 0, 1, 320, true],
    ['Unit', 'log', 'gitlab', 2, 3, 1, 310, true],
  ]);
  assert.deepEqual(log.lines().map((l) => l.text), ['fetching', 'boom']);
  assert.deepEqual(log.sec, [2, 4]);
  assert.equal(log.failedSection, 4);
  assert.equal(log.markers, 5);
  assert.equal(log.gapBefore(1), 370);
});

test('permalinks: #L12 and #L12-L20 (either order), nothing else', () => {
  assert.deepEqual(parsePermalink('#L12'), { from: 11, to: 11 });
  assert.deepEqual(parsePermalink('#L120-L140'), { from: 119, to: 139 });
  assert.deepEqual(parsePermalink('#L20-L12'), { from: 11, to: 19 });
  for (const bad of ['', '#', '#L', '#L0', '#/jobs/x', '#Lx', '#L1-', '#section']) assert.equal(parsePermalink(bad), null, bad);
});

/** A server's `/lines` over `total` lines, line n saying "line n", without `gone`. */
function fakeLines(total, gone = new Set()) {
  const calls = [];
  const fetchLines = async (from, limit) => {
    calls.push(from);
    const lines = [];
    for (let n = from; n < from + limit && n <= total; n++) {
      if (!gone.has(n)) lines.push({ line: n, seq: n + 10, data: { seq: n + 10, stream: 'stdout', message: `line ${n}`, timestamp: '2026-01-01T00:00:00.000Z' } });
    }
    return { lines, totalLines: total, lastSeq: total + 10, epoch: 'e' };
  };
  return { fetchLines, calls };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

test('paged log: reads the pages a range needs, once, and keeps at most maxPages', async () => {
  const { fetchLines, calls } = fakeLines(2_000_000, new Set([1_500_001]));
  const log = new PagedLog(fetchLines, { total: 2_000_000, pageLines: 1000, maxPages: 3 });
  assert.equal(log.line(1_500_000), undefined, 'not read yet');
  log.ensure(1_499_990, 1_500_010);
  log.ensure(1_499_990, 1_500_010);
  await settle();
  assert.deepEqual(calls, [1_499_001, 1_500_001]);
  assert.equal(log.line(1_500_000).text, 'line 1500000');
  assert.equal(log.line(1_500_001), null, 'a line the server does not have: not kept');
  assert.equal(log.line(1_500_002).text, 'line 1500002');
  for (const at of [10, 100_000, 1_000_000, 1_999_999]) {
    log.ensure(at, at + 5);
    await settle();
  }
  assert.ok(log.pages.size <= 3, `${log.pages.size} pages`);
  assert.ok(log.held <= 3000, `${log.held} lines held`);
  assert.equal(log.line(1_999_999).text, 'line 1999999');
  assert.equal(log.line(1_500_000), undefined, 'dropped from memory');
});

test('paged log: live lines are numbered on from the snapshot, into the tail page even while it is read', async () => {
  const { fetchLines } = fakeLines(1500);
  const log = new PagedLog(fetchLines, { total: 1500, pageLines: 1000, maxPages: 4 });
  log.ensure(1490, 1500);
  // Arrives before the page's answer: kept, not lost.
  log.append({ seq: 1511, stream: 'stderr', message: 'live 1501', timestamp: '2026-01-01T00:00:01.000Z' });
  await settle();
  assert.equal(log.total, 1501);
  assert.equal(log.line(1500).text, 'line 1500');
  assert.deepEqual(log.line(1501), { seq: 1511, stream: 1, text: 'live 1501', time: Date.parse('2026-01-01T00:00:01.000Z') });
  // A new page starts at the tail.
  for (let n = 1502; n <= 2001; n++) log.append({ seq: n + 10, stream: 'stdout', message: `live ${n}`, timestamp: '2026-01-01T00:00:02.000Z' });
  assert.equal(log.total, 2001);
  assert.equal(log.line(2001).text, 'live 2001');
});
