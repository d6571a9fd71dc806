// The console end to end in headless Chromium, with real psql sessions through the gateway.
// Run by the Rust test `browser::console_end_to_end`, which starts PostgreSQL and the gateway
// and passes everything in the environment:
//   POSTERN_URL, CHROMIUM, PSQL, PGHOST, PGPORT, TARGET, SCREENSHOTS,
//   AGENT_TOKEN (agent-7), DBA_TOKEN (dana, approver), ADMIN_TOKEN (olga), AUDITOR_TOKEN (sam),
//   PLAIN_TOKEN (bob).
// Prints one line per step; exits non-zero at the first failure.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import path from 'node:path';

const env = process.env;
const URL_ = env.POSTERN_URL;
const SHOTS = env.SCREENSHOTS;
const T = 20000;

const children = [];
let stepNo = 0;
const step = (what) => console.log(`step ${++stepNo}: ${what}`);

// A psql process through the gateway. `input`: statements for stdin (kept open when `keepOpen`).
function psql(user, token, args, { keepOpen = false } = {}) {
  const child = spawn(env.PSQL, ['-X', '-v', 'ON_ERROR_STOP=1', ...args], {
    env: { ...env, PGUSER: user, PGPASSWORD: token, PGDATABASE: env.TARGET, PGSSLMODE: 'prefer' },
    stdio: [keepOpen ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  children.push(child);
  const done = new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
  return { child, done, out: () => stdout, err: () => stderr };
}

async function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); });
  try { return await Promise.race([promise, timeout]); } finally { clearTimeout(timer); }
}

async function shot(page, name, fullPage = false) {
  await page.evaluate(() => { document.getElementById('toast').hidden = true; });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage });
}

async function login(page, token) {
  await page.goto(`${URL_}/console/#/login`);
  await page.fill('#token', token);
  await page.click('form button[type=submit]');
  await page.waitForSelector('[data-testid=sessions]', { timeout: T });
}

async function api(page, method, p, body) {
  // Through the page: the cookie and the CSRF header, as the console sends them.
  return page.evaluate(async ([method, p, body]) => {
    const me = await (await fetch('/api/v1/me')).json();
    const r = await fetch(p, { method, headers: { 'Content-Type': 'application/json', 'X-Postern-CSRF': me.csrf_token }, body: JSON.stringify(body) });
    return { status: r.status, body: await r.json() };
  }, [method, p, body]);
}

const browser = await chromium.launch({ executablePath: env.CHROMIUM, headless: true, args: ['--no-sandbox'] });
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await context.newPage();
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(String(e)));
page.setDefaultTimeout(T);

try {
  step('a wrong token is refused on the login page');
  await page.goto(`${URL_}/console/`);
  await page.waitForSelector('#token');
  await page.fill('#token', 'not-a-token');
  await page.click('form button[type=submit]');
  await page.waitForSelector('#login-error:has-text("Login refused")');
  await page.fill('#token', '');
  await shot(page, 'login');

  step('the approver logs in by pasting a token');
  await login(page, env.DBA_TOKEN);
  assert.match(await page.textContent('[data-testid=who]'), /dana \(approver\)/);

  step('an agent statement held for approval shows up in the open queue without a reload');
  await page.click('a[data-nav=approvals]');
  await page.waitForSelector('text=Nothing is waiting for a decision.');
  await page.evaluate(() => { window.__sameDocument = true; });
  const lineage = '/* postern-lineage {"causal_id":"call-42","tool":"query","intent":"check the e-mail addresses of the first customers"} */';
  const first = psql('agent-7', env.AGENT_TOKEN, [
    '-c', `${lineage} SELECT id, email FROM customers ORDER BY id LIMIT 3`,
    '-c', 'UPDATE orders SET quantity = 55 WHERE id = 1000',
  ]);
  const card = await page.waitForSelector('[data-testid=approval]');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was reloaded');
  assert.match(await card.textContent(), /UPDATE orders SET quantity = 55/);
  assert.match(await card.textContent(), /agent-7 \(agent\)/);
  assert.match(await card.textContent(), /agent-writes-need-approval/);
  assert.ok(await card.$('pre.sql .kw'), 'the statement is highlighted');
  const sessionOfFirst = await card.$eval('a[href^="#/sessions/"]', (a) => a.getAttribute('href').slice('#/sessions/'.length));
  await shot(page, 'approvals');

  step('the approver approves in the browser and the psql statement completes');
  await card.$eval('[data-testid=approve]', (b) => b.click());
  const firstDone = await within(T, first.done, 'psql after approval');
  assert.equal(firstDone.code, 0, `psql failed: ${firstDone.stderr}`);
  assert.match(firstDone.stdout, /UPDATE 1/);
  await page.waitForSelector('text=Nothing is waiting for a decision.');
  await page.waitForSelector('td:has-text("approved")');

  step('a denied statement gives the psql client the reason');
  const second = psql('agent-7', env.AGENT_TOKEN, ['-c', 'DELETE FROM orders WHERE id = 1001']);
  const card2 = await page.waitForSelector('[data-testid=approval]');
  const id2 = await card2.getAttribute('data-approval-id');
  await card2.$eval('input[name=reason]', (i) => { i.value = 'not during the sale'; });
  await card2.$eval('[data-testid=deny]', (b) => b.click());
  const secondDone = await within(T, second.done, 'psql after denial');
  assert.notEqual(secondDone.code, 0);
  assert.match(secondDone.stderr, /not during the sale/);
  assert.match(secondDone.stderr, new RegExp(id2));
  assert.match(secondDone.stderr, /was denied by dana/);

  step('the replay page shows the statements, the masked cells, the intent link and a verified badge');
  await page.goto(`${URL_}/console/#/sessions/${sessionOfFirst}`);
  await page.waitForSelector('[data-testid=verification][data-status=verified]');
  await page.waitForFunction(() =>
    (document.querySelector('[data-testid=timeline]')?.textContent || '').includes('FROM customers'));
  const timeline = await page.textContent('[data-testid=timeline]');
  assert.match(timeline, /SELECT id, email FROM customers/);
  assert.doesNotMatch(timeline, /customer1@example\.com/, 'the recording holds masked values only');
  assert.match(timeline, /UPDATE orders SET quantity = 55/);
  assert.match(timeline, /approved by dana/);
  const masked = await page.$$('[data-testid=masked-cell]');
  assert.equal(masked.length, 3, 'three masked cells');
  await page.click('[data-testid=causal-link]');
  await page.waitForSelector('#intent-call-42.flash');
  assert.match(await page.textContent('#intent-call-42'), /check the e-mail addresses/);
  step('play and step controls walk the timeline');
  await page.click('[data-testid=step]');
  assert.match(await page.textContent('[data-testid=position]'), /^1 of \d+ events shown/);
  await page.click('[data-testid=step]');
  assert.match(await page.textContent('[data-testid=position]'), /^2 of/);
  await page.selectOption('#speed', '10');
  await page.click('[data-testid=play]');
  await page.waitForFunction(() => /^(\d+) of \1 events shown/.test(document.querySelector('[data-testid=position]').textContent), null, { timeout: T });
  await page.evaluate(() => { window.scrollTo(0, 0); document.querySelector('.flash')?.classList.remove('flash'); });
  assert.match(await page.textContent('.meta'), /Approvals\s*APR-/);
  await shot(page, 'replay', true);

  step('a user who is not an approver cannot approve, in the UI or through the API');
  const third = psql('agent-7', env.AGENT_TOKEN, ['-c', 'UPDATE orders SET quantity = 66 WHERE id = 1000']);
  await page.click('#logout');
  await page.waitForSelector('#token');
  await login(page, env.AUDITOR_TOKEN);
  await page.click('a[data-nav=approvals]');
  const card3 = await page.waitForSelector('[data-testid=approval]');
  const id3 = await card3.getAttribute('data-approval-id');
  assert.equal(await card3.$('[data-testid=approve]'), null, 'no approve button for a non-approver');
  assert.match(await card3.textContent(), /Only members of dba may decide this/);
  const refused = await api(page, 'POST', `/api/v1/approvals/${id3}/approve`, {});
  assert.equal(refused.status, 403, JSON.stringify(refused));
  const noCsrf = await page.evaluate(async (id) => (await fetch(`/api/v1/approvals/${id}/approve`, { method: 'POST' })).status, id3);
  assert.equal(noCsrf, 403, 'a cookie request without the CSRF header is refused');
  const plain = await fetch(`${URL_}/api/v1/approvals/${id3}/approve`, { method: 'POST', headers: { Authorization: `Bearer ${env.PLAIN_TOKEN}` } });
  assert.equal(plain.status, 403);
  third.child.kill();
  await within(T, third.done, 'psql killed');

  step('the audit log page lists the decisions');
  await page.click('a[data-nav=audit]');
  await page.waitForSelector('[data-testid=audit] td:has-text("approval_decided")');
  await shot(page, 'audit');

  step('an admin watches a live session grow and terminates it; psql reports the termination');
  await page.click('#logout');
  await page.waitForSelector('#token');
  await login(page, env.ADMIN_TOKEN);
  const live = psql('bob', env.PLAIN_TOKEN, [], { keepOpen: true });
  live.child.stdin.write("SELECT 'first tick' AS tick;\n");
  const row = await page.waitForSelector('[data-testid=session-row][data-subject=bob][data-live=true]');
  await shot(page, 'sessions');
  await row.$eval('a', (a) => a.click());
  await page.waitForSelector('[data-testid=live]');
  await page.waitForSelector('[data-testid=timeline] >> text=first tick');
  live.child.stdin.write("SELECT 'second tick' AS tick;\n");
  await page.waitForSelector('[data-testid=timeline] >> text=second tick');
  await shot(page, 'live-session');
  await page.fill('#terminate-reason', 'maintenance window');
  await page.click('[data-testid=terminate]');
  await page.waitForSelector('[data-testid=timeline] >> text=terminated by olga: maintenance window');
  await page.waitForSelector('[data-testid=verification][data-status=verified]');
  live.child.stdin.write("SELECT 'after' AS tick;\n");
  live.child.stdin.end();
  const liveDone = await within(T, live.done, 'psql after termination');
  assert.match(liveDone.stderr, /terminated by olga: maintenance window/);
  assert.doesNotMatch(liveDone.stdout, /after/);

  assert.deepEqual(consoleErrors.filter((e) => !/status of (401|403)/.test(e)), [], 'no errors in the browser console');
  console.log('all steps passed');
} catch (e) {
  console.error(`FAILED at step ${stepNo}: ${e.stack || e}`);
  try { await shot(page, `failure-step-${stepNo}`); } catch (_) { /* ignore */ }
  process.exitCode = 1;
} finally {
  for (const child of children) if (child.exitCode === null) child.kill();
  await browser.close();
}
process.exit(process.exitCode || 0);
