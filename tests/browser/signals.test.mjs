// Privacy signals and regions: DNT and GPC are reflected and never pre-grant anything; outside
// the consent-required regions the defaults are pre-ticked but nothing runs before a decision.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { consentRequests, expectNoAxeViolations, launchBrowser, lookedUpId, ran, shot, sitePage, startGateway, startSite, ui, visitor, visitorId } from './gateway.mjs';

let gw, site, browser, tenant, url;

before(async () => {
  gw = await startGateway();
  site = await startSite();
  browser = await launchBrowser();
  tenant = await gw.createTenant('signals', { site }); // respect_do_not_track: true in the sample
  url = site.page('/', sitePage(tenant));
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

const gpc = { headers: { 'Sec-GPC': '1' }, init: () => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }) };
const dnt = { headers: { DNT: '1' }, init: () => Object.defineProperty(Navigator.prototype, 'doNotTrack', { get: () => '1' }) };

async function open(opts) {
  const v = await visitor(browser, { country: 'SE', ...opts });
  await v.page.goto(url);
  await ui(v.page).banner.waitFor();
  return v;
}

test('GPC: marketing shown as denied and locked; Accept all records marketing false and grants the rest', async () => {
  // With respect_do_not_track off, GPC still denies marketing (CCPA regulations § 7025).
  const t = await gw.createTenant('gpc-only', { site, config: { respect_do_not_track: false } });
  const page1 = site.page('/gpc', sitePage(t));
  const { page, context } = await visitor(browser, { country: 'SE', ...gpc });
  await page.goto(page1);
  const u = ui(page);
  await u.banner.waitFor();
  await u.preferences.click();
  assert.equal(await u.toggle(/Marketing/).isChecked(), false);
  assert.equal(await u.toggle(/Marketing/).isDisabled(), true);
  assert.equal(await u.toggle(/Analytics/).isDisabled(), false);
  await shot(page, 'gpc-preferences');
  await expectNoAxeViolations(page, 'preferences with marketing locked by GPC');
  await u.dialogButton('Accept all').click();
  await page.waitForFunction(() => window.__analyticsRan);
  assert.deepEqual(await ran(page), { functional: true, analytics: true, marketing: false });
  const rec = await t.waitForRecord(await visitorId(page), 'accept_all');
  assert.equal(rec.choices.marketing, false, 'GPC denies marketing in the record');
  assert.equal(rec.choices.analytics, true);
  const update = await page.evaluate(() => window.__gtag.filter((c) => c[1] === 'update').at(-1)[2]);
  assert.deepEqual([update.ad_storage, update.ad_user_data, update.ad_personalization, update.analytics_storage], ['denied', 'denied', 'denied', 'granted']);
  await context.close();
});

test('DNT with respect_do_not_track: every optional category shown denied, nothing granted even by Accept all', async () => {
  const { page, context } = await open(dnt);
  const u = ui(page);
  await u.preferences.click();
  for (const name of [/Functional/, /Analytics/, /Marketing/]) {
    assert.equal(await u.toggle(name).isChecked(), false, `${name} off`);
    assert.equal(await u.toggle(name).isDisabled(), true, `${name} locked by DNT`);
  }
  await shot(page, 'dnt-preferences');
  await u.dialogButton('Accept all').click();
  await u.settings.waitFor();
  const rec = await tenant.waitForRecord(await visitorId(page), 'accept_all');
  assert.deepEqual({ ...rec.choices }, { necessary: true, functional: false, analytics: false, marketing: false });
  assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
  await context.close();
});

test('GPC with respect_do_not_track: the gateway sees the signal and nothing is pre-granted', async () => {
  const { page, context, requests } = await open(gpc);
  const vid = lookedUpId(requests);
  const state = await tenant.consentState(vid, site.origin, { 'Sec-GPC': '1', 'X-Test-Country': 'SE' });
  assert.equal(state.signals.gpc, true);
  assert.equal(state.decision_needed, true);
  assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
  await context.close();
});

test('outside the consent-required regions defaults are pre-ticked, yet nothing runs before a decision', async () => {
  // Brazil: no consent region is in it (a US visitor whose state is unknown may be in US-CA).
  const { page, context, requests } = await open({ country: 'BR' });
  const u = ui(page);
  const get = consentRequests(requests).find((r) => r.method === 'GET');
  assert.ok(get, 'asked the gateway');
  assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
  await u.preferences.click();
  // sample config: analytics default_accepted true, functional and marketing false.
  assert.equal(await u.toggle(/Analytics/).isChecked(), true);
  assert.equal(await u.toggle(/Functional/).isChecked(), false);
  assert.equal(await u.toggle(/Marketing/).isChecked(), false);
  assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
  await u.dialogButton('Save choices').click();
  await page.waitForFunction(() => window.__analyticsRan);
  const rec = await tenant.waitForRecord(await visitorId(page), 'custom');
  assert.deepEqual({ ...rec.choices }, { necessary: true, functional: false, analytics: true, marketing: false });
  await context.close();
});

test('outside the consent-required regions a refusal stands while the banner asks again', async () => {
  // Its own tenant: publishing a re-consent revision would ask the other tests' visitors again.
  const t = await gw.createTenant('refusal-stands', { site });
  const page1 = site.page('/refusal-stands', sitePage(t));
  const { page, context } = await visitor(browser, { country: 'BR' });
  await page.goto(page1);
  const u = ui(page);
  await u.reject.click();
  await t.waitForRecord(await visitorId(page), 'reject_all');
  await t.publish(true);
  await page.reload();
  await u.banner.waitFor();
  // The Consent Mode default granted analytics (the sample's default); the refusal overrides it.
  const update = await page.evaluate(() => window.__gtag.filter((c) => c[0] === 'consent' && c[1] === 'update').at(-1)?.[2]);
  assert.equal(update?.analytics_storage, 'denied', `told what stands: ${JSON.stringify(update)}`);
  await u.preferences.click();
  assert.equal(await u.toggle(/Analytics/).isChecked(), false, 'not pre-ticked against the refusal');
  assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
  await context.close();
});

test('Consent Mode defaults are region-aware and set before any tag fires', async () => {
  const { page, context } = await open({});
  const defaults = await page.evaluate(() => window.__gtag.filter((c) => c[0] === 'consent' && c[1] === 'default').map((c) => c[2]));
  const regional = defaults.find((d) => d.region);
  const global = defaults.find((d) => !d.region);
  assert.ok(regional.region.includes('SE') && regional.region.includes('US-CA'));
  assert.deepEqual([regional.ad_storage, regional.analytics_storage, regional.ad_user_data, regional.ad_personalization], ['denied', 'denied', 'denied', 'denied']);
  // Elsewhere each category's default_accepted applies (design.md, consent rules).
  assert.deepEqual([global.ad_storage, global.analytics_storage], ['denied', 'granted']);
  const firstUpdate = await page.evaluate(() => window.__gtag.findIndex((c) => c[1] === 'update'));
  assert.equal(firstUpdate, -1, 'no update before a decision');
  await context.close();
});

/** The accessible description of a switch: the paragraph its aria-describedby names. */
const description = (toggle) => toggle.evaluate((e) => e.getRootNode().getElementById(e.getAttribute('aria-describedby')).textContent);

test('a locked switch says why: necessary is always on, a privacy signal turned the others off', async () => {
  const { page, context } = await open(dnt);
  const u = ui(page);
  await u.preferences.click();
  assert.match(await description(u.toggle(/Strictly necessary/)), /^Always on/);
  for (const name of [/Functional/, /Analytics/, /Marketing/]) {
    assert.match(await description(u.toggle(name)), /^Off: your browser's privacy signal/, `${name}`);
  }
  await shot(page, 'dnt-preferences-reasons');
  await expectNoAxeViolations(page, 'preferences locked by DNT, with the reasons');
  await context.close();
});

test('the config\'s always_on and signal_denied texts are the ones shown, and only on locked switches', async () => {
  const texts = { en: { always_on: 'Required for the site', signal_denied: 'Blocked: your browser sent Global Privacy Control' } };
  const t = await gw.createTenant('reasons', { site, config: { respect_do_not_track: false, texts } });
  const { page, context } = await visitor(browser, { country: 'SE', ...gpc });
  await page.goto(site.page('/reasons', sitePage(t)));
  const u = ui(page);
  await u.preferences.click();
  assert.match(await description(u.toggle(/Strictly necessary/)), /^Required for the site/);
  assert.match(await description(u.toggle(/Marketing/)), /^Blocked: your browser sent Global Privacy Control/);
  const free = await description(u.toggle(/Analytics/));
  assert.doesNotMatch(free, /Blocked|Required|Always on/, 'an unlocked switch has no reason');
  await context.close();
});

test('show_reject_all: false hides Reject all only outside consent-required regions, as the API warns', async () => {
  const t = await gw.createTenant('no-reject', { site, config: { banner: { show_reject_all: false } } });
  const warning = t.warnings.find((w) => w.startsWith('banner.show_reject_all:'));
  assert.match(warning, /consent-required region.*always offers "Reject all"/);
  const url2 = site.page('/no-reject', sitePage(t));
  for (const [country, shown] of [['SE', true], ['BR', false]]) {
    const { page, context } = await visitor(browser, { country });
    await page.goto(url2);
    await ui(page).banner.waitFor();
    assert.equal(await ui(page).reject.count(), shown ? 1 : 0, `${country}: Reject all ${shown ? 'shown' : 'hidden'}`);
    await shot(page, `no-reject-setting-${country}-first-layer`);
    await expectNoAxeViolations(page, `${country} first layer under show_reject_all: false`);
    if (shown) {
      const [r, a] = [await ui(page).reject.boundingBox(), await ui(page).accept.boundingBox()];
      assert.deepEqual([Math.round(r.width), Math.round(r.height)], [Math.round(a.width), Math.round(a.height)], 'as prominent as Accept all');
    }
    await context.close();
  }
});
