// The tracker in banner.js: automatic page views (also SPA navigations), outbound link clicks,
// consentgate.track(), UTM and referrer, redacted secrets, idempotency keys, retries with
// backoff, sendBeacon on page hide, and the data-no-pageview opt-out.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, sitePage, startGateway, startSite, ui, visitor, visitorId, waitForRequests } from './gateway.mjs';

let gw, site, browser, tenant;

before(async () => {
  gw = await startGateway();
  site = await startSite();
  browser = await launchBrowser();
  tenant = await gw.createTenant('tracker', { site });
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

const isEvents = (r) => r.method === 'POST' && new URL(r.url).pathname.endsWith('/events');
/** Every event the page posted (fetch batches and beacons). */
const events = (requests) => requests.filter(isEvents).flatMap((r) => { const b = JSON.parse(r.body); return b.batch || [b]; });
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('page view with the public key, consent-lookup id, UTM, referrer, redacted secrets and a fresh idempotency key', async () => {
  const url = site.page('/landing', sitePage(tenant));
  const { page, context, requests } = await visitor(browser, { country: 'SE' });
  // The gateway's answers, seen through a pass-through route (keepalive requests report no
  // response event to the page).
  const responses = [];
  await page.route((u) => u.pathname.endsWith('/events'), async (route) => {
    const res = await route.fetch();
    responses.push(res.status());
    await route.fulfill({ response: res });
  });
  await page.goto(`${url}?utm_source=news&utm_medium=email&utm_campaign=spring&token=s3cr3t&api_key=k&password=p&id=7`, { referer: 'https://ref.example/?session_token=zzz' });
  await waitForRequests(requests, (rs) => events(rs).length >= 1, 'a page view');
  const req = requests.find(isEvents);
  assert.equal(new URL(req.url).searchParams.get('key'), tenant.publicKey);
  assert.match(req.headers['content-type'], /^text\/plain/, 'no CORS preflight');
  const [pv] = events(requests);
  assert.equal(pv.event_name, 'pageview');
  assert.match(pv.visitor_id, UUID, 'the consent-lookup id');
  assert.equal(pv.anonymous_id, undefined, 'no analytics id before a choice');
  assert.equal(await visitorId(page), null, 'nothing is stored in the browser before a choice (ePrivacy Art. 5(3))');
  assert.match(pv.idempotency_key, UUID);
  // The campaign travels in page_url (the gateway reads utm_* there), not again as properties.
  assert.deepEqual(pv.event_properties, {});
  const pageUrl = new URL(pv.page_url);
  assert.equal(pageUrl.searchParams.get('token'), 'REDACTED');
  assert.equal(pageUrl.searchParams.get('api_key'), 'REDACTED');
  assert.equal(pageUrl.searchParams.get('password'), 'REDACTED');
  assert.equal(pageUrl.searchParams.get('id'), '7');
  assert.equal(pageUrl.searchParams.get('utm_source'), 'news');
  assert.ok(!JSON.stringify(pv).includes('s3cr3t') && !JSON.stringify(pv).includes('zzz'), 'no secret leaves the page');
  assert.equal(new URL(pv.referrer).searchParams.get('session_token'), 'REDACTED');
  assert.equal(pv.title, 'Test site');
  assert.ok(Date.parse(pv.occurred_at));
  await waitForRequests(responses, (r) => r.length >= 1, 'the gateway\'s answer');
  assert.ok(responses.every((s) => s === 202 || s === 200), `gateway accepted the events: ${responses}`);
  await context.close();
});

test('SPA navigations, outbound clicks and custom events, each with its own idempotency key', async () => {
  const url = site.page('/spa', sitePage(tenant));
  const { page, context, requests } = await visitor(browser, { country: 'SE' });
  await page.goto(url);
  await waitForRequests(requests, (rs) => events(rs).length >= 1, 'the first page view');
  await page.evaluate(() => history.pushState({}, '', '/spa/step-2?utm_source=app'));
  await page.evaluate(() => history.replaceState({ scroll: 1 }, '', location.href)); // same URL: not a page view
  await page.evaluate(() => window.consentgate.track('signup', { plan: 'pro' }));
  await page.locator('#out').click();
  await waitForRequests(requests, (rs) => events(rs).some((e) => e.event_name === 'outbound-link-click'), 'the outbound click');
  const all = events(requests);
  const names = all.map((e) => e.event_name);
  assert.deepEqual(names.filter((n) => n === 'pageview').length, 2, `two page views: ${names}`);
  const step2 = all.find((e) => e.page_url.includes('step-2'));
  assert.equal(step2.referrer, url, 'the SPA referrer is the previous page');
  assert.equal(new URL(step2.page_url).searchParams.get('utm_source'), 'app');
  assert.deepEqual(all.find((e) => e.event_name === 'signup').event_properties, { plan: 'pro' });
  const out = all.find((e) => e.event_name === 'outbound-link-click');
  assert.equal(new URL(out.event_properties.url).searchParams.get('session_token'), 'REDACTED');
  const keys = all.map((e) => e.idempotency_key);
  assert.equal(new Set(keys).size, keys.length, 'fresh key per event');
  await context.close();
});

test('data-no-pageview: no automatic page view, consentgate.track still works', async () => {
  const url = site.page('/no-pv', sitePage(tenant, { tag: { 'data-no-pageview': true } }));
  const { page, context, requests } = await visitor(browser, { country: 'SE' });
  await page.goto(url);
  await ui(page).banner.waitFor();
  // The positive control: the manual event goes through the same queue as a page view would
  // have (queued when the script ran), so such a page view went out before it or in its batch.
  await page.evaluate(() => window.consentgate.track('manual', {}));
  await waitForRequests(requests, (rs) => events(rs).some((e) => e.event_name === 'manual'), 'the manual event');
  assert.deepEqual(events(requests).map((e) => e.event_name), ['manual']);
  await context.close();
});

test('the tag twice on a page (hard-coded, and again through a tag manager): one banner, one page view', async () => {
  const again = `<script src="${tenant.bannerSrc()}" data-key="${tenant.publicKey}"></script>`;
  const url = site.page('/twice', sitePage(tenant, { head: again }));
  const { page, context, requests } = await visitor(browser, { country: 'SE' });
  await page.clock.install();
  await page.goto(url);
  await ui(page).banner.waitFor();
  await page.waitForLoadState('load');
  assert.equal(await page.evaluate(() => document.querySelectorAll('#consentgate').length), 1);
  // Every timer either copy could have set runs now; the control request is seen after anything
  // they posted.
  await page.clock.runFor(10_000);
  await waitForRequests(requests, (rs) => events(rs).length >= 1, 'a page view');
  await page.evaluate(() => fetch('/after-the-tracker', { method: 'POST', body: 'control' }));
  assert.ok(requests.some((r) => r.url.endsWith('/after-the-tracker')), 'the control request was seen');
  assert.deepEqual(events(requests).map((e) => e.event_name), ['pageview'], 'counted once');
  await context.close();
});

test('without data-key the tracker sends nothing (the banner still works)', async () => {
  const url = site.page('/no-key', sitePage(tenant, { tag: { 'data-key': false } }));
  const { page, context, requests } = await visitor(browser, { country: 'SE' });
  await page.clock.install();
  await page.goto(url);
  await ui(page).banner.waitFor();
  await page.evaluate(() => window.consentgate.track('x', {}));
  // Every timer the tracker could have set (batching, retries) runs now, then the page is
  // hidden (the beacon path); a request the page makes after that is seen after anything they posted.
  await page.clock.runFor(120_000);
  await page.evaluate(() => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await page.evaluate(() => fetch('/after-the-tracker', { method: 'POST', body: 'control' }));
  assert.ok(requests.some((r) => r.url.endsWith('/after-the-tracker')), 'the control request was seen');
  assert.deepEqual(requests.filter(isEvents), []);
  await context.close();
});

test('a failing gateway is retried with backoff and the same idempotency keys; nothing is counted twice', async () => {
  const url = site.page('/retry', sitePage(tenant));
  const { page, context, requests } = await visitor(browser, { country: 'SE' });
  let failures = 2;
  const attempts = [], statuses = [];
  await page.route((u) => u.pathname.endsWith('/events'), async (route) => {
    attempts.push({ at: Date.now(), keys: JSON.parse(route.request().postData()).batch.map((e) => e.idempotency_key) });
    if (failures-- > 0) return route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":{"code":"unavailable"}}' });
    const res = await route.fetch();
    statuses.push(res.status());
    return route.fulfill({ response: res });
  });
  await page.goto(url);
  await waitForRequests(statuses, (s) => s.some((x) => x < 300), 'a successful retry', 15000);
  assert.deepEqual(attempts[1].keys, attempts[0].keys, 'retried with the same keys');
  assert.deepEqual(attempts[2].keys, attempts[0].keys);
  const gap1 = attempts[1].at - attempts[0].at, gap2 = attempts[2].at - attempts[1].at;
  assert.ok(gap1 >= 900, `first retry waited (${gap1} ms)`);
  assert.ok(gap2 >= 1900, `backoff grew (${gap2} ms)`);
  // A replay of the same event is answered as a duplicate by the gateway.
  const [ev] = events(requests);
  const replay = await fetch(`${tenant.url}/events?key=${tenant.publicKey}`, {
    method: 'POST', headers: { 'content-type': 'text/plain', origin: site.origin }, body: JSON.stringify(ev),
  });
  assert.equal(replay.status, 200, 'duplicate idempotency key → 200');
  await context.close();
});

test('queued events go out with sendBeacon when the page is hidden', async () => {
  const url = site.page('/beacon', sitePage(tenant, { tag: { 'data-no-pageview': true } }));
  const { page, context, requests } = await visitor(browser, { country: 'SE' });
  await page.goto(url);
  await ui(page).banner.waitFor();
  // Queue an event, then hide the page before the tracker's batching delay runs out (as when
  // the visitor switches tab or leaves; a leaving page's requests are not observable here).
  await page.evaluate(() => {
    window.consentgate.track('leaving', { n: 1 });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await waitForRequests(requests, (rs) => events(rs).some((e) => e.event_name === 'leaving'), 'the beacon');
  const beacon = requests.find((r) => isEvents(r) && r.body.includes('leaving'));
  assert.equal(beacon.type, 'ping', 'sent with navigator.sendBeacon');
  assert.match(beacon.headers['content-type'] || '', /^text\/plain/);
  // The positive control: a later event goes through the same queue, so a copy of 'leaving' left
  // in it would go out before it or in its batch.
  await page.evaluate(() => window.consentgate.track('after', {}));
  await waitForRequests(requests, (rs) => events(rs).some((e) => e.event_name === 'after'), 'the later event');
  assert.equal(events(requests).filter((e) => e.event_name === 'leaving').length, 1, 'sent once');
  await context.close();
});

test('the queue holds at most 50 events', async () => {
  const url = site.page('/queue', sitePage(tenant, { tag: { 'data-no-pageview': true } }));
  const { page, context, requests } = await visitor(browser, { country: 'SE' });
  await page.route((u) => u.pathname.endsWith('/events'), (route) => route.abort('connectionrefused'));
  await page.goto(url);
  await ui(page).banner.waitFor();
  await page.evaluate(() => { for (let i = 0; i < 80; i++) window.consentgate.track('burst', { i }); });
  await waitForRequests(requests, (rs) => rs.some(isEvents), 'an attempt');
  const batch = JSON.parse(requests.find(isEvents).body).batch;
  assert.equal(batch.length, 50);
  assert.equal(batch[0].event_properties.i, 30, 'the oldest were dropped');
  await context.close();
});

test('after Reject all no event carries an analytics id; after Accept all events do', async () => {
  const url = site.page('/refuse', sitePage(tenant));
  // Every event a visitor's page posts once it has decided: a page view, an SPA navigation, an
  // outbound click, a custom event, and the page view of the next visit (decided from the cookie).
  const after = async (choose) => {
    const { page, context, requests } = await visitor(browser, { country: 'SE' });
    await page.goto(url);
    // The page view before the choice is posted first (it carries the lookup id only).
    await waitForRequests(requests, (rs) => events(rs).length >= 1, 'the first page view');
    await choose(ui(page)).click();
    const vid = await visitorId(page);
    const action = choose === refuse ? 'reject_all' : 'accept_all';
    await tenant.waitForRecord(vid, action);
    // The page applies the choice once the gateway's answer is in (nothing is granted before the
    // record is stored), which may be just after the record is readable: wait for that too.
    await page.waitForFunction((a) => window.consentgate.getConsent()?.action === a, action);
    const from = requests.length;
    await page.evaluate(() => history.pushState({}, '', '/refuse/step-2'));
    await page.evaluate(() => window.consentgate.track('signup', { plan: 'pro' }));
    await page.locator('#out').click();
    await waitForRequests(requests, (rs) => events(rs.slice(from)).some((e) => e.event_name === 'outbound-link-click'), 'the outbound click');
    await page.goto(url);
    await waitForRequests(requests, (rs) => events(rs.slice(from)).filter((e) => e.event_name === 'pageview').length >= 2, 'the next visit');
    const posted = events(requests.slice(from));
    await context.close();
    return { vid, posted };
  };
  const refuse = (u) => u.reject, accept = (u) => u.accept;

  const refused = await after(refuse);
  assert.deepEqual(refused.posted.map((e) => e.event_name).sort(), ['outbound-link-click', 'pageview', 'pageview', 'signup']);
  for (const e of refused.posted) {
    assert.equal(e.visitor_id, refused.vid, 'the consent-lookup id, to honour the refusal');
    assert.ok(!('anonymous_id' in e), `no analytics id after Reject all: ${JSON.stringify(e)}`);
  }
  // The positive control: the same events after Accept all carry the analytics id.
  const granted = await after(accept);
  assert.equal(granted.posted.length, 4);
  for (const e of granted.posted) assert.equal(e.anonymous_id, granted.vid, JSON.stringify(e));
});
