// A standby (disaster recovery) volume from the web UI against a real `shorthorn up`:
// the create form's Standby box makes one that follows a volume's backups; its page
// shows the standby facts (the backup it holds, the newest, the lag) and offers only
// what a standby allows; a new backup is restored after "Sync now"; "Activate" (the
// name typed) turns it into an ordinary volume. Screenshotted and checked by axe.
//
// Needs SHORTHORN_DATA_DIR too (the backup target lives under it).

import { accessible, callApi, check, login, run, screenshot, step, until, url } from './lib.mjs';

const dataDir = process.env.SHORTHORN_DATA_DIR;
const SOURCE = 'dr-source';
const STANDBY = 'dr-standby';

/** Backs up the source through the API and waits until it completes; returns it. */
async function backUp() {
  const created = await callApi('POST', '/v1/backups', { volume: SOURCE, target: 'default' });
  return until('the backup to complete', async () => {
    const backup = await callApi('GET', `/v1/backups/${created.name}`);
    return backup.status.state === 'completed' ? backup : null;
  }, 60);
}

await run(async ({ page }) => {
  const header = page.locator('.page-header');
  const standbySection = page.locator('section[aria-labelledby="standby-title"]');

  step('a source volume with a backup (through the API)');
  check(dataDir, 'SHORTHORN_DATA_DIR is set');
  await callApi('PUT', '/v1/backup-targets/default', { url: `file://${dataDir}/backups/standby`, poll_interval: 1 });
  await callApi('POST', '/v1/volumes', { name: SOURCE, size: 16 << 20, replicas: 1 });
  await until('the source to be detached', async () => (await callApi('GET', `/v1/volumes/${SOURCE}`)).status.state === 'detached', 60);
  await callApi('POST', `/v1/volumes/${SOURCE}/attach`, {});
  await until('the source to serve', async () => (await callApi('GET', `/v1/volumes/${SOURCE}`)).status.endpoint, 60);
  const first = await backUp();
  await until('the backup to be listed', async () => (await callApi('GET', '/v1/backups')).some((b) => b.name === first.name && b.status.url), 30);

  step('log in; create the standby from the form');
  await page.goto(`${url}/`);
  await login(page);
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'Volumes' }).click();
  await page.getByRole('button', { name: 'Create volume' }).click();
  const create = page.getByRole('dialog');
  await create.getByLabel('Name').fill(STANDBY);
  await create.getByLabel('Replicas').fill('1');
  await create.getByLabel('Content').selectOption('backup');
  await create.getByLabel(/^Backup/).selectOption({ label: `${SOURCE} / ${first.name}` });
  await create.getByLabel(/Standby/).check();
  await screenshot(page, 'volume-create-standby');
  await create.getByRole('button', { name: 'Create' }).click();
  const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: STANDBY, exact: true }) });
  await row.locator('.badge', { hasText: 'standby' }).waitFor({ timeout: 60000 });

  step('its page shows what it holds and offers only what a standby allows');
  await row.getByRole('link', { name: STANDBY, exact: true }).click();
  await page.getByRole('heading', { name: STANDBY, exact: true }).waitFor();
  await standbySection.getByText(first.name).first().waitFor({ timeout: 60000 });
  for (const absent of ['Attach', 'Expand', 'Take snapshot', 'Back up', 'Clone']) {
    check((await header.getByRole('button', { name: absent, exact: true }).count()) === 0, `no ${absent} button on a standby`);
  }
  check((await header.getByRole('button', { name: 'Activate' }).count()) === 1, 'an Activate button');
  check((await page.getByRole('button', { name: 'Remove', exact: true }).count()) === 0, 'no Remove on a standby replica');

  step('a new backup is restored after Sync now');
  const second = await backUp();
  await header.getByRole('button', { name: 'Sync now' }).click();
  await standbySection.locator('dd', { hasText: second.name }).first().waitFor({ timeout: 60000 });
  await until('the standby to hold the new backup', async () => {
    const standby = (await callApi('GET', `/v1/volumes/${STANDBY}`)).status.standby;
    return standby?.last_restored === second.name && !standby.restoring;
  }, 60);
  await page.waitForTimeout(500);
  await screenshot(page, 'volume-standby');
  await accessible(page, 'standby volume page');

  step('activate it: an ordinary volume');
  await header.getByRole('button', { name: 'Activate' }).click();
  const confirm = page.getByRole('dialog');
  check(await confirm.getByRole('button', { name: 'Activate' }).isDisabled(), 'activation waits for the typed name');
  await confirm.getByLabel(/Type/).fill(STANDBY);
  await confirm.getByRole('button', { name: 'Activate' }).click();
  await header.getByRole('button', { name: 'Attach' }).waitFor({ timeout: 60000 });
  await standbySection.waitFor({ state: 'detached' });
  const volume = await callApi('GET', `/v1/volumes/${STANDBY}`);
  check(!volume.spec.standby, `activated: ${JSON.stringify(volume.spec)}`);

  await callApi('POST', `/v1/volumes/${SOURCE}/detach`);
});
