// consentgate.flags(): PostHog feature flags through the gateway
// (`POST /v1/tenants/{t}/analytics/posthog/flags`), only in the banners of tenants with an active
// PostHog config with `enable_feature_flags`.
//
// The first block tests the script part alone: the flags build of the banner (rendered by
// banner/render.mjs, as the gateway renders it) served by the site, with the gateway's routes
// stubbed. The second block runs against the real gateway and a local fake of PostHog's /flags;
// it needs the PostHog provider and the flags endpoint (branch h2).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { addProviders, bannerConfig, renderBanner, sampleConfig } from '../../banner/render.mjs';
import { freePort, launchBrowser, sitePage, startGateway, startSite, ui, visitor, waitForRequests } from './gateway.mjs';

let site, browser;
before(async () => {
  site = await startSite();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await site?.stop();
});

const CONFIG_ID = '0193a6f0-7c1e-7b3a-9f00-2a4c5e6f7a8b';
const CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const isFlags = (r) => r.method === 'POST' && new URL(r.url).pathname.endsWith('/analytics/posthog/flags');

/** A page whose banner is the given build, served by the site, with the gateway's routes stubbed. */
async function stubbed(name, variant, flagsAnswer) {
  const banner = renderBanner(variant.pp ? addProviders(bannerConfig(sampleConfig(), { id: CONFIG_ID }), []) : bannerConfig(sampleConfig(), { id: CONFIG_ID }), variant);
  const src = site.page(`/v1/tenants/stub-${name}/banner.js`, banner, { 'content-type': 'application/javascript; charset=utf-8' });
  const url = site.page(`/flags-${name}`, sitePage({ publicKey: 'pk_test_stub', bannerSrc: () => src }, { src }));
  const v = await visitor(browser, { country: 'SE' });
  const json = (body, status = 200) => ({ status, contentType: 'application/json', body: JSON.stringify(body) });
  await v.page.route((u) => u.pathname.includes(`/v1/tenants/stub-${name}/`) && !u.pathname.endsWith('/banner.js'), (route) => {
    const r = route.request(), path = new URL(r.url()).pathname;
    if (path.endsWith('/analytics/posthog/flags')) return flagsAnswer(route);
    if (path.endsWith('/events')) return route.fulfill(json({ results: [] }, 202));
    if (r.method() === 'POST' && path.endsWith('/consent')) {
      const b = JSON.parse(r.postData());
      return route.fulfill(json({ record_id: CONFIG_ID, visitor_id: b.visitor_id, action: b.action, choices: { necessary: true, functional: true, analytics: true, marketing: true }, revision: 1, expires_at: new Date(Date.now() + 864e5).toISOString() }, 201));
    }
    return route.fulfill(json({ decision_needed: true, consent_required: true }));
  });
  await v.page.goto(url);
  return v;
}

describe('the script part (stubbed gateway routes)', () => {
  test('flags() posts the consent-lookup id with the ingest key, the analytics id only once analytics is granted', async () => {
    const { page, context, requests } = await stubbed('ids', { flags: true },
      (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ flags: { 'new-checkout': true, pricing: 'b' }, identified: false }) }));
    await ui(page).banner.waitFor();
    assert.deepEqual(await page.evaluate(() => window.consentgate.flags()), { 'new-checkout': true, pricing: 'b' });
    const first = requests.find(isFlags);
    assert.equal(new URL(first.url).searchParams.get('key'), 'pk_test_stub', 'the ingest key, as for /events');
    assert.match(first.headers['content-type'], /^text\/plain/, 'no CORS preflight');
    const body = JSON.parse(first.body);
    assert.match(body.visitor_id, /^[0-9a-f-]{36}$/);
    assert.equal(body.anonymous_id, undefined, 'no analytics id before a choice');
    await ui(page).accept.click();
    await page.waitForFunction(() => window.consentgate.getConsent()?.choices.analytics);
    await page.evaluate(() => window.consentgate.flags());
    const second = JSON.parse(requests.filter(isFlags)[1].body);
    assert.equal(second.anonymous_id, second.visitor_id, 'the analytics id with analytics granted');
    await context.close();
  });

  test('any failure resolves to {}', async () => {
    const answers = [
      (route) => route.fulfill({ status: 502, contentType: 'application/json', body: '{"error":{"code":"bad_gateway"}}' }),
      (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<html>' }),
      (route) => route.fulfill({ status: 200, contentType: 'application/json', body: '{"flags":["x"]}' }),
      (route) => route.abort('connectionrefused'),
    ];
    let i = 0;
    const { page, context, requests } = await stubbed('errors', { flags: true }, (route) => answers[i++](route));
    for (let n = 0; n < answers.length; n++) assert.deepEqual(await page.evaluate(() => window.consentgate.flags()), {}, `answer ${n}`);
    await waitForRequests(requests, (rs) => rs.filter(isFlags).length === answers.length, 'every call');
    await context.close();
  });

  test('only the flags builds have it', async () => {
    for (const [name, variant, has] of [['default', {}, false], ['pp', { pp: true }, false], ['ppflags', { pp: true, flags: true }, true]]) {
      const { page, context } = await stubbed(name, variant, (route) => route.fulfill({ status: 500 }));
      await ui(page).banner.waitFor();
      assert.equal(await page.evaluate(() => typeof window.consentgate.flags), has ? 'function' : 'undefined', name);
      await context.close();
    }
  });
});

// Needs the PostHog provider and its flags endpoint (branch h2).
describe('against the gateway (PostHog flags endpoint)', () => {
  let gw, fake, asked = [];
  before(async () => {
    const port = await freePort();
    fake = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        asked.push({ path: req.url, body: body ? JSON.parse(body) : null });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ flags: { 'new-checkout': { enabled: true, variant: null }, pricing: { enabled: true, variant: 'b' } } }));
      });
    });
    await new Promise((r) => fake.listen(port, '127.0.0.1', r));
    fake.url = `http://127.0.0.1:${port}`;
    // Each tenant's key in its own namespace (secrets.scope = "tenant", the default).
    gw = await startGateway({ env: { CONSENTGATE__DELIVERY__ALLOW_PRIVATE_DESTINATIONS: 'true',
      CONSENTGATE_TENANT_FLAGS_ON__POSTHOG_KEY: 'phc_testkey', CONSENTGATE_TENANT_FLAGS_OFF__POSTHOG_KEY: 'phc_testkey' } });
  });
  after(async () => {
    await gw?.stop();
    await new Promise((r) => fake?.close(r) ?? r());
  });

  test('a tenant with an active PostHog config with feature flags gets flags(); others do not', async () => {
    const tenant = await gw.createTenant('flags-on', { site });
    const plain = await gw.createTenant('flags-off', { site });
    await tenant.api('POST', '/analytics/posthog/configs', {
      display_name: 'PostHog', instance_url: fake.url, status: 'active', required_category: 'analytics',
      enable_feature_flags: true, credentials: { project_api_key_ref: 'env:CONSENTGATE_TENANT_FLAGS_ON__POSTHOG_KEY' },
    }, [201]);
    await plain.api('POST', '/analytics/posthog/configs', {
      display_name: 'PostHog', instance_url: fake.url, status: 'active', required_category: 'analytics',
      credentials: { project_api_key_ref: 'env:CONSENTGATE_TENANT_FLAGS_OFF__POSTHOG_KEY' },
    }, [201]);
    // A desktop Chrome's agent: headless Chromium's own counts as a bot, never identified.
    const { page, context, requests } = await visitor(browser, { country: 'SE', headers: { 'user-agent': CHROME } });
    await page.goto(site.page('/flags-real', sitePage(tenant)));
    await ui(page).banner.waitFor();
    assert.deepEqual(await page.evaluate(() => window.consentgate.flags()), { 'new-checkout': true, pricing: 'b' });
    // The same fake also takes the page view's delivery (`/batch/`): count the flags calls only.
    const flagsAsked = () => asked.filter((a) => a.path.startsWith('/flags'));
    assert.equal(flagsAsked().length, 1);
    const lookupId = JSON.parse(requests.find(isFlags).body).visitor_id;
    assert.ok(flagsAsked()[0].body.distinct_id && flagsAsked()[0].body.distinct_id !== lookupId, 'not identified before a choice');
    await ui(page).accept.click();
    await page.waitForFunction(() => window.consentgate.getConsent()?.choices.analytics);
    const vid = await page.evaluate(() => localStorage.getItem('cg_vid'));
    assert.deepEqual(await page.evaluate(() => window.consentgate.flags()), { 'new-checkout': true, pricing: 'b' });
    assert.equal(flagsAsked().at(-1).body.distinct_id, vid, 'identified with analytics granted');

    await page.goto(site.page('/flags-plain', sitePage(plain)));
    await ui(page).banner.waitFor();
    assert.equal(await page.evaluate(() => typeof window.consentgate.flags), 'undefined', 'no flags() without enable_feature_flags');
    await context.close();
  });
});
