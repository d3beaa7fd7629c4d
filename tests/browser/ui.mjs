// Drives Debian's chromium against the operator page (called by test_ui.c, which planted the
// in-doubt branch XA_UI_XID with the journal's decision "abort"). Exits non-zero, naming the step,
// when the page does not show or do what it must. Screenshots: XA_UI_SHOTS-*.png.
import { appendFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const url = process.env.XA_UI_URL, token = process.env.XA_UI_TOKEN, xid = process.env.XA_UI_XID;
const shots = process.env.XA_UI_SHOTS || 'browser-ui';
const STEP_MS = 15000;

let step = 'start';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // The machine's network is closed: keep Chromium from reaching out (and failing) at start.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const deadline = setTimeout(() => {
  console.error(`ui.mjs: no end within 50 s (at: ${step})`);
  process.exit(1);
}, 50000);
const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
// The browser logs every 401 and 409 the test provokes on purpose; anything else is a problem.
page.on('console', (m) => {
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource'))
    problems.push(`console: ${m.text()}`);
});
page.on('dialog', (d) => d.accept());
// The API replies the page receives are validated against docs/openapi.yaml like the integration
// tests' (XA_API_REPLIES, tests/openapi/check.mjs); the page's own files are not API replies.
const recorded = [];
page.on('response', (r) => {
  const u = new URL(r.url());
  if (process.env.XA_API_REPLIES && !u.pathname.startsWith('/ui'))
    recorded.push(Promise.race([
      r.text().then((body) => record(r.request().method(), u.pathname + u.search, r.status(), body)),
      new Promise((done) => setTimeout(done, 3000)), // a body the page no longer holds
    ]).catch(() => {}));
});
function record(method, path, status, body) {
  if (process.env.XA_API_REPLIES)
    appendFileSync(process.env.XA_API_REPLIES, JSON.stringify({ test: 'ui.mjs', method, path, status, body }) + '\n');
}

// Read-only transactions, some aborted by their expect_rows, so that the charts have something
// to show: spread over 6 s, three of the page's samples.
async function traffic() {
  const base = new URL(url).origin;
  for (let i = 0; i < 24; i++) {
    const rows = i % 4 === 3 ? 2 : 1; // every fourth one expects a row too many: aborted
    const body = JSON.stringify({ branches: [
      { participant: 'payment', statements: [{ sql: 'SELECT balance FROM account WHERE user_id = $1', params: [7], expect_rows: rows }] },
      { participant: 'order', statements: [{ sql: 'SELECT status FROM orders WHERE id = ?', params: [1001], expect_rows: 1 }] }] });
    const r = await fetch(`${base}/v1/transactions`, { method: 'POST', body,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' } });
    const text = await r.text();
    record('POST', '/v1/transactions', r.status, text);
    if (r.status !== (rows === 1 ? 200 : 409)) throw new Error(`transaction ${i}: HTTP ${r.status}: ${text}`);
    await new Promise((done) => setTimeout(done, 250));
  }
}
page.setDefaultTimeout(STEP_MS);

async function check(name, fn) {
  step = name;
  const t0 = Date.now();
  await fn();
  console.log(`ok   ${name} (${Date.now() - t0} ms)`);
}

const row = () => page.locator(`#indoubt tbody tr[data-xid="${xid}"]`);
const result = page.locator('#action-result');
try {
  await check('the page asks for the token', async () => {
    await page.goto(url);
    await page.locator('#login').waitFor({ state: 'visible' });
  });
  await check('a wrong token is refused', async () => {
    await page.fill('#token', 'wrong-token');
    await page.click('#login button[type=submit]');
    await page.locator('#login-error', { hasText: 'refused the token' }).waitFor();
  });
  await check('with the token the three participants show ready', async () => {
    await page.fill('#token', token);
    await page.click('#login button[type=submit]');
    for (const name of ['payment', 'order', 'warehouse'])
      await page.locator(`#participants tr[data-name="${name}"] td.state`, { hasText: /^ready$/ }).waitFor();
    await page.locator('#ready', { hasText: /^ready$/ }).waitFor();
  });
  await check('the token is kept for the tab (a reload asks no more)', async () => {
    await page.reload();
    await page.locator('#participants tr[data-name="payment"]').waitFor();
    if (await page.locator('#login').isVisible()) throw new Error('the login form came back');
  });
  await check('transactions show in the counters and the charts', async () => {
    await traffic();
    await page.locator('#inflight td:nth-child(6)', { hasText: /^18$/ }).waitFor();
    await page.locator('#inflight td:nth-child(7)', { hasText: /^6$/ }).waitFor();
    await page.locator('#rate-now', { hasText: /now \d/ }).waitFor();
  });
  await check('the planted branch is listed with its age and the journal\'s decision', async () => {
    await row().locator('td.decision', { hasText: /^abort$/ }).waitFor();
    const cells = await row().locator('td').allTextContents();
    if (cells[1] !== 'order' || !/\d+ (s|min|h)$/.test(cells[2]))
      throw new Error(`unexpected row: ${JSON.stringify(cells)}`);
  });
  await check('commit, which contradicts the journal, shows the refusal', async () => {
    await row().locator('button.commit').click();
    await page.locator('#action-result.refused', { hasText: 'no commit record' }).waitFor();
    await row().waitFor(); // still in doubt
  });
  await page.screenshot({ path: `${shots}-refused.png`, fullPage: true });
  console.log(`screenshot: ${shots}-refused.png`);
  await check('rollback resolves it', async () => {
    await row().locator('button.rollback').click();
    await page.locator('#action-result.done', { hasText: 'order: rolled back' }).waitFor();
  });
  await check('the branch leaves the list', async () => {
    await row().waitFor({ state: 'detached' });
  });
  await page.screenshot({ path: `${shots}-resolved.png`, fullPage: true });
  console.log(`screenshot: ${shots}-resolved.png`);
  if (problems.length) throw new Error(problems.join('; '));
} catch (e) {
  console.error(`FAIL ${step}: ${e.message.split('\n')[0]}`);
  if (problems.length) console.error(problems.join('\n'));
  await page.screenshot({ path: `${shots}-failed.png`, fullPage: true }).catch(() => {});
  console.error(`screenshot: ${shots}-failed.png; result text: ${await result.textContent().catch(() => '?')}`);
  process.exitCode = 1;
} finally {
  await Promise.all(recorded);
  clearTimeout(deadline);
  await browser.close();
}
