// Per-provider choices (issue 10): with the consent config's `per_provider_choices`, the
// preferences list each provider config under its category (name, what it receives, its privacy
// policy) with its own switch; the record and the gateway's decisions follow those switches; a
// provider config added later makes the banner ask again. The default banner has none of it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  expectNoAxeViolations, launchBrowser, shot, sitePage, sleep, startGateway, startSite, storedChoice, ui, visitor,
  visitorId, waitForRequests,
} from './gateway.mjs';

let gw, site, browser, tenant, plausible, umami;
// Nothing listens there, and the gateway refuses private destinations by default: deliveries
// never leave the machine. The decisions are what these tests look at.
const NOWHERE = 'http://127.0.0.1:9';
const CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';

before(async () => {
  gw = await startGateway();
  site = await startSite();
  browser = await launchBrowser();
  tenant = await gw.createTenant('per-provider', { site, config: { per_provider_choices: true } });
  plausible = await tenant.api('POST', '/analytics/plausible/configs', {
    display_name: 'Plausible', site_id: '127.0.0.1', instance_url: NOWHERE, status: 'active',
    privacy_policy_url: 'https://plausible.io/privacy',
  }, [201]);
  umami = await tenant.api('POST', '/analytics/umami/configs', {
    display_name: 'Umami Cloud', website_id: '5b4b1a52-2f46-4e4a-9a0c-2b7c5a0a1f11', instance_url: NOWHERE,
    status: 'active', required_category: 'analytics',
  }, [201]);
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

/** Waits until the async `check` holds. */
async function until(check, what, timeout = 10000) {
  const end = Date.now() + timeout;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${typeof what == 'function' ? what() : what}`);
    await sleep(50);
  }
}

/** The decisions the gateway answered for the page's event posts (seen through a pass-through route). */
async function decisionsOf(page) {
  const answers = [];
  await page.route((u) => u.pathname.endsWith('/events'), async (route) => {
    const res = await route.fetch();
    answers.push(await res.json());
    await route.fulfill({ response: res });
  });
  return answers;
}
const reasonFor = (answers, config) =>
  answers.flatMap((a) => a.results || [a]).flatMap((a) => a.decisions || []).filter((d) => d.config_id === config.id).map((d) => d.reason);

describe('per-provider choices', () => {
  test('the preferences list each provider under its category with a switch, a description and its policy', async () => {
    const url = site.page('/pp-list', sitePage(tenant));
    const { page, context, errors } = await visitor(browser, { country: 'SE' });
    await page.goto(url);
    const u = ui(page);
    await u.preferences.click();
    await u.dialog.waitFor();
    // Cookie-free Plausible is listed under analytics (it identifies visitors only with it).
    const analytics = page.locator('#consentgate dialog .ct').filter({ has: page.getByRole('switch', { name: 'Analytics', exact: true }) });
    await analytics.getByRole('switch', { name: 'Plausible' }).waitFor();
    await analytics.getByRole('switch', { name: 'Umami Cloud' }).waitFor();
    assert.equal(await page.locator('#consentgate dialog .pv').count(), 2, 'two provider configs on offer');
    assert.equal(await u.toggle('Plausible').isChecked(), false, 'nothing pre-ticked where consent is required');
    const plausibleRow = page.locator('#consentgate dialog .pv').filter({ has: page.getByRole('switch', { name: 'Plausible' }) });
    assert.match(await plausibleRow.innerText(), /without cookies/);
    assert.equal(await plausibleRow.getByRole('link').getAttribute('href'), 'https://plausible.io/privacy');
    assert.equal(await page.locator('#consentgate dialog .pv').filter({ has: page.getByRole('switch', { name: 'Umami Cloud' }) }).getByRole('link').count(), 0, 'no policy link without one');
    await shot(page, 'per-provider-preferences');
    await expectNoAxeViolations(page, 'per-provider preferences');
    // The category's switch sets its providers; a provider switched on switches its category on.
    await u.toggle('Analytics').check();
    assert.equal(await u.toggle('Umami Cloud').isChecked(), true);
    await u.toggle('Analytics').uncheck();
    assert.equal(await u.toggle('Plausible').isChecked(), false);
    await u.toggle('Plausible').check();
    assert.equal(await u.toggle('Analytics').isChecked(), true);
    assert.deepEqual(errors, []);
    await context.close();
  });

  test('allowing Plausible and refusing Umami within analytics: recorded, kept on the site, enforced by the gateway', async () => {
    const url = site.page('/pp-choose', sitePage(tenant));
    // A desktop Chrome's agent: headless Chromium's own counts as a bot (denied:bot for all).
    const { page, context, requests } = await visitor(browser, { country: 'SE', headers: { 'user-agent': CHROME } });
    const answers = await decisionsOf(page);
    await page.goto(url);
    const u = ui(page);
    await u.preferences.click();
    await u.toggle('Plausible').check();
    assert.equal(await u.toggle('Umami Cloud').isChecked(), false);
    await u.dialogButton(/save/i).click();
    const vid = await visitorId(page);
    const record = await tenant.waitForRecord(vid, 'custom');
    assert.equal(record.choices.analytics, true);
    assert.deepEqual(record.provider_choices.providers, { [plausible.id]: true, [umami.id]: false });
    assert.equal(record.canonical_version, 2);
    const post = requests.find((r) => r.method === 'POST' && new URL(r.url).pathname.endsWith('/consent'));
    assert.deepEqual(JSON.parse(post.body).providers, { [plausible.id]: true, [umami.id]: false });
    await until(() => storedChoice(page), 'the stored choice');
    const stored = await storedChoice(page);
    assert.equal(stored.off, record.provider_choices.offer, 'the offer chosen on is kept with the choice');
    assert.deepEqual(stored.pc, record.provider_choices.providers);
    assert.deepEqual((await page.evaluate(() => window.consentgate.getConsent())).providers, stored.pc);
    // The gateway decides per provider: Plausible with identity, Umami not at all.
    await page.evaluate(() => window.consentgate.track('after-choice', {}));
    await until(() => reasonFor(answers, umami).includes('denied:provider_refused'), () => `the decision for the event: ${JSON.stringify(answers)}`);
    assert.ok(reasonFor(answers, umami).includes('denied:provider_refused'), JSON.stringify(answers));
    assert.ok(reasonFor(answers, plausible).includes('consent_granted:analytics'), JSON.stringify(answers));

    // Reopened, the preferences show the switches as chosen.
    await u.settings.click();
    assert.equal(await u.toggle('Plausible').isChecked(), true);
    assert.equal(await u.toggle('Umami Cloud').isChecked(), false);
    await context.close();
  });

  test('a provider config added after the choice: the banner asks again and lists it', async () => {
    const url = site.page('/pp-added', sitePage(tenant));
    const { page, context, requests } = await visitor(browser, { country: 'SE' });
    await page.goto(url);
    const u = ui(page);
    await u.preferences.click();
    await u.toggle('Plausible').check();
    await u.dialogButton(/save/i).click();
    const vid = await visitorId(page);
    await tenant.waitForRecord(vid, 'custom');
    await until(() => storedChoice(page), 'the stored choice');
    // Same offer: the next page decides without asking the gateway.
    const before = requests.length;
    await page.goto(url);
    await u.settings.waitFor();
    assert.equal(requests.slice(before).filter((r) => /\/consent\//.test(r.url)).length, 0, 'no lookup while the offer is the same');

    const added = await tenant.api('POST', '/analytics/umami/configs', {
      display_name: 'Umami EU', website_id: '6c5c2b63-3f57-4f5b-8b1d-3c8d6b1b2a22', instance_url: NOWHERE,
      status: 'active', required_category: 'analytics',
    }, [201]);
    await page.goto(url);
    await u.banner.waitFor();
    const state = await tenant.consentState(vid, site.origin);
    assert.equal(state.reason, 'offer_changed');
    await u.preferences.click();
    await u.toggle('Umami EU').waitFor();
    assert.equal(await u.toggle('Plausible').isChecked(), true, 'the earlier choice is kept in the preferences');
    await u.toggle('Umami EU').check();
    await u.dialogButton(/save/i).click();
    await until(async () => (await tenant.records(vid)).length >= 2, 'the second record');
    const [latest] = await tenant.records(vid);
    assert.equal(latest.provider_choices.providers[added.id], true);
    assert.equal((await tenant.consentState(vid, site.origin)).decision_needed, false);
    // Back to two providers for the other tests.
    await tenant.api('DELETE', `/analytics/umami/configs/${added.id}`, null, [200]);
    await context.close();
  });
});

test('the default banner has no per-provider rows, whatever provider configs the tenant has', async () => {
  const plain = await gw.createTenant('per-category', { site });
  await plain.api('POST', '/analytics/umami/configs', {
    display_name: 'Umami Cloud', website_id: '5b4b1a52-2f46-4e4a-9a0c-2b7c5a0a1f11', instance_url: NOWHERE,
    status: 'active', required_category: 'analytics',
  }, [201]);
  const url = site.page('/pp-default', sitePage(plain));
  const { page, context } = await visitor(browser, { country: 'SE' });
  await page.goto(url);
  const u = ui(page);
  await u.preferences.click();
  await u.dialog.waitFor();
  assert.equal(await page.locator('#consentgate dialog [role=switch]').count(), 4, 'one switch per category');
  assert.equal(await page.locator('#consentgate dialog .pv').count(), 0);
  const served = await (await fetch(plain.bannerSrc())).text();
  assert.ok(!served.includes('"providers"') && !served.includes('.pv{'), 'nothing of it in the script');
  await context.close();
});
