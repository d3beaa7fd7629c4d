// Drives Debian's chromium against the operator page (called by test_ui.c, which planted the
// in-doubt branch XA_UI_XID with the journal's decision "abort"). Exits non-zero, naming the step,
// when the page does not show or do what it must. Screenshots: XA_UI_SHOTS-*.png.
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
  clearTimeout(deadline);
  await browser.close();
}
