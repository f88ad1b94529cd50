// Texts: HTML or script in a config text is shown as text, never run; characters that end a
// script or a line in JavaScript survive the trip; the visitor's language is chosen.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { expectNoAxeViolations, launchBrowser, sampleConfig, shot, sitePage, startGateway, startSite, ui, visitor } from './gateway.mjs';

let gw, site, browser, tenant, url;

before(async () => {
  gw = await startGateway();
  site = await startSite();
  browser = await launchBrowser();
  tenant = await gw.createTenant('texts', { site });
  url = site.page('/', sitePage(tenant));
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

const IMG = '<img src=x onerror="window.__xss=1">';
const SCRIPT = '</script><script>window.__xss=2</script>';

test('texts holding HTML and script are shown as text and never run', async () => {
  const en = sampleConfig().texts.en;
  const t = await gw.createTenant('hostile', {
    site,
    config: {
      texts: {
        en: {
          ...en,
          title: `Cookies ${IMG}`,
          body: `Line one\u2028line two\u2029 ${SCRIPT} & "quotes" 'apostrophes' \\ backslash`,
          accept_all: `<b>Accept</b> all`,
          categories: { ...en.categories, analytics: { label: `Analytics ${IMG}`, description: `<a href="javascript:window.__xss=3">click</a>` } },
        },
      },
    },
  });
  const { page, context, errors } = await visitor(browser, { country: 'SE' });
  await page.goto(site.page('/hostile', sitePage(t)));
  const u = ui(page);
  await u.banner.waitFor();
  assert.deepEqual(errors, [], 'banner.js parsed and ran without errors');
  assert.equal(await u.banner.getByRole('heading').textContent(), `Cookies ${IMG}`);
  assert.match(await u.banner.textContent(), new RegExp(SCRIPT.replace(/[/]/g, '\\/')));
  assert.match(await u.banner.textContent(), /Line one\u2028line two\u2029/);
  assert.ok(await u.banner.getByRole('button', { name: '<b>Accept</b> all' }).isVisible());
  await u.banner.getByRole('button', { name: /Preferences/ }).click();
  await u.dialog.waitFor();
  assert.ok(await u.toggle(`Analytics ${IMG}`).isVisible());
  const counts = await page.evaluate(() => {
    const r = document.getElementById('consentgate').shadowRoot;
    return { img: r.querySelectorAll('img').length, b: r.querySelectorAll('b').length, scripts: r.querySelectorAll('script').length, links: r.querySelectorAll('a[href^="javascript"]').length };
  });
  assert.deepEqual(counts, { img: 0, b: 0, scripts: 0, links: 0 });
  // The positive control: an image with the same failing source, made after the banner rendered;
  // once its onerror has run, an image the texts had created (even a detached one) failed before it.
  await page.evaluate(() => { const i = new Image(); i.onerror = () => { window.__control = 1; }; i.src = 'x'; });
  await page.waitForFunction(() => window.__control === 1);
  assert.equal(await page.evaluate(() => window.__xss), undefined, 'nothing from the texts ran');
  await shot(page, 'hostile-texts-as-text');
  await context.close();
});

test('Swedish texts for a visitor whose browser prefers sv-SE', async () => {
  const { page, context } = await visitor(browser, { country: 'SE', locale: 'sv-SE' });
  await page.goto(url);
  const u = ui(page);
  await u.banner.waitFor();
  assert.equal(await u.banner.getByRole('heading').textContent(), 'Vi värnar om din integritet');
  for (const name of ['Avvisa alla', 'Godkänn alla', 'Inställningar']) assert.ok(await u.banner.getByRole('button', { name }).isVisible(), name);
  assert.equal(await u.banner.getAttribute('lang'), 'sv');
  await shot(page, 'swedish-banner');
  await u.preferences.click();
  assert.ok(await u.toggle(/Statistik/).isVisible());
  assert.ok(await u.dialogButton('Spara val').isVisible());
  await shot(page, 'swedish-preferences');
  await expectNoAxeViolations(page, 'Swedish preferences');
  await context.close();
});

test('a language without texts falls back to the default language', async () => {
  const { page, context } = await visitor(browser, { country: 'FR', locale: 'fr-FR' });
  await page.goto(url);
  await ui(page).banner.waitFor();
  assert.equal(await ui(page).banner.getByRole('heading').textContent(), 'We value your privacy');
  assert.equal(await ui(page).banner.getAttribute('lang'), 'en');
  await context.close();
});

test('the consent POST carries the language the visitor saw', async () => {
  const { page, context, requests } = await visitor(browser, { country: 'SE', locale: 'sv-SE' });
  await page.goto(url);
  await ui(page).reject.click();
  await ui(page).settings.waitFor();
  const post = requests.find((r) => r.method === 'POST' && r.url.endsWith('/consent'));
  assert.equal(JSON.parse(post.body).language, 'sv');
  await context.close();
});
