// A visitor's way through the banner: first visit, each decision, the next visit, and being
// asked again when the choice expired or the site asks for consent again.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  consentRequests, expectNoAxeViolations, launchBrowser, ran, shot, sitePage, startGateway, startSite,
  lookedUpId, storedChoice, ui, visitor, visitorId, waitForRequests,
} from './gateway.mjs';

const SWEDEN = 'SE'; // consent required there
let gw, site, browser, tenant, url;

before(async () => {
  gw = await startGateway();
  site = await startSite();
  browser = await launchBrowser();
  tenant = await gw.createTenant('flow', { site });
  url = site.page('/', sitePage(tenant));
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

/** Opens the site as a new visitor from Sweden and waits for the banner. */
async function firstVisit(opts = {}) {
  const v = await visitor(browser, { country: SWEDEN, ...opts });
  await v.page.goto(url);
  await ui(v.page).banner.waitFor();
  return v;
}

const latestRecord = async (page, action) => tenant.waitForRecord(await visitorId(page), action);

describe('first visit', () => {
  test('shows the banner with title, text, policy links and three choices, and nothing runs', async () => {
    const { page, context, requests } = await firstVisit();
    const u = ui(page);
    const banner = u.banner;
    assert.equal(await banner.getAttribute('role'), 'dialog');
    await assert.doesNotReject(banner.getByRole('heading', { name: 'We value your privacy' }).waitFor());
    assert.match(await banner.textContent(), /We use cookies to run this site/);
    assert.equal(await banner.getByRole('link', { name: 'Privacy policy' }).getAttribute('href'), 'https://example.com/privacy');
    assert.equal(await banner.getByRole('link', { name: 'Cookie policy' }).getAttribute('href'), 'https://example.com/cookies');
    for (const b of [u.accept, u.reject, u.preferences]) assert.ok(await b.isVisible());
    assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
    assert.equal(await page.locator('iframe').getAttribute('src'), null, 'iframe waits for consent');
    assert.equal(consentRequests(requests).filter((r) => r.method === 'GET').length, 1, 'asked the gateway once');
    // Focus moved into the banner.
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'consentgate');
    await shot(page, 'first-visit-banner');
    await expectNoAxeViolations(page, 'first layer');
    await context.close();
  });

  test('Reject all is exactly as prominent as Accept all', async () => {
    const { page, context } = await firstVisit();
    const u = ui(page);
    const look = (l) => l.evaluate((e) => {
      const s = getComputedStyle(e), r = e.getBoundingClientRect();
      return { w: Math.round(r.width), h: Math.round(r.height), font: s.font, color: s.color, bg: s.backgroundColor, border: s.border };
    });
    assert.deepEqual(await look(u.reject), await look(u.accept));
    await context.close();
  });

  test('preferences start with nothing ticked but necessary, which is locked on', async () => {
    const { page, context } = await firstVisit();
    const u = ui(page);
    await u.preferences.click();
    await u.dialog.waitFor();
    assert.equal(await u.toggle(/Strictly necessary/).isChecked(), true);
    assert.equal(await u.toggle(/Strictly necessary/).isDisabled(), true);
    for (const name of [/Functional/, /Analytics/, /Marketing/]) {
      assert.equal(await u.toggle(name).isChecked(), false, `${name} not pre-ticked`);
      assert.equal(await u.toggle(name).isDisabled(), false);
    }
    assert.match(await u.dialog.textContent(), /Help us understand how visitors use the site/);
    await shot(page, 'preferences-dialog');
    await expectNoAxeViolations(page, 'preferences dialog');
    await context.close();
  });
});

describe('decisions', () => {
  test('Reject all: record with every optional category false, scripts stay inert, listed cookies deleted', async () => {
    const { page, context, requests } = await firstVisit();
    await context.addCookies(['_ga', '_ga_ABC123', '_fbp', 'lang_pref', 'unrelated'].map((name) => ({ name, value: '1', url: site.origin })));
    const changes = page.evaluate(() => new Promise((r) => document.addEventListener('consentgate:change', (e) => r(e.detail), { once: true })));
    await ui(page).reject.click();
    const detail = await changes;
    assert.deepEqual(detail.choices, { necessary: true, functional: false, analytics: false, marketing: false });
    await assert.doesNotReject(ui(page).banner.waitFor({ state: 'detached' }));

    const rec = await latestRecord(page, 'reject_all');
    assert.deepEqual({ ...rec.choices }, { necessary: true, functional: false, analytics: false, marketing: false });
    assert.equal(rec.revision, tenant.revision);
    const post = consentRequests(requests).find((r) => r.method === 'POST');
    assert.equal(JSON.parse(post.body).action, 'reject_all');

    assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
    assert.equal(await page.locator('iframe').getAttribute('src'), null);
    const names = (await context.cookies(site.origin)).map((c) => c.name).sort();
    assert.deepEqual(names.filter((n) => n !== 'cg_vid'), ['cg_consent', 'unrelated']);
    // Consent Mode v2 updated to denied.
    const update = await page.evaluate(() => window.__gtag.filter((c) => c[0] === 'consent' && c[1] === 'update').at(-1)?.[2]);
    assert.deepEqual(update && [update.analytics_storage, update.ad_storage, update.ad_user_data, update.ad_personalization], ['denied', 'denied', 'denied', 'denied']);
    assert.ok(await ui(page).settings.isVisible(), 'cookie settings entry point stays');
    await shot(page, 'after-reject');
    await context.close();
  });

  test('Accept all: record stored, marked scripts and iframe enabled, Consent Mode granted', async () => {
    const { page, context } = await firstVisit();
    await ui(page).accept.click();
    await page.waitForFunction(() => window.__marketingRan);
    assert.deepEqual(await ran(page), { functional: true, analytics: true, marketing: true });
    assert.equal(await page.locator('iframe').getAttribute('src'), 'about:blank#video');
    const rec = await latestRecord(page, 'accept_all');
    assert.deepEqual({ ...rec.choices }, { necessary: true, functional: true, analytics: true, marketing: true });
    const update = await page.evaluate(() => window.__gtag.filter((c) => c[0] === 'consent' && c[1] === 'update').at(-1)?.[2]);
    assert.deepEqual([update.analytics_storage, update.ad_storage, update.ad_user_data, update.ad_personalization], ['granted', 'granted', 'granted', 'granted']);
    assert.equal((await storedChoice(page)).rev, tenant.revision);
    await shot(page, 'after-accept');
    await expectNoAxeViolations(page, 'settings button');
    await context.close();
  });

  test('Accept all that the gateway could not store grants nothing: no record, no proof, no scripts', async () => {
    const { page, context } = await firstVisit();
    let attempted = 0;
    await page.route((u) => u.pathname.endsWith('/consent'), (route) => {
      attempted += 1;
      return route.abort('connectionrefused');
    });
    await ui(page).accept.click();
    await page.waitForFunction(() => window.__gtag?.some((c) => c[0] === 'consent' && c[1] === 'update'));
    assert.equal(attempted, 1, 'the decision was posted');
    assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
    assert.equal(await page.locator('iframe').getAttribute('src'), null);
    assert.equal(await storedChoice(page), null, 'an unrecorded acceptance is not kept on the site');
    await context.close();
  });

  test('a refusal the gateway could not store is kept, and posted again on the next page until it is', async () => {
    // Outside the region where consent is required, the gateway's defaults would apply to a
    // visitor whose "no" it never heard of: the refusal must reach it.
    const { page, context, requests } = await firstVisit();
    const refuse = (route) => route.abort('connectionrefused');
    const isConsent = (u) => u.pathname.endsWith('/consent');
    await page.route(isConsent, refuse);
    await ui(page).reject.click();
    await page.waitForFunction(() => window.__gtag?.some((c) => c[0] === 'consent' && c[1] === 'update'));
    const kept = await storedChoice(page);
    assert.equal(kept?.p, true, `kept, marked unsent: ${JSON.stringify(kept)}`);
    assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
    const vid = await visitorId(page);
    assert.deepEqual(await tenant.records(vid), [], 'nothing reached the gateway');

    await page.unroute(isConsent, refuse);
    requests.length = 0;
    await page.goto(url);
    await ui(page).settings.waitFor();
    assert.equal(await ui(page).banner.count(), 0, 'the kept refusal decides: no banner');
    const rec = await tenant.waitForRecord(vid, 'reject_all');
    assert.deepEqual({ ...rec.choices }, { necessary: true, functional: false, analytics: false, marketing: false });
    const posted = JSON.parse(consentRequests(requests).find((r) => r.method === 'POST').body);
    assert.equal(posted.config_id, tenant.configId, 'the config shown is named');
    await page.waitForFunction(() => document.cookie.includes('cg_consent') && !JSON.parse(decodeURIComponent(document.cookie.match(/(^|; )cg_consent=([^;]*)/)[2])).p);
    // Stored now: the next page posts nothing.
    requests.length = 0;
    await page.goto(url);
    await ui(page).settings.waitFor();
    assert.deepEqual(consentRequests(requests), []);
    assert.equal((await tenant.records(vid)).length, 1);
    await context.close();
  });

  test('a narrowed choice the gateway could not store is kept: the earlier grant does not come back', async () => {
    const { page, context } = await firstVisit();
    const u = ui(page);
    await u.accept.click();
    await page.waitForFunction(() => window.__analyticsRan && window.__marketingRan);
    const vid = await visitorId(page);
    await tenant.waitForRecord(vid, 'accept_all');
    const refuse = (route) => route.abort('connectionrefused');
    const isConsent = (u2) => u2.pathname.endsWith('/consent');
    await page.route(isConsent, refuse);
    // Marketing off: it ran, so the page loads again without it.
    await u.settings.click();
    await u.toggle(/Marketing/).uncheck();
    await Promise.all([page.waitForEvent('load'), u.dialogButton('Save choices').click()]);
    await page.waitForFunction(() => window.__analyticsRan);
    assert.deepEqual(await ran(page), { functional: true, analytics: true, marketing: false }, 'marketing stays off');
    const kept = await storedChoice(page);
    assert.equal(kept?.p, true, `kept, marked unsent: ${JSON.stringify(kept)}`);
    assert.equal(kept.choices.marketing, false);
    const update = await page.evaluate(() => window.__gtag.filter((c) => c[1] === 'update').at(-1)[2]);
    assert.equal(update.ad_storage, 'denied');

    // The gateway reachable again: the next page tells it.
    await page.unroute(isConsent, refuse);
    await page.goto(url);
    const rec = await tenant.waitForRecord(vid, 'custom');
    assert.deepEqual({ ...rec.choices }, { necessary: true, functional: true, analytics: true, marketing: false });
    assert.equal((await ran(page)).marketing, false);
    await context.close();
  });

  test('custom preferences: only analytics granted', async () => {
    const { page, context } = await firstVisit();
    const u = ui(page);
    await u.preferences.click();
    await u.toggle(/Analytics/).check();
    await u.dialogButton('Save choices').click();
    await page.waitForFunction(() => window.__analyticsRan);
    assert.deepEqual(await ran(page), { functional: false, analytics: true, marketing: false });
    const rec = await latestRecord(page, 'custom');
    assert.deepEqual({ ...rec.choices }, { necessary: true, functional: false, analytics: true, marketing: false });
    assert.deepEqual(await page.evaluate(() => window.consentgate.getConsent().choices), rec.choices);
    await context.close();
  });

  test('the settings button reopens the preferences with the current choice; withdrawing undoes it', async () => {
    const { page, context } = await firstVisit();
    const u = ui(page);
    await u.accept.click();
    await page.waitForFunction(() => window.__analyticsRan);
    await u.settings.click();
    await u.dialog.waitFor();
    assert.equal(await u.toggle(/Analytics/).isChecked(), true);
    await page.keyboard.press('Escape');
    await u.dialog.waitFor({ state: 'detached' });
    // Withdrawal: as easy as consent; scripts that ran cannot be stopped, so the page reloads,
    // and the cookies of the withdrawn categories are deleted.
    await context.addCookies(['_ga', '_fbp'].map((name) => ({ name, value: '1', url: site.origin })));
    await Promise.all([page.waitForEvent('load'), page.evaluate(() => window.consentgate.withdraw())]);
    const names = (await context.cookies(site.origin)).map((c) => c.name);
    assert.ok(!names.includes('_ga') && !names.includes('_fbp'), `cookies deleted: ${names}`);
    const rec = await latestRecord(page, 'withdraw');
    assert.deepEqual({ ...rec.choices }, { necessary: true, functional: false, analytics: false, marketing: false });
    await u.settings.waitFor();
    assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
    assert.equal(await u.banner.count(), 0, 'a withdrawal is a decision: no banner');
    await context.close();
  });
});

describe('later visits', () => {
  test('second visit: no banner and no request to the gateway before deciding', async () => {
    const { page, context, requests } = await firstVisit();
    await ui(page).accept.click();
    await page.waitForFunction(() => window.__analyticsRan);
    await waitForRequests(requests, (rs) => consentRequests(rs).some((r) => r.method === 'POST'), 'the consent POST');
    requests.length = 0;
    await page.goto(url);
    await page.waitForFunction(() => window.__analyticsRan && window.consentgate);
    assert.equal(await ui(page).banner.count(), 0);
    assert.deepEqual(consentRequests(requests), [], 'decided from the stored choice alone');
    await ui(page).settings.waitFor();
    await context.close();
  });

  test('an expired stored choice shows the banner again', async () => {
    // A choice kept on the site whose expiry has passed (the gateway keeps no live record of it:
    // its own record expired too). It granted everything, which must not count any more.
    const { page, context, requests } = await visitor(browser, { country: SWEDEN });
    const vid = crypto.randomUUID();
    const old = { vid, cfg: tenant.configId, rev: tenant.revision, act: 'accept_all', exp: Date.now() - 1000,
      choices: { necessary: true, functional: true, analytics: true, marketing: true } };
    await context.addCookies([{ name: 'cg_consent', value: encodeURIComponent(JSON.stringify(old)), url: site.origin }]);
    await page.goto(url);
    await ui(page).banner.waitFor();
    assert.equal(consentRequests(requests).filter((r) => r.method === 'GET').length, 1, 'asked the gateway');
    assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
    assert.equal(lookedUpId(requests), vid, 'looked up under the same visitor id');
    await ui(page).reject.click();
    await tenant.waitForRecord(vid, 'reject_all');
    await context.close();
  });

  test('a choice older than the config\'s lifetime now shows the banner again, even before its own expiry', async () => {
    // Made when the config kept choices longer (its own exp is months away), but the config now
    // keeps them 180 days (sample config), and it was made 181 days ago: shortening the lifetime
    // applies to choices already made, as on the gateway. A choice kept without its time (an
    // older banner's) is looked up again.
    const day = 864e5;
    for (const t of [Date.now() - 181 * day, undefined]) {
      const { page, context, requests } = await visitor(browser, { country: SWEDEN });
      const vid = crypto.randomUUID();
      const old = { vid, cfg: tenant.configId, rev: tenant.revision, act: 'accept_all', t, exp: Date.now() + 300 * day,
        choices: { necessary: true, functional: true, analytics: true, marketing: true } };
      await context.addCookies([{ name: 'cg_consent', value: encodeURIComponent(JSON.stringify(old)), url: site.origin }]);
      await page.goto(url);
      await ui(page).banner.waitFor();
      assert.equal(consentRequests(requests).filter((r) => r.method === 'GET').length, 1, 'asked the gateway');
      assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false }, `t: ${t}`);
      await context.close();
    }
  });

  test('a revision published with requires_reconsent shows the banner again; one without does not', async () => {
    const { page, context } = await firstVisit();
    await ui(page).reject.click();
    await ui(page).settings.waitFor();
    const before = tenant.revision;

    await tenant.publish(false);
    await page.reload();
    await ui(page).settings.waitFor();
    assert.equal(await ui(page).banner.count(), 0, 'a minor revision keeps the choice');

    await tenant.publish(true);
    await page.reload();
    await ui(page).banner.waitFor();
    await shot(page, 'reconsent-banner');
    await ui(page).accept.click();
    await page.waitForFunction(() => window.__analyticsRan);
    const rec = await latestRecord(page, 'accept_all');
    assert.equal(rec.revision, tenant.revision);
    assert.ok(tenant.revision >= before + 2);
    await context.close();
  });
});
