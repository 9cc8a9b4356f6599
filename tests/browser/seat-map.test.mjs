// The seat map (examples/seat-map) in a real browser: Debian's chromium driven by playwright-core,
// two users in two browser contexts, the page on another origin than the API (so CORS is real).
// Started by tests/browser/run.sh, which sets the environment below.

import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const { API, PAGE, EVENT, ALICE, BOB, SHOTS, CHROMIUM } = process.env;
const SEAT = '[data-label="A-1-1"]';

const browser = await chromium.launch({
  executablePath: CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
mkdirSync(SHOTS, { recursive: true });

async function open(token) {
  const context = await browser.newContext({ viewport: { width: 900, height: 420 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(String(err)));
  page.on('console', (msg) => { if (msg.type() === 'error') problems.push(msg.text()); });
  await page.goto(`${PAGE}/index.html?api=${encodeURIComponent(API)}&event=${EVENT}&token=${token}&ttl=2`);
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
  await page.waitForSelector(`${SEAT}[data-status="AVAILABLE"]`, { timeout: 5_000 });
  return { page, problems };
}

async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    console.log(`FAIL ${name}: ${err.message}`);
    await alice.page.screenshot({ path: `${SHOTS}/failed-alice.png` });
    await bob.page.screenshot({ path: `${SHOTS}/failed-bob.png` });
    await browser.close();
    process.exit(1);
  }
}

const alice = await open(ALICE);
const bob = await open(BOB);

await step('Alice holds A-1; Bob sees it held within 1 s, without a reload', async () => {
  await alice.page.click(SEAT);
  await alice.page.waitForSelector(`${SEAT}[data-status="HELD"][data-mine="true"]`, { timeout: 5_000 });
  await alice.page.waitForSelector('#hold:not([hidden])');
  await bob.page.waitForSelector(`${SEAT}[data-status="HELD"][data-mine="false"]`, { timeout: 1_000 });
  await alice.page.screenshot({ path: `${SHOTS}/1-alice-holds.png` });
  await bob.page.screenshot({ path: `${SHOTS}/1-bob-sees-held.png` });
});

await step('Bob clicks A-1 and is told it is taken', async () => {
  await bob.page.click(SEAT);
  await bob.page.waitForSelector('#message[data-code="SEAT_UNAVAILABLE"]', { timeout: 5_000 });
  const text = await bob.page.textContent('#message');
  if (!/taken/.test(text)) throw new Error(`refusal says: ${text}`);
  await bob.page.screenshot({ path: `${SHOTS}/2-bob-refused.png` });
});

await step("Alice's 2-second hold expires: both pages show A-1 available", async () => {
  await alice.page.waitForSelector('#message[data-code="HOLD_EXPIRED"]', { timeout: 5_000 });
  await alice.page.waitForSelector(`${SEAT}[data-status="AVAILABLE"]`, { timeout: 5_000 });
  await bob.page.waitForSelector(`${SEAT}[data-status="AVAILABLE"]`, { timeout: 5_000 });
  await alice.page.screenshot({ path: `${SHOTS}/3-alice-expired.png` });
  await bob.page.screenshot({ path: `${SHOTS}/3-bob-available.png` });
});

await step('Alice holds and confirms: both pages show A-1 booked', async () => {
  await alice.page.click(SEAT);
  await alice.page.waitForSelector('#hold:not([hidden])', { timeout: 5_000 });
  await alice.page.click('#confirm');
  await alice.page.waitForSelector('#message[data-code="CONFIRMED"]', { timeout: 5_000 });
  await alice.page.waitForSelector(`${SEAT}[data-status="BOOKED"]`, { timeout: 5_000 });
  await bob.page.waitForSelector(`${SEAT}[data-status="BOOKED"]`, { timeout: 1_000 });
  await alice.page.screenshot({ path: `${SHOTS}/4-alice-booked.png` });
  await bob.page.screenshot({ path: `${SHOTS}/4-bob-sees-booked.png` });
});

await step('no script errors on either page', async () => {
  // The refused hold logs a failed request (409) in the console: that one is expected.
  const unexpected = [...alice.problems, ...bob.problems].filter((p) => !/409/.test(p));
  if (unexpected.length) throw new Error(unexpected.join('\n'));
});

await browser.close();
