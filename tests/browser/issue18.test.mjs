// The dashboard's defects and features of issue #18, in a real browser (Debian's
// chromium through playwright-core) against the real server binary: a new
// project's build appears live, an unknown job's page, the narrow list, Start
// for viewers and refused tokens, sections from the log's own markers, permalinks
// on a running job, stall marks, re-run, the project page, and watchers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { PIPELINES, startServer, launchBrowser, newPage, createJob, api, waitFor, jobState, hashOf, pageLines, screenshotPath } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

// `sections`: all three marker dialects, nested, and a failure inside the
// innermost open section. `stall`: six silent seconds. `numbered`: 200 lines over
// about 6 s, for permalinks on a running job. `steady`: 100 lines over about 20 s,
// for clicks on a running job.
const EXTRA = `
[pipelines.sections]
description = "GitHub, GitLab and Buildkite sections, nested; fails inside the inner one"
timeout = "60s"
[pipelines.sections.steps]
prepare = "echo 'preparing'"
build = '''
echo '--- Setup'
echo 'setting up'
echo '::group::Fetch'
echo 'fetching 1'
printf 'section_start:%s:unpack\\r\\033[0KUnpack sources\\n' "$(date +%s)"
echo 'unpacking'
sleep 0.3
printf 'section_end:%s:unpack\\r\\033[0K\\n' "$(date +%s)"
echo '::endgroup::'
echo '+++ Tests'
printf '\\033[1;36m::group::Unit tests\\033[0m\\n'
echo 'test a ok'
printf '\\033[0Ksection_start:%s:integration[collapsed=true]\\r\\033[0KIntegration\\n' "$(date +%s)"
echo 'test b ok'
sleep 0.4
echo 'FAILED: test c expected 2, got 3' >&2
exit 3
'''

[pipelines.stall]
description = "a step that is silent for six seconds"
timeout = "60s"
[pipelines.stall.steps]
build = "echo 'before the pause'; sleep 6; echo 'after the pause'; echo 'right after'"

[pipelines.numbered]
description = "200 numbered lines over about 6 seconds"
timeout = "60s"
[pipelines.numbered.steps]
prepare = "sleep 1"
build = "for i in $(seq 1 200); do echo \\"numbered line $i\\"; sleep 0.03; done"
[pipelines.steady]
description = "100 numbered lines over about 20 seconds"
timeout = "60s"
[pipelines.steady.steps]
build = "for i in $(seq 1 100); do echo \\"steady line $i\\"; sleep 0.2; done"
`;

const SECRET = 'browser-suite-secret-that-is-long-enough!';
function mint(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ exp: Math.floor(Date.now() / 1000) + 600, ...claims });
  const sig = crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startServer({ pipelines: PIPELINES + EXTRA }), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function waitStatus(page, status, timeout = 30_000) {
  await page.waitForSelector(`#job-status.b-${status}`, { timeout });
  await waitFor(async () => (await jobState(page))?.status === status, { timeout, what: `model status ${status}` });
}

async function waitJobEnd(srv, jobId, timeout = 60_000) {
  return waitFor(
    async () => {
      const { body } = await api(srv, `/api/jobs/${jobId}`);
      return ['completed', 'failed', 'cancelled'].includes(body?.status) && body;
    },
    { timeout, what: `job ${jobId} to finish` },
  );
}

/** Whether the element is inside the viewport of the log (fully). */
async function inLogView(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    const vp = document.querySelector('.log-viewport');
    if (!el || !vp) return false;
    const a = el.getBoundingClientRect();
    const b = vp.getBoundingClientRect();
    return a.top >= b.top - 1 && a.bottom <= b.bottom + 1 && a.height > 0;
  }, selector);
}

test('a build of a project the list does not show yet appears within 1 s', async () => {
  const page = await newPage(browser, server);
  await page.goto(`${server.url}/`);
  await page.waitForSelector('#connection[data-state="live"]');
  await page.waitForTimeout(300);
  const project = `fresh-${crypto.randomBytes(4).toString('hex')}`;
  const started = Date.now();
  const jobId = await createJob(server, project, 'stall');
  await page.waitForSelector(`tr[data-job="${jobId}"]`, { timeout: 1000 });
  const seenAfter = Date.now() - started;
  // It is followed from then on: its pipeline and status come from its project room.
  await page.waitForSelector(`tr[data-job="${jobId}"] .badge.b-building`, { timeout: 10_000 });
  // The pipeline comes with the project's snapshot (the subscribe acknowledgement),
  // which may arrive a moment after the room's first event.
  await page.waitForFunction(
    (sel) => document.querySelector(sel)?.textContent.trim() === 'stall',
    `tr[data-job="${jobId}"] td.pipeline`,
    { timeout: 5_000 },
  );
  assert.equal((await page.textContent(`tr[data-job="${jobId}"] td.project`)).trim(), project);
  console.log(`# new project's build shown after ${seenAfter} ms`);
  await page.screenshot({ path: screenshotPath('issue18-list-new-project.png') });
  await api(server, `/api/jobs/${jobId}/cancel`, { method: 'POST' });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('an unknown job: one clear "not found" state, and one request', async () => {
  const page = await newPage(browser, server);
  const requests = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/api/jobs/does-not-exist')) requests.push(u.pathname + u.search);
  });
  await page.goto(`${server.url}/jobs/does-not-exist`);
  await page.waitForSelector('#not-found', { state: 'visible' });
  await page.waitForSelector('#connection[data-state="live"]');
  // Past the page's 3 s fallback for pages without a socket.
  await page.waitForTimeout(3500);
  assert.deepEqual(requests, ['/api/jobs/does-not-exist'], 'one request for the job');
  const text = await page.textContent('#not-found');
  assert.match(text, /Build not found/);
  assert.match(text, /does-not-exist/, 'the whole id is shown');
  for (const sel of ['#job-status', '.log-empty', '#follow-button', '#raw-log', '#cancel-button', '#rerun-button', '#job-progress', '#phases']) {
    assert.equal(await page.isVisible(sel), false, `${sel} is not shown`);
  }
  const body = await page.innerText('body');
  assert.doesNotMatch(body.replace(/\s+/g, ' '), /Waiting for output|Following|queued|Download/);
  assert.equal(await page.title(), 'Build not found · buildcast');
  await page.screenshot({ path: screenshotPath('issue18-not-found.png') });
  assert.deepEqual(page.errors.filter((e) => !/404/.test(e)), []);
  await page.context().close();
});

test('420 px wide: the builds table shows status and progress', async () => {
  const running = await createJob(server, 'narrow', 'numbered');
  const page = await newPage(browser, server, { viewport: { width: 420, height: 800 } });
  await page.goto(`${server.url}/`);
  await page.waitForSelector(`#active-jobs tr[data-job="${running}"] .badge.b-building`, { timeout: 15_000 });
  const boxes = await page.evaluate((id) => {
    const row = document.querySelector(`tr[data-job="${id}"]`);
    const box = (el) => {
      const r = el.getBoundingClientRect();
      return { left: r.left, right: r.right, width: r.width };
    };
    return {
      badge: box(row.querySelector('.badge')),
      bar: box(row.querySelector('.bar')),
      pct: box(row.querySelector('.pct')),
      scrollWidth: document.documentElement.scrollWidth,
    };
  }, running);
  for (const k of ['badge', 'bar', 'pct']) {
    assert.ok(boxes[k].width > 0 && boxes[k].left >= 0 && boxes[k].right <= 420, `${k} is in view: ${JSON.stringify(boxes[k])}`);
  }
  assert.ok(boxes.bar.width >= 40, `the progress bar is visible: ${boxes.bar.width}px`);
  assert.ok(boxes.scrollWidth <= 420, `the page does not scroll sideways: ${boxes.scrollWidth}px`);
  await page.screenshot({ path: screenshotPath('issue18-list-420px.png'), fullPage: true });
  await waitJobEnd(server, running);
  await page.context().close();
});

test('Start is disabled with a refused token and for a viewer token, enabled for a builder', async (t) => {
  let secured;
  try {
    secured = await startServer({ env: { AUTH_MODE: 'jwt', JWT_SECRET: SECRET } });
  } catch (e) {
    t.skip(`this server does not start with AUTH_MODE=jwt: ${e.message.split('\n')[0]}`);
    return;
  }
  const page = await newPage(browser, secured);
  const setToken = async (token) => {
    await page.click('#token-button');
    await page.fill('#token-input', token);
    await page.click('#token-save');
  };
  try {
    await page.goto(`${secured.url}/`);
    await page.waitForSelector('#auth-error', { state: 'visible' });
    await page.waitForSelector('#start-denied', { state: 'visible' });
    assert.equal(await page.isDisabled('#start-button'), true, 'no token: Start is disabled');
    assert.match(await page.textContent('#start-denied'), /refused/);

    await setToken(mint({ sub: 'watcher', role: 'viewer' }));
    await page.waitForSelector('#connection[data-state="live"]');
    await page.waitForSelector('#start-denied:has-text("viewer")');
    assert.equal(await page.isDisabled('#start-button'), true, 'viewer: Start is disabled');
    await page.screenshot({ path: screenshotPath('issue18-viewer.png') });

    await setToken(mint({ sub: 'builder', role: 'builder', projects: ['demo-project'] }));
    await page.waitForSelector('#start-pipeline option[value="colors"]', { state: 'attached' });
    await waitFor(async () => !(await page.isDisabled('#start-button')), { what: 'Start enabled for a builder' });
    assert.equal(await page.isVisible('#start-denied'), false);
    // A project outside the token's list cannot be built.
    await page.fill('#start-project', 'another-project');
    await waitFor(async () => page.isDisabled('#start-button'), { what: 'Start disabled outside the token projects' });
    await page.fill('#start-project', 'demo-project');
    await waitFor(async () => !(await page.isDisabled('#start-button')), { what: 'Start enabled again' });
    assert.deepEqual(page.errors.filter((e) => !/401|Unauthorized/.test(e)), []);
  } finally {
    await page.context().close();
    await secured.stop();
  }
});

test('sections from the log: three dialects nested, durations, the failed one open and in view, no marker lines', async () => {
  const jobId = await createJob(server, 'sections', 'sections');
  await waitJobEnd(server, jobId);
  const page = await newPage(browser, server, { viewport: { width: 1360, height: 620 } });
  await page.goto(`${server.url}/jobs/${jobId}`);
  await waitStatus(page, 'failed');
  await page.waitForTimeout(300);
  const state = await jobState(page);
  const byTitle = Object.fromEntries(state.sections.map((s, k) => [s.title, { ...s, k }]));
  for (const title of ['Setup', 'Fetch', 'Unpack sources', 'Tests', 'Unit tests', 'Integration']) assert.ok(byTitle[title], `section ${title}: ${JSON.stringify(state.sections.map((s) => s.title))}`);
  const { Setup, Fetch, Tests, Integration } = byTitle;
  const unpack = byTitle['Unpack sources'];
  const unit = byTitle['Unit tests'];
  // Nesting: step > Buildkite > GitHub > GitLab.
  assert.deepEqual([Setup.dialect, Fetch.dialect, unpack.dialect], ['buildkite', 'github', 'gitlab']);
  assert.deepEqual([Setup.depth, Fetch.depth, unpack.depth], [1, 2, 3]);
  assert.equal(Fetch.parent, Setup.k);
  assert.equal(unpack.parent, Fetch.k);
  assert.deepEqual([Tests.depth, unit.depth, Integration.depth], [1, 2, 3]);
  assert.equal(unit.parent, Tests.k);
  assert.equal(Integration.parent, unit.k);
  assert.equal(state.sections[Setup.parent].phase, 'building');
  // Durations of their own.
  assert.ok(unpack.durationMs >= 250 && unpack.durationMs < 5000, `Unpack took ${unpack.durationMs} ms`);
  assert.ok(Integration.durationMs >= 350, `Integration took ${Integration.durationMs} ms`);
  // The failure: inside Integration, which is open; the sections that ended are closed.
  assert.equal(state.failedSection, Integration.k);
  assert.ok(Integration.failed && unit.failed && Tests.failed);
  assert.equal(Integration.collapsed, false);
  assert.equal(unit.collapsed, false);
  assert.equal(Setup.collapsed, true, 'a --- group that ended is collapsed');
  // No marker is a line.
  const lines = await pageLines(page);
  for (const l of lines) assert.doesNotMatch(l.text, /::group::|::endgroup::|section_(start|end):|^(---|\+\+\+|~~~) /, `marker shown as a line: ${JSON.stringify(l.text)}`);
  assert.equal(state.markers, 8);
  assert.deepEqual(
    lines.filter((l) => l.stream !== 'system').map((l) => l.text),
    ['preparing', 'setting up', 'fetching 1', 'unpacking', 'test a ok', 'test b ok', 'FAILED: test c expected 2, got 3'],
  );
  // On screen: the nested headers with durations, the failed one, its error line in view.
  const failedLine = lines.findIndex((l) => l.text.startsWith('FAILED'));
  await page.waitForSelector(`.r[data-i="${failedLine}"]`);
  assert.ok(await inLogView(page, `.r[data-i="${failedLine}"]`), 'the error line is in view');
  assert.ok(await inLogView(page, `.r.h[data-s="${Integration.k}"]`), 'the failed section header is in view');
  const header = await page.$(`.r.h[data-s="${Integration.k}"]`);
  assert.match(await header.getAttribute('class'), /\bfailed\b/);
  assert.match(await header.textContent(), /Integration.*\d+(\.\d)? ?(ms|s)/);
  assert.equal(await page.isVisible(`.r.h[data-s="${Setup.k}"]`), true);
  assert.equal(await page.isVisible(`.r.h[data-s="${Fetch.k}"]`), false, 'inside a collapsed section: hidden');
  const indent = await page.evaluate(
    ([a, b]) => document.querySelector(`.r.h[data-s="${b}"] .chev`).getBoundingClientRect().left - document.querySelector(`.r.h[data-s="${a}"] .chev`).getBoundingClientRect().left,
    [Tests.k, Integration.k],
  );
  assert.ok(indent >= 20, `nested headers are indented (${indent}px)`);
  await page.screenshot({ path: screenshotPath('issue18-sections.png') });
  // Toggling: Setup opens to show Fetch (collapsed: it ended), then Fetch shows Unpack.
  await page.click(`.r.h[data-s="${Setup.k}"]`);
  await page.waitForSelector(`.r.h[data-s="${Fetch.k}"]`);
  await page.click(`.r.h[data-s="${Fetch.k}"]`);
  await page.waitForSelector(`.r.h[data-s="${unpack.k}"]`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('#L120-L140 on a running job: highlighted once the lines arrive, and after a reload; shift-click extends', async () => {
  const jobId = await createJob(server, 'links', 'numbered');
  const page = await newPage(browser, server, { viewport: { width: 1360, height: 700 } });
  await page.goto(`${server.url}/jobs/${jobId}#L120-L140`);
  const early = await jobState(page);
  assert.ok(early.status !== 'completed', `the job is still running when the page opens (${early.status})`);
  await waitFor(async () => (await jobState(page))?.selection?.[1] === 139, { timeout: 20_000, what: 'the selection' });
  const state = await jobState(page);
  assert.deepEqual(state.selection, [119, 139]);
  assert.notEqual(state.status, 'completed', 'selected while the job runs');
  const check = async () => {
    await page.waitForSelector('.r.sel[data-i="119"]');
    const sel = await page.$$eval('.r.sel', (els) => els.map((e) => Number(e.dataset.i)));
    assert.deepEqual(sel, Array.from({ length: 21 }, (_, k) => 119 + k));
    assert.ok(await inLogView(page, '.r[data-i="119"]'), 'line 120 is in view');
  };
  await check();
  await page.screenshot({ path: screenshotPath('issue18-permalink.png') });
  await page.reload();
  await check();
  assert.equal(await hashOf(page), '#L120-L140');
  // Clicking a number selects it; shift-click extends the range and the address follows.
  await page.click('.r[data-i="124"] .n');
  assert.equal(await hashOf(page), '#L125');
  await page.click('.r[data-i="129"] .n', { modifiers: ['Shift'] });
  assert.equal(await hashOf(page), '#L125-L130');
  assert.deepEqual((await jobState(page)).selection, [124, 129]);
  await waitJobEnd(server, jobId);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a click on a line number counts when the rows are redrawn between press and release', async () => {
  // While a build runs, the log's rows are redrawn as lines arrive and once a
  // second, so a reader's press and release often land on two different elements.
  const jobId = await createJob(server, 'links', 'steady');
  const page = await newPage(browser, server, { viewport: { width: 1360, height: 700 } });
  // A selection stops following the tail: the rows stay where they are.
  await page.goto(`${server.url}/jobs/${jobId}#L2`);
  await waitFor(async () => (await jobState(page))?.selection?.[0] === 1, { timeout: 20_000, what: 'the selection' });
  await page.waitForSelector('.r[data-i="9"] .n', { timeout: 20_000 });
  // The centre of line i's number as drawn now; the element is kept as
  // window.__drawn (the rows may be redrawn between two calls from here).
  const centre = (i) =>
    page.evaluate((sel) => {
      window.__drawn = document.querySelector(sel);
      const r = window.__drawn.getBoundingClientRect();
      return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
    }, `.r[data-i="${i}"] .n`);
  const pressAndRelease = async (pressOn, releaseOn, modifiers = []) => {
    for (const key of modifiers) await page.keyboard.down(key);
    const at = await centre(pressOn);
    await page.mouse.move(at.x, at.y);
    await page.mouse.down();
    await page.waitForFunction(() => !window.__drawn.isConnected, null, { timeout: 5_000 });
    const to = await centre(releaseOn);
    await page.mouse.move(to.x, to.y);
    await page.mouse.up();
    for (const key of modifiers) await page.keyboard.up(key);
  };
  await pressAndRelease(4, 4);
  assert.equal(await hashOf(page), '#L5', 'the pressed line is selected');
  await pressAndRelease(8, 8, ['Shift']);
  assert.equal(await hashOf(page), '#L5-L9', 'shift extends the selection');
  // Released over another line: not a click on either.
  await pressAndRelease(2, 6);
  assert.equal(await hashOf(page), '#L5-L9', 'a press dragged to another line selects nothing');
  assert.deepEqual((await jobState(page)).selection, [4, 8]);
  const state = await jobState(page);
  assert.notEqual(state.status, 'completed', 'all while the job runs');
  await waitJobEnd(server, jobId);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a step silent for 6 s: a stall mark on the line after the pause', async () => {
  const jobId = await createJob(server, 'stalls', 'stall');
  const page = await newPage(browser, server);
  await page.goto(`${server.url}/jobs/${jobId}`);
  await waitStatus(page, 'completed', 30_000);
  const lines = await pageLines(page);
  const after = lines.findIndex((l) => l.text === 'after the pause');
  const before = lines.findIndex((l) => l.text === 'before the pause');
  await page.waitForSelector(`.r[data-i="${after}"]`);
  const mark = (await page.textContent(`.r[data-i="${after}"] .g`)).trim();
  assert.match(mark, /^\+[67]s$/, `stall mark: ${mark}`);
  assert.match(await page.getAttribute(`.r[data-i="${after}"] .g`, 'title'), /without output/);
  assert.equal((await page.textContent(`.r[data-i="${before}"] .g`)).trim(), '');
  assert.equal((await page.textContent(`.r[data-i="${after + 1}"] .g`)).trim(), '', 'no mark without a pause');
  await page.screenshot({ path: screenshotPath('issue18-stall.png') });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('re-run opens a new job of the same project and pipeline, which completes', async () => {
  const jobId = await createJob(server, 'again', 'colors');
  await waitJobEnd(server, jobId);
  const page = await newPage(browser, server);
  await page.goto(`${server.url}/jobs/${jobId}`);
  await waitStatus(page, 'completed');
  await page.click('#rerun-button');
  await page.waitForURL((u) => u.pathname.startsWith('/jobs/') && !u.pathname.endsWith(jobId));
  const newId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop());
  assert.notEqual(newId, jobId);
  await waitStatus(page, 'completed');
  const view = (await api(server, `/api/jobs/${newId}`)).body;
  assert.deepEqual([view.projectId, view.pipeline], ['again', 'colors']);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the re-run endpoint: builder role and visibility, like POST /api/jobs', async (t) => {
  let secured;
  try {
    secured = await startServer({ pipelines: PIPELINES + EXTRA, env: { AUTH_MODE: 'jwt', JWT_SECRET: SECRET } });
  } catch (e) {
    t.skip(`this server does not start with AUTH_MODE=jwt: ${e.message.split('\n')[0]}`);
    return;
  }
  try {
    const as = (claims) => ({ authorization: `Bearer ${mint(claims)}`, 'content-type': 'application/json' });
    const created = await api(secured, '/api/jobs', { method: 'POST', headers: as({ sub: 'b', role: 'builder' }), body: JSON.stringify({ projectId: 'p1', pipeline: 'stall' }) });
    assert.equal(created.status, 201);
    const id = created.body.jobId;
    const rerun = (claims) => api(secured, `/api/jobs/${id}/rerun`, { method: 'POST', headers: claims ? as(claims) : {} });
    assert.equal((await rerun(null)).status, 401);
    assert.equal((await rerun({ sub: 'v', role: 'viewer' })).status, 403);
    assert.equal((await rerun({ sub: 'o', role: 'builder', projects: ['p2'] })).status, 404, 'another project: as if it did not exist');
    const ok = await rerun({ sub: 'b', role: 'builder', projects: ['p1'] });
    assert.equal(ok.status, 201);
    assert.equal(ok.body.rerunOf, id);
    assert.deepEqual([ok.body.projectId, ok.body.pipeline], ['p1', 'stall']);
    const me = await api(secured, '/api/me', { headers: as({ sub: 'v', role: 'viewer', projects: ['p2', 'p1'] }) });
    assert.deepEqual(me.body, { user: 'v', role: 'viewer', projects: ['p1', 'p2'], canBuild: false });
    for (const j of [id, ok.body.jobId]) await api(secured, `/api/jobs/${j}/cancel`, { method: 'POST', headers: as({ sub: 'b', role: 'builder' }) });
  } finally {
    await secured.stop();
  }
});

test('the project page lists its jobs live from the project room', async () => {
  const project = `proj-${crypto.randomBytes(3).toString('hex')}`;
  const done = await createJob(server, project, 'colors');
  await waitJobEnd(server, done);
  const other = await createJob(server, 'someone-else', 'colors');
  const page = await newPage(browser, server);
  await page.goto(`${server.url}/`);
  await page.waitForSelector(`tr[data-job="${done}"] a.project-link`);
  await page.click(`tr[data-job="${done}"] a.project-link`);
  await page.waitForURL(`**/projects/${project}`);
  await page.waitForSelector(`#recent-jobs tr[data-job="${done}"] .badge.b-completed`);
  assert.equal(await page.isVisible(`tr[data-job="${other}"]`), false, 'only this project');
  assert.equal((await page.textContent('#project-title')).trim(), project);
  // A new job of the project appears and moves live.
  const live = await createJob(server, project, 'numbered');
  await page.waitForSelector(`#active-jobs tr[data-job="${live}"] .badge.b-building`, { timeout: 15_000 });
  await waitFor(async () => Number((await page.textContent(`tr[data-job="${live}"] .pct`)).replace('%', '')) > 0, { what: 'progress' });
  await page.screenshot({ path: screenshotPath('issue18-project.png') });
  await page.waitForSelector(`#recent-jobs tr[data-job="${live}"] .badge.b-completed`, { timeout: 30_000 });
  assert.match(await page.textContent(`tr[data-job="${live}"] td.duration`), /\d/);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the build page shows how many clients watch the job', async () => {
  const jobId = await createJob(server, 'watched', 'colors');
  await waitJobEnd(server, jobId);
  const open = async () => {
    const page = await newPage(browser, server);
    await page.goto(`${server.url}/jobs/${jobId}`);
    await waitStatus(page, 'completed');
    await page.evaluate(() => {
      window.__buildcast.tuning.watchersMs = 200;
      window.__buildcast.app.page.pollWatchers();
    });
    return page;
  };
  const watching = (page) => page.textContent('.meta-value[data-key="watching"]').catch(() => null);
  const a = await open();
  await waitFor(async () => (await watching(a)) === 'just you', { timeout: 5000, what: 'just you' });
  const b = await open();
  await waitFor(async () => (await watching(a)) === '2 clients' && (await watching(b)) === '2 clients', { timeout: 5000, what: '2 clients on both pages' });
  await b.context().close();
  await waitFor(async () => (await watching(a)) === 'just you', { timeout: 5000, what: 'back to just you' });
  // Clients without Socket.IO count too, on a job that is still running (a
  // finished job's stream ends): an SSE stream, and a seed 001 frontend's
  // WebSocket (a browser's own, in another page).
  const running = await createJob(server, 'watched', 'burst');
  const d = await newPage(browser, server);
  await d.goto(`${server.url}/jobs/${running}`);
  await d.evaluate(() => {
    window.__buildcast.tuning.watchersMs = 200;
    window.__buildcast.app.page.pollWatchers();
  });
  await waitFor(async () => (await watching(d)) === 'just you', { timeout: 5000, what: 'just you on the running job' });
  const sse = new AbortController();
  const stream = await fetch(`${server.url}/api/jobs/${encodeURIComponent(running)}/stream`, { signal: sse.signal });
  assert.equal(stream.status, 200);
  await waitFor(async () => (await watching(d)) === '2 clients', { timeout: 5000, what: 'the SSE stream counted' });
  const c = await newPage(browser, server);
  await c.goto(`${server.url}/health`);
  await c.evaluate((url) => {
    window.seedSocket = new WebSocket(url);
  }, `${server.url.replace(/^http/, 'ws')}/api/v1/ws/jobs/${encodeURIComponent(running)}/updates`);
  await waitFor(async () => (await watching(d)) === '3 clients', { timeout: 5000, what: 'the gateway connection counted' });
  await c.context().close();
  sse.abort();
  await waitFor(async () => (await watching(d)) === 'just you', { timeout: 5000, what: 'back to just you once they are gone' });
  assert.equal((await api(server, `/api/jobs/${encodeURIComponent(running)}/cancel`, { method: 'POST' })).status, 202);
  assert.deepEqual(d.errors, []);
  await d.context().close();
  assert.deepEqual(a.errors, []);
  await a.context().close();
});

test('README screenshot: a failed build page with nested sections from its log', { skip: !process.env.UPDATE_SCREENSHOT }, async () => {
  const jobId = await createJob(server, 'web-shop', 'sections');
  await waitJobEnd(server, jobId);
  const page = await newPage(browser, server, { viewport: { width: 1280, height: 760 } });
  await page.goto(`${server.url}/jobs/${jobId}`);
  await waitStatus(page, 'failed');
  await page.waitForTimeout(500);
  const file = screenshotPath('issue18-readme.png');
  await page.screenshot({ path: file });
  copyFileSync(file, path.resolve(here, '../../web/screenshot.png'));
  await page.context().close();
});
