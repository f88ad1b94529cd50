// How the gateway serves the banner (size budget, gzip, ETag, no config → 404), the banner under
// a strict Content-Security-Policy with a nonce, and the demo page.
import assert from 'node:assert/strict';
import http from 'node:http';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import { BANNER_BUDGET, launchBrowser, ran, shot, sitePage, startGateway, startSite, ui, visitor, visitorId } from './gateway.mjs';

let gw, site, browser, tenant;

before(async () => {
  gw = await startGateway();
  site = await startSite();
  browser = await launchBrowser();
  tenant = await gw.createTenant('served', { site });
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

/** A raw GET (no transparent decompression), so the bytes on the wire can be counted. */
const rawGet = (url, headers = {}) => new Promise((resolve, reject) => {
  http.get(url, { headers }, (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
  }).on('error', reject);
});

test(`banner.js is served gzip-compressed within the ${BANNER_BUDGET} B budget, with an ETag`, async () => {
  const res = await rawGet(tenant.bannerSrc(), { 'accept-encoding': 'gzip' });
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /javascript/);
  assert.equal(res.headers['content-encoding'], 'gzip');
  assert.ok(res.body.length <= BANNER_BUDGET, `served ${res.body.length} B gzip, budget ${BANNER_BUDGET} B`);
  const source = gunzipSync(res.body).toString();
  assert.doesNotMatch(source, /<\/script/i, 'nothing that could end an inline <script>');
  assert.doesNotMatch(source, /\beval\(|new Function|innerHTML|outerHTML|insertAdjacentHTML|document\.write|setAttribute\(\s*["']on/, 'CSP-friendly source');
  const etag = res.headers.etag;
  assert.ok(etag, 'ETag header');
  const again = await rawGet(tenant.bannerSrc(), { 'accept-encoding': 'gzip', 'if-none-match': etag });
  assert.equal(again.status, 304);
});

test('banner.js answers 404 JSON when the tenant has no active config', async () => {
  const t = await gw.createTenant('unpublished', { site, publish: false });
  const res = await fetch(t.bannerSrc());
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.code, 'not_found');
});

test('works under a strict CSP: nonce on the tag styles the banner, marked scripts run with the nonce, no violation', async () => {
  const nonce = 'c2VjcmV0LW5vbmNl';
  const csp = `default-src 'self'; script-src 'nonce-${nonce}' ${gw.base}; style-src 'nonce-${nonce}'; connect-src ${gw.base}; img-src 'self'; object-src 'none'; base-uri 'none'`;
  const url = site.page('/csp', sitePage(tenant, { nonce, tag: { nonce, 'data-nonce': nonce } }), { 'content-security-policy': csp });
  const { page, context, errors } = await visitor(browser, {
    country: 'SE',
    init: () => { window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`)); },
  });
  await page.goto(url);
  const u = ui(page);
  await u.banner.waitFor();
  const look = await u.banner.evaluate((e) => ({ position: getComputedStyle(e).position, radius: getComputedStyle(e).borderRadius }));
  assert.deepEqual(look, { position: 'fixed', radius: '16px' }, 'the stylesheet applied');
  assert.equal(await u.accept.evaluate((e) => getComputedStyle(e).backgroundColor), 'rgb(26, 86, 219)', 'colours applied');
  await shot(page, 'csp-strict-banner');
  await u.accept.click();
  await page.waitForFunction(() => window.__analyticsRan);
  assert.deepEqual(await ran(page), { functional: true, analytics: true, marketing: true });
  await tenant.waitForRecord(await visitorId(page), 'accept_all');
  assert.deepEqual(await page.evaluate(() => window.__csp), [], 'no CSP violation');
  assert.deepEqual(errors, []);
  await context.close();
});

test('consent requests are CORS-simple (text/plain, no custom headers) and carry no credentials', async () => {
  const url = site.page('/simple', sitePage(tenant));
  const { page, context, requests } = await visitor(browser, { country: 'SE' });
  await page.goto(url);
  await ui(page).reject.click();
  await ui(page).settings.waitFor();
  const api = requests.filter((r) => r.url.startsWith(gw.base) && !r.url.endsWith('/banner.js'));
  assert.ok(api.length >= 2);
  for (const r of api) {
    if (r.method === 'POST') assert.match(r.headers['content-type'], /^text\/plain/, r.url);
    assert.equal(r.headers.cookie, undefined, `no cookie sent to the gateway: ${r.url}`);
    const custom = Object.keys(r.headers).filter((h) => /^x-/i.test(h));
    assert.deepEqual(custom, [], r.url);
  }
  await context.close();
});

test('the demo page at /demo shows the banner and two marked scripts that run only after consent', async () => {
  const demo = await gw.createTenant('demo', { site: { origin: gw.base } });
  const { page, context } = await visitor(browser, { country: 'SE' });
  const res = await page.goto(`${gw.base}/demo`);
  assert.equal(res.status(), 200);
  const u = ui(page);
  await u.banner.waitFor();
  assert.equal(await page.locator('script[type="text/plain"][data-consent-category]').count(), 2);
  assert.equal(await page.locator('script[src*="/v1/tenants/demo/banner.js"]').getAttribute('data-key'), demo.publicKey);
  assert.deepEqual(await ran(page), { functional: false, analytics: false, marketing: false });
  await shot(page, 'demo-first-visit');
  await u.preferences.click();
  await u.toggle(/Analytics/).check();
  await u.dialogButton('Save choices').click();
  await page.waitForFunction(() => window.__analyticsRan);
  assert.equal(await page.evaluate(() => !!window.__marketingRan), false);
  assert.match(await page.locator('#analytics-status').textContent(), /^ran/);
  assert.match(await page.locator('#marketing-status').textContent(), /^not run/);
  await shot(page, 'demo-analytics-only');
  // The page's own "Cookie settings" button (data-consentgate-settings) opens the preferences.
  await page.locator('main button[data-consentgate-settings]').click();
  await u.dialog.waitFor();
  assert.equal(await u.toggle(/Analytics/).isChecked(), true);
  await page.keyboard.press('Escape');
  await u.dialog.waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => document.activeElement.hasAttribute('data-consentgate-settings')), true, 'focus returns to the button');
  await context.close();
});

test('brotli is smaller than gzip; each encoding has its own ETag and answers 304 for its own only', async () => {
  const variants = {};
  for (const [name, accept] of [['br', 'gzip, deflate, br'], ['gzip', 'gzip'], ['identity', 'identity']]) {
    const res = await rawGet(tenant.bannerSrc(), { 'accept-encoding': accept });
    assert.equal(res.status, 200, name);
    assert.equal(res.headers['content-encoding'], name === 'identity' ? undefined : name, name);
    assert.match(res.headers.vary || '', /accept-encoding/i, `${name}: Vary`);
    const text = name === 'br' ? brotliDecompressSync(res.body).toString() : name === 'gzip' ? gunzipSync(res.body).toString() : res.body.toString();
    variants[name] = { accept, etag: res.headers.etag, size: res.body.length, text };
  }
  assert.equal(variants.br.text, variants.identity.text, 'brotli decodes to the script');
  assert.equal(variants.gzip.text, variants.identity.text, 'gzip decodes to the script');
  assert.ok(variants.br.size < variants.gzip.size, `brotli ${variants.br.size} B < gzip ${variants.gzip.size} B`);
  assert.equal(new Set(Object.values(variants).map((v) => v.etag)).size, 3, JSON.stringify(variants, ['etag']));
  for (const [name, v] of Object.entries(variants)) {
    const same = await rawGet(tenant.bannerSrc(), { 'accept-encoding': v.accept, 'if-none-match': v.etag });
    assert.equal(same.status, 304, `${name}: its own ETag`);
    assert.equal(same.headers.etag, v.etag);
    assert.equal(same.body.length, 0);
    for (const [other, o] of Object.entries(variants)) {
      if (other === name) continue;
      const res = await rawGet(tenant.bannerSrc(), { 'accept-encoding': o.accept, 'if-none-match': v.etag });
      assert.equal(res.status, 200, `${name}'s ETag must not validate the ${other} representation`);
    }
  }
});
