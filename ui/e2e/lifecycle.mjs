// A volume's life driven from the web UI against a real `shorthorn up`: a wrong token
// refused, the right one logs in (an HttpOnly SameSite=Strict session cookie, nothing in
// web storage, a request without the CSRF token refused); create, attach, healthy; data
// written through its NBD endpoint; a snapshot in the tree; a backup; one replica's
// process killed and the page — never reloaded — shows degraded, the rebuild with its
// progress, then healthy; expand; a label holding HTML shown as text; detach, delete;
// every page screenshotted and checked by axe; logout ends the session on the server.
//
// Needs SHORTHORN_DATA_DIR too (the backup target lives under it).

import { spawn, spawnSync } from 'node:child_process';
import {
  accessible,
  callApi,
  check,
  figure,
  login,
  processesMentioning,
  run,
  screenshot,
  step,
  token,
  until,
  url,
} from './lib.mjs';

const dataDir = process.env.SHORTHORN_DATA_DIR;
const VOLUME = 'ui-vol';
const XSS = '<img src=x onerror=alert(1)>';

function writeThroughNbd(endpoint, pattern, offset, length) {
  const result = spawnSync('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, endpoint], {
    encoding: 'utf8',
    timeout: 120000,
  });
  check(result.status === 0, `qemu-io write to ${endpoint}: ${result.stderr}${result.stdout}`);
}

/** `writeThroughNbd` without blocking the script (the page is watched meanwhile). */
function writeThroughNbdInBackground(endpoint, pattern, offset, length) {
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, endpoint], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`qemu-io write to ${endpoint} exited ${code}: ${output}`));
    });
  });
}

function readBackThroughNbd(endpoint, pattern, offset, length) {
  const result = spawnSync('qemu-io', ['-f', 'raw', '-c', `read -P ${pattern} ${offset} ${length}`, endpoint], {
    encoding: 'utf8',
    timeout: 120000,
  });
  check(result.status === 0 && !/Pattern verification failed/.test(result.stdout), `qemu-io read-back from ${endpoint}: ${result.stdout}${result.stderr}`);
}

await run(async ({ page, context }) => {
  const header = page.locator('.page-header .badge');
  const nav = (link) => page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: link }).click();
  const waitHeader = (state, seconds = 90) =>
    page.locator('.page-header .badge', { hasText: new RegExp(`^${state}$`) }).waitFor({ timeout: seconds * 1000 });

  step('the page is served with its Content-Security-Policy');
  const index = await fetch(`${url}/`);
  const csp = index.headers.get('content-security-policy') ?? '';
  check(csp.includes("default-src 'self'") && csp.includes("script-src 'self'") && !csp.includes('unsafe'), `CSP: ${csp}`);
  check(index.headers.get('x-content-type-options') === 'nosniff', 'nosniff');
  check(!/<script>|<script [^>]*>[^<]/.test(await index.text()), 'no inline script in the page');

  step('a wrong token is refused');
  await page.goto(`${url}/`);
  await page.getByLabel('API token').waitFor();
  await screenshot(page, 'login');
  await accessible(page, 'login page');
  await login(page, `wrong-${token}`);
  await page.getByRole('alert').filter({ hasText: 'wrong token' }).waitFor();
  check(!(await context.cookies()).some((c) => c.name === 'shorthorn_session'), 'a refused login set no session cookie');

  step('the right token logs in');
  await page.getByLabel('API token').fill('');
  await login(page);
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  const cookie = (await context.cookies()).find((c) => c.name === 'shorthorn_session');
  check(cookie?.httpOnly === true && cookie?.sameSite === 'Strict', `session cookie: ${JSON.stringify(cookie)}`);
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  check(!stored.includes(token), 'the token is not in web storage');
  const csrfless = await page.evaluate(async () => {
    const response = await fetch('/v1/volumes', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'csrf-probe', size: 4096 }),
    });
    return response.status;
  });
  check(csrfless === 403, `a POST with the cookie but no CSRF token: ${csrfless}, not 403`);
  await page.evaluate(() => {
    window.__notReloaded = true;
  });

  step('a short replica wait, set on the settings page');
  await nav('Settings');
  // Short for a test, long enough that the replica misses all 1.5 GiB written after it
  // is killed: its rebuild then spans several of the manager's passes, each reporting
  // progress (a rebuild within one pass shows none).
  const waitInput = page.getByLabel('replica_replenishment_wait_interval');
  await waitInput.fill('8');
  await page.getByRole('row', { name: /replica_replenishment_wait_interval/ }).getByRole('button', { name: 'Save' }).click();
  await until('the setting to change', async () => (await callApi('GET', '/v1/settings')).replica_replenishment_wait_interval === 8);

  step('create a volume from the UI');
  await nav('Volumes');
  await page.getByRole('button', { name: 'Create volume' }).click();
  const create = page.getByRole('dialog');
  await create.getByLabel('Name').fill(VOLUME);
  await create.getByLabel('Size').fill('2 GiB');
  await create.getByLabel('Replicas').fill('2');
  await create.getByLabel('Labels').fill('app=demo, tier=gold');
  await screenshot(page, 'volume-create');
  await create.getByRole('button', { name: 'Create' }).click();
  const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: VOLUME, exact: true }) });
  await row.locator('.badge', { hasText: 'detached' }).waitFor({ timeout: 90000 });

  step('attach it; it turns healthy');
  await row.getByRole('link', { name: VOLUME, exact: true }).click();
  await page.getByRole('heading', { name: VOLUME, exact: true }).waitFor();
  await page.locator('.page-header').getByRole('button', { name: 'Attach' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Attach' }).click();
  await waitHeader('healthy');
  const endpoint = (await callApi('GET', `/v1/volumes/${VOLUME}`)).status.endpoint;
  check(typeof endpoint === 'string' && endpoint.startsWith('nbd://'), `endpoint ${endpoint}`);
  await page.getByText(endpoint, { exact: true }).waitFor();
  writeThroughNbd(endpoint, '0x5a', 0, '256M');
  step('its I/O charts fill from the io stream');
  await until('a few samples on the charts', async () => {
    const points = await page.locator('.chart polyline.write').first().getAttribute('points');
    return points && points.split(' ').length >= 3;
  }, 30);
  check((await page.locator('.chart').count()) === 3, 'three charts: IOPS, throughput, latency');

  step('take a snapshot; it shows in the tree');
  await page.locator('.page-header').getByRole('button', { name: 'Take snapshot' }).click();
  const snapshotDialog = page.getByRole('dialog');
  await snapshotDialog.getByLabel('Name').fill('ui-snap-1');
  await snapshotDialog.getByRole('button', { name: 'Take snapshot' }).click();
  await page.locator('[data-snapshot="ui-snap-1"]').waitFor();

  step('back it up to a target');
  check(dataDir, 'SHORTHORN_DATA_DIR is set');
  await callApi('PUT', '/v1/backup-targets/default', { url: `file://${dataDir}/backups/ui` });
  const completed = page.locator('section[aria-labelledby="backups-title"] .badge', { hasText: 'completed' });
  const before = await completed.count();
  await page.locator('.page-header').getByRole('button', { name: 'Back up' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Back up' }).click();
  await until('the backup to complete', async () => (await completed.count()) > before, 120);

  step('kill one replica process; watch degraded, the rebuild, healthy, without a reload');
  const replicas = (await callApi('GET', `/v1/volumes/${VOLUME}`)).replicas;
  const victim = replicas[0];
  const pids = processesMentioning(victim.spec.data_dir);
  check(pids.length > 0, `a process for ${victim.name} (${victim.spec.data_dir})`);
  const killedAt = Date.now();
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  // What it misses while down is what its rebuild copies: enough for the rebuild to
  // last several of the manager's passes, each of which reports its progress. Written
  // in the background: the page is watched from the kill on.
  const written = writeThroughNbdInBackground(endpoint, '0x6b', 0, '1536M');
  const victimRow = page.locator(`tr[data-replica="${victim.name}"]`);
  let sawDegraded = false;
  let sawProgress = false;
  let sawRebuilding = false;
  await until(
    'the volume to be degraded, then healthy again',
    async () => {
      const shown = await header.textContent();
      if (!sawDegraded && shown === 'degraded') {
        sawDegraded = true;
        figure('degraded_shown_after_kill', Date.now() - killedAt, 'ms');
      }
      sawRebuilding ||= (await victimRow.locator('.badge', { hasText: 'rebuilding' }).count()) > 0;
      sawProgress ||= (await victimRow.locator('progress').count()) > 0;
      return sawDegraded && shown === 'healthy';
    },
    120,
  );
  figure('healthy_again_after_kill', Date.now() - killedAt, 'ms');
  await written;
  check(sawRebuilding, `the page showed ${victim.name} rebuilding`);
  check(sawProgress, `the page showed ${victim.name}'s rebuild progress bar`);
  check(await page.evaluate(() => window.__notReloaded === true), 'the page was not reloaded');
  readBackThroughNbd(endpoint, '0x6b', 0, '1536M');
  await screenshot(page, 'volume-detail');
  await accessible(page, 'volume detail');

  step('expand it');
  await page.locator('.page-header').getByRole('button', { name: 'Expand' }).click();
  await page.getByRole('dialog').getByLabel('New size').fill('3 GiB');
  await page.getByRole('dialog').getByRole('button', { name: 'Expand' }).click();
  await page.locator('.facts dd', { hasText: /^3 GiB$/ }).waitFor({ timeout: 60000 });

  step('a label holding HTML is shown as text');
  await callApi('POST', '/v1/volumes', { name: 'xss-probe', size: 1048576, replicas: 1, labels: { note: XSS } });
  await nav('Volumes');
  await page.getByRole('row').filter({ hasText: 'xss-probe' }).getByText(`note=${XSS}`).waitFor();
  check((await page.locator('img[src="x"]').count()) === 0, 'no <img> made of the label');
  await page.getByRole('row').filter({ hasText: 'xss-probe' }).getByRole('link', { name: 'xss-probe' }).click();
  await page.getByText(`note=${XSS}`).waitFor();
  check((await page.locator('img[src="x"]').count()) === 0, 'no <img> made of the label on its page');

  step('screenshots of the other pages');
  await callApi('POST', '/v1/recurring-jobs', {
    name: 'nightly',
    spec: { task: 'snapshot', cron: '0 2 * * *', retain: 7, groups: ['default'] },
  });
  for (const [link, heading, name] of [
    ['Dashboard', 'Dashboard', 'dashboard'],
    ['Volumes', 'Volumes', 'volumes'],
    ['Nodes', 'Nodes and disks', 'nodes'],
    ['Backups', 'Backups', 'backups'],
    ['Recurring jobs', 'Recurring jobs', 'jobs'],
    ['Settings', 'Settings', 'settings'],
    ['Events', 'Events', 'events'],
  ]) {
    await nav(link);
    await page.getByRole('heading', { name: heading, exact: true }).waitFor();
    await page.waitForTimeout(300);
    await screenshot(page, name);
    await accessible(page, `${name} page`);
  }

  step('detach and delete from the UI');
  await page.goto(`${url}/#/volumes/${VOLUME}`);
  await page.getByRole('heading', { name: VOLUME, exact: true }).waitFor();
  await page.locator('.page-header').getByRole('button', { name: 'Detach' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Detach' }).click();
  await waitHeader('detached', 60);
  await page.locator('.page-header').getByRole('button', { name: 'Delete' }).click();
  const confirm = page.getByRole('dialog');
  check(await confirm.getByRole('button', { name: 'Delete volume' }).isDisabled(), 'delete waits for the typed name');
  await screenshot(page, 'volume-delete');
  await confirm.getByLabel(/Type/).fill(VOLUME);
  await confirm.getByRole('button', { name: 'Delete volume' }).click();
  await page.getByRole('heading', { name: 'Volumes', exact: true }).waitFor();
  await until('the volume to be gone', async () => {
    const response = await fetch(`${url}/v1/volumes/${VOLUME}`, { headers: { Authorization: `Bearer ${token}` } });
    return response.status === 404;
  }, 90);
  await page.getByRole('link', { name: VOLUME, exact: true }).waitFor({ state: 'detached' });

  step('logout ends the session on the server');
  const sessionCookie = (await context.cookies()).find((c) => c.name === 'shorthorn_session');
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('API token').waitFor();
  const after = await fetch(`${url}/v1/volumes`, { headers: { Cookie: `shorthorn_session=${sessionCookie.value}` } });
  check(after.status === 401, `the old session cookie after logout: ${after.status}, not 401`);
});
