// What the UI's end-to-end scripts share: Chromium through playwright-core (Debian's
// /usr/bin/chromium; nothing is downloaded), the API with the token, waiting, screenshots,
// accessibility checks and a record of what must never happen on the page (a JavaScript
// dialog, an uncaught error, a Content-Security-Policy violation).
//
// Environment: SHORTHORN_URL and SHORTHORN_TOKEN (a running `shorthorn up`),
// SHORTHORN_SCREENSHOTS (where screenshots go; none taken without it), CHROMIUM.

import { AxeBuilder } from '@axe-core/playwright';
import { readdirSync, readFileSync, mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

export const url = required('SHORTHORN_URL').replace(/\/$/, '');
export const token = required('SHORTHORN_TOKEN');
const screenshots = process.env.SHORTHORN_SCREENSHOTS;

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set: run this through the Rust end-to-end test, or set it by hand`);
    process.exit(2);
  }
  return value;
}

/** Fails the script with `message` unless `condition`. */
export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** A figure for the note: printed as `FIGURE name value unit`. */
export function figure(name, value, unit) {
  console.log(`FIGURE ${name} ${typeof value === 'number' ? value.toFixed(1) : value} ${unit}`);
}

export function step(text) {
  console.log(`STEP ${text}`);
}

/** The API with the bearer token, as the CLI calls it. */
export async function callApi(method, path, body) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** Polls `probe` until it returns a truthy value, at most `seconds`. */
export async function until(what, probe, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * A browser and a page on the UI, with what must never happen recorded in `trouble`
 * (checked by `finish`).
 */
export async function open() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  const trouble = [];
  page.on('dialog', async (dialog) => {
    trouble.push(`a JavaScript ${dialog.type()} opened: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on('pageerror', (error) => trouble.push(`uncaught error on the page: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content.Security.Policy|Refused to/i.test(message.text())) {
      trouble.push(`CSP: ${message.text()}`);
    }
  });
  page.setDefaultTimeout(30000);
  return { browser, context, page, trouble };
}

/** Logs in through the login page. */
export async function login(page, withToken = token) {
  await page.getByLabel('API token').fill(withToken);
  await page.getByRole('button', { name: 'Log in' }).click();
}

export async function screenshot(page, name) {
  if (!screenshots) return;
  mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: `${screenshots}/${name}.png`, fullPage: true });
}

/** Runs axe on the page; fails on any serious or critical violation. */
export async function accessible(page, where) {
  const result = await new AxeBuilder({ page }).analyze();
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(
    bad.length === 0,
    `${where}: accessibility violations: ${bad
      .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join('; ')}`)
      .join(' | ')}`,
  );
  return result.violations.length;
}

/** The pids of processes whose command line mentions `needle`. */
export function processesMentioning(needle) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (cmdline.some((arg) => arg.includes(needle))) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids.filter((pid) => pid !== process.pid);
}

/** Runs `main(session)`; prints the failure and exits non-zero on any error or trouble. */
export async function run(main) {
  const session = await open();
  try {
    await main(session);
    check(session.trouble.length === 0, `the page misbehaved: ${session.trouble.join(' | ')}`);
    console.log('OK');
  } catch (e) {
    console.error(e instanceof Error ? e.stack : String(e));
    await screenshot(session.page, 'failure').catch(() => {});
    process.exitCode = 1;
  } finally {
    await session.browser.close();
  }
}
