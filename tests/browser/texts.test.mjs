// Texts: HTML or script in a config text is shown as text, never run; characters that end a
// script or a line in JavaScript survive the trip; the visitor's language is chosen.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { expectNoAxeViolations, launchBrowser, sampleConfig, shot, sitePage, startGateway, startSite, ui, visitor, visitorId } from './gateway.mjs';

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
  assert.equal(await u.host.getAttribute('lang'), 'sv');
  assert.equal(await u.host.getAttribute('dir'), 'ltr');
  await shot(page, 'swedish-banner');
  await expectNoAxeViolations(page, 'Swedish first layer');
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
  assert.equal(await ui(page).host.getAttribute('lang'), 'en');
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

const en = () => sampleConfig().texts.en;
const pt = { title: 'Valorizamos a sua privacidade', body: 'Usamos cookies.', accept_all: 'Aceitar todos', reject_all: 'Rejeitar todos' };

/** Opens the page as a visitor with `locale`, rejects, and returns what was shown and recorded. */
async function shownAndRecorded(t, path, locale) {
  const { page, context, requests } = await visitor(browser, { country: 'SE', locale });
  await page.goto(site.page(path, sitePage(t)));
  const u = ui(page);
  await u.banner.waitFor();
  const shown = {
    title: await u.banner.getByRole('heading').textContent(),
    lang: await u.host.getAttribute('lang'),
    dir: await u.host.getAttribute('dir'),
    direction: await u.banner.evaluate((e) => getComputedStyle(e).direction),
  };
  await u.banner.getByRole('button', { name: t.rejectLabel || /reject all/i }).click();
  await u.settings.waitFor();
  const post = JSON.parse(requests.find((r) => r.method === 'POST' && r.url.endsWith('/consent')).body);
  const rec = await t.waitForRecord(await visitorId(page), 'reject_all');
  await context.close();
  return { ...shown, posted: post.language, recorded: rec.language };
}

test('a pt-BR config key serves a pt-BR browser, and the record says pt-BR', async () => {
  const t = await gw.createTenant('lang-pt-br', { site, config: { texts: { en: en(), 'pt-BR': pt } } });
  t.rejectLabel = 'Rejeitar todos';
  const r = await shownAndRecorded(t, '/pt-br', 'pt-BR');
  assert.deepEqual(r, { title: pt.title, lang: 'pt-BR', dir: 'ltr', direction: 'ltr', posted: 'pt-BR', recorded: 'pt-BR' });
});

test('language keys match case-insensitively: a pt-br key serves a pt-BR browser, named as the config writes it', async () => {
  // The banner picks the config's own key (banner.js `L`), so `lang`, the POST and the record all
  // name exactly the texts shown: `pt-br`, not the browser's `pt-BR`.
  const t = await gw.createTenant('lang-pt-br-lower', { site, config: { texts: { en: en(), 'pt-br': pt } } });
  t.rejectLabel = 'Rejeitar todos';
  const r = await shownAndRecorded(t, '/pt-br-lower', 'pt-BR');
  assert.deepEqual(r, { title: pt.title, lang: 'pt-br', dir: 'ltr', direction: 'ltr', posted: 'pt-br', recorded: 'pt-br' });
});

test('a pt-BR browser falls back to pt, then to the default language', async () => {
  const t = await gw.createTenant('lang-pt', { site, config: { texts: { en: en(), pt } } });
  t.rejectLabel = 'Rejeitar todos';
  const r = await shownAndRecorded(t, '/pt', 'pt-BR');
  assert.deepEqual([r.title, r.lang, r.recorded], [pt.title, 'pt', 'pt']);
  const only = await gw.createTenant('lang-pt-only-en', { site });
  const d = await shownAndRecorded(only, '/pt-en', 'pt-BR');
  assert.deepEqual([d.lang, d.recorded], ['en', 'en']);
});

test('a config whose only language is en-GB sets lang="en-GB" and records en-GB', async () => {
  const t = await gw.createTenant('lang-en-gb', { site, config: { texts: { en: null, sv: null, 'en-GB': en() }, default_language: 'en-GB' } });
  const r = await shownAndRecorded(t, '/en-gb', 'de-DE');
  assert.deepEqual(r, { title: en().title, lang: 'en-GB', dir: 'ltr', direction: 'ltr', posted: 'en-GB', recorded: 'en-GB' });
});

test('Arabic is laid out right to left, the preferences too; axe clean', async () => {
  const ar = { title: 'نحن نحترم خصوصيتك', body: 'نستخدم ملفات تعريف الارتباط.', accept_all: 'قبول الكل', reject_all: 'رفض الكل', preferences: 'التفضيلات',
    save: 'حفظ', settings: 'إعدادات ملفات تعريف الارتباط', privacy_policy: 'سياسة الخصوصية', cookie_policy: 'سياسة ملفات تعريف الارتباط', close: 'إغلاق',
    always_on: 'مفعّل دائمًا', signal_denied: 'متوقف: إشارة الخصوصية في متصفحك' };
  const t = await gw.createTenant('lang-ar', { site, config: { texts: { en: en(), ar } } });
  assert.deepEqual(t.warnings.filter((w) => w.startsWith('texts.ar')), [], 'Arabic has every built-in string');
  const { page, context } = await visitor(browser, { country: 'SE', locale: 'ar-EG' });
  await page.goto(site.page('/ar', sitePage(t)));
  const u = ui(page);
  await u.banner.waitFor();
  assert.equal(await u.host.getAttribute('lang'), 'ar');
  assert.equal(await u.host.getAttribute('dir'), 'rtl');
  assert.equal(await u.banner.evaluate((e) => getComputedStyle(e).direction), 'rtl');
  // Right to left: the first button of the row sits right of the second.
  const [first, second] = [await u.banner.getByRole('button', { name: 'رفض الكل' }).boundingBox(), await u.banner.getByRole('button', { name: 'قبول الكل' }).boundingBox()];
  assert.ok(first.x > second.x, `Reject all right of Accept all: ${first.x} > ${second.x}`);
  await shot(page, 'arabic-banner');
  await expectNoAxeViolations(page, 'Arabic first layer');
  await u.banner.getByRole('button', { name: 'التفضيلات' }).click();
  await u.dialog.waitFor();
  assert.equal(await u.dialog.evaluate((e) => getComputedStyle(e).direction), 'rtl');
  assert.ok(await u.dialog.getByRole('button', { name: 'إغلاق' }).isVisible(), 'the close button in Arabic');
  await shot(page, 'arabic-preferences');
  await expectNoAxeViolations(page, 'Arabic preferences');
  await context.close();
});

test('the API names the built-in English strings a language lacks', async () => {
  // The sample's Swedish has no link labels, close label or switch notes.
  const w = tenant.warnings.find((x) => x.startsWith('texts.sv:'));
  assert.ok(w, JSON.stringify(tenant.warnings));
  for (const k of ['privacy_policy', 'cookie_policy', 'close', 'always_on', 'signal_denied']) assert.ok(w.includes(k), `${k} in ${w}`);
  assert.equal(tenant.warnings.filter((x) => x.startsWith('texts.en')).length, 0, 'English needs none');
});
