// The consent config editor in a real browser, under its real CSP: sign in, edit a text and a
// colour and see both previews (desktop and mobile, sandboxed frames) follow before saving, save,
// publish with "requires re-consent", then a visitor on the site gets the new text from the
// served banner; the revision history and its diff. axe-core (WCAG 2.2 AA) on the editor (also
// with errors beside fields), the history and the diff. Screenshots for docs/admin.md and the
// README: `UPDATE_SCREENSHOTS=1` writes them to docs/img/.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ARTIFACTS, REPO, expectNoAxeViolations, launchBrowser, sitePage, startGateway, startSite, ui, visitor } from './gateway.mjs';

const IMG = process.env.UPDATE_SCREENSHOTS ? path.join(REPO, 'docs/img') : ARTIFACTS;
let gw, browser, site, tenant, sessionCookie;

before(async () => {
  gw = await startGateway();
  browser = await launchBrowser();
  site = await startSite();
  tenant = await gw.createTenant('editor', { site });
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

const shot = async (page, name, fullPage = false) => {
  mkdirSync(IMG, { recursive: true });
  await page.screenshot({ path: path.join(IMG, `${name}.png`), fullPage });
};

/** The first layer's title and its Accept all button inside a preview frame. */
const preview = (page, view) => {
  const frame = page.frameLocator(`iframe.preview.${view}`);
  return { title: frame.locator('#consentgate .bn h2'), accept: frame.locator('#consentgate .bn').getByRole('button', { name: 'Accept all' }) };
};

test('edit a text and a colour, see the previews follow, save, publish, and visitors get it', async () => {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, reducedMotion: 'reduce' });
  const page = await context.newPage();
  // Console errors other than the preview's banner being refused its consent lookup (the
  // preview's CSP allows no connection: a preview records nothing) and failed loads.
  const errors = [];
  const refusedLookup = /^(Fetch API cannot load|Connecting to) '?http:\/\/127\.0\.0\.1:\d+\/consent\/[0-9a-f-]{36}'?[ .].*Content Security Policy/;
  page.on('console', (m) => m.type() === 'error' && !refusedLookup.test(m.text()) && !/Failed to load resource/.test(m.text()) && errors.push(m.text()));

  await page.goto(`${gw.base}/admin/sign-in`);
  await page.getByLabel('API token').fill(tenant.adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('link', { name: 'Consent banner' }).click();
  await page.getByRole('heading', { name: /^Consent banner/ }).waitFor();
  for (const view of ['desktop', 'mobile']) await preview(page, view).title.filter({ hasText: 'We value your privacy' }).waitFor();

  // Typed, not saved: the editor's script reloads both previews with the form's values.
  await page.locator('#f-texts-en-title').fill('Choose your cookies');
  await page.locator('#f-banner-primary_color').fill('#0b57d0');
  for (const view of ['desktop', 'mobile']) {
    const p = preview(page, view);
    await p.title.filter({ hasText: 'Choose your cookies' }).waitFor();
    // Rendered from the edited draft: the new colour is the buttons' background.
    for (let i = 0; ; i++) {
      const bg = await p.accept.evaluate((b) => getComputedStyle(b).backgroundColor);
      if (bg === 'rgb(11, 87, 208)') break;
      if (i > 50) assert.fail(`${view} preview: Accept all is ${bg}`);
      await page.waitForTimeout(100);
    }
  }
  const [before] = await tenant.api('GET', '/analytics/cookie-consent/configs');
  assert.equal(before.texts.en.title, 'We value your privacy', 'typing saves nothing');
  await shot(page, 'admin-editor');

  await page.getByRole('button', { name: 'Save draft' }).click();
  await page.getByRole('status').filter({ hasText: 'Draft saved' }).waitFor();
  assert.equal(await page.locator('#unpublished-changes').innerText(), 'yes');
  await preview(page, 'desktop').title.filter({ hasText: 'Choose your cookies' }).waitFor();

  await page.getByLabel('Requires re-consent').check();
  await page.getByRole('button', { name: 'Publish revision 2' }).click();
  await page.getByRole('status').filter({ hasText: 'Published revision 2; visitors who decided under an earlier revision are asked again' }).waitFor();
  const config = await tenant.api('GET', `/analytics/cookie-consent/configs/${tenant.configId}`);
  assert.deepEqual([config.revision, config.reconsent_revision, config.banner.primary_color], [2, 2, '#0b57d0']);
  const { items: log } = await tenant.api('GET', '/audit-log');
  for (const action of ['cookie_consent_config.update', 'cookie_consent_config.publish']) {
    assert.ok(log.some((e) => e.action === action && e.actor.startsWith('token:')), `${action} in the audit log`);
  }

  // A visitor on the site: the served banner has the new text.
  const v = await visitor(browser);
  await v.page.goto(site.page('/', sitePage(tenant)));
  await ui(v.page).banner.getByRole('heading', { name: 'Choose your cookies' }).waitFor();
  assert.equal(await ui(v.page).accept.evaluate((b) => getComputedStyle(b).backgroundColor), 'rgb(11, 87, 208)');
  await v.context.close();

  await page.getByRole('link', { name: 'Revision history' }).click();
  await page.getByRole('link', { name: 'Revision 2' }).click();
  const row = await page.getByRole('row', { name: /texts\.en\.title/ }).innerText();
  assert.deepEqual(row.split('\t'), ['texts.en.title', 'We value your privacy', 'Choose your cookies']);
  await shot(page, 'admin-revision-diff');

  assert.deepEqual(errors, [], 'no console errors: the editor script and the previews load under their CSP');
  sessionCookie = (await context.cookies()).find((c) => c.name === 'cg_admin');
  await context.close();
});

test('no axe violations on the editor (with and without errors), the history and a diff', async () => {
  // axe-core is injected as an inline script, which the pages' CSP refuses: this context bypasses it.
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, reducedMotion: 'reduce', bypassCSP: true });
  await context.addCookies([sessionCookie]);
  const page = await context.newPage();
  const editor = `${gw.base}/admin/consent/${tenant.configId}`;
  await page.goto(editor);
  await expectNoAxeViolations(page, 'editor');
  await page.locator('#f-consent_expiry_days').fill('0');
  await page.locator('#f-texts-en-title').fill('');
  await page.getByRole('button', { name: 'Save draft' }).click();
  await page.getByRole('alert').filter({ hasText: 'Not saved: 2 problem(s)' }).waitFor();
  assert.match(await page.locator('#f-consent_expiry_days-e1').innerText(), /consent_expiry_days|730|1/);
  assert.equal(await page.locator('#f-consent_expiry_days').getAttribute('aria-invalid'), 'true');
  await expectNoAxeViolations(page, 'editor with errors');
  await page.goto(`${editor}/revisions`);
  await expectNoAxeViolations(page, 'revision history');
  await page.goto(`${editor}/revisions/2`);
  await expectNoAxeViolations(page, 'revision diff');
  await page.goto(`${editor}/revisions/1`);
  await page.getByRole('table').filter({ hasText: 'The first revision' }).waitFor();
  await expectNoAxeViolations(page, 'first revision');
  await context.close();
});
