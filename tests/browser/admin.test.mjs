// The admin pages in a real browser: sign in (a wrong token first), the overview, delivery health
// (per day, lag) with a dead letter replayed from its button, the consent dashboard (per day, by
// country) matching the API's records, consent records search, a record's chain proof and the
// chain verification, a visitor erased from the pages — and axe-core (WCAG 2.2 AA) on every page.
// An auditor sees no form that changes anything, and their forged POST is refused. Screenshots for docs/admin.md: `UPDATE_SCREENSHOTS=1` writes them to docs/img/.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ARTIFACTS, REPO, expectNoAxeViolations, launchBrowser, sleep, startGateway } from './gateway.mjs';

const ORIGIN = 'https://shop.example';
const CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
// The documentation's screenshots are refreshed with UPDATE_SCREENSHOTS=1; otherwise they go to
// the artifacts, so a test run never changes tracked files.
const IMG = process.env.UPDATE_SCREENSHOTS ? path.join(REPO, 'docs/img') : ARTIFACTS;
let gw, browser, tenant, deadId, configId, sessionCookie;

/** A public call from the shop's pages (consent, events). */
async function fromShop(t, p, body, headers = {}) {
  const res = await fetch(t.url + p, {
    method: 'POST',
    headers: { origin: ORIGIN, 'content-type': 'application/json', 'x-test-country': 'SE', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${p} → ${res.status}: ${text}`);
  return JSON.parse(text);
}

before(async () => {
  gw = await startGateway();
  browser = await launchBrowser();
  tenant = await gw.createTenant('admin', { config: { allowed_origins: [ORIGIN] } });
  const key = await tenant.api('POST', '/ingest-keys', { kind: 'public', name: 'shop', allowed_origins: [ORIGIN] }, [201]);
  // Decisions for the dashboard: 3 accept all, 1 reject all, 1 custom, from three countries.
  const actions = ['accept_all', 'accept_all', 'reject_all', 'custom', 'accept_all'];
  const countries = ['SE', 'SE', 'DE', 'FR', 'SE'];
  for (const [i, action] of actions.entries()) {
    const body = { visitor_id: `visitor-${i}`, action, revision: tenant.revision, language: 'en' };
    if (action === 'custom') body.choices = { functional: true, analytics: true, marketing: false };
    await fromShop(tenant, '/consent', body, { 'x-test-country': countries[i] });
  }
  // A Plausible config at a loopback address, which the gateway refuses to reach by default: the
  // event's delivery is dead at once.
  const config = await tenant.api('POST', '/analytics/plausible/configs',
    { display_name: 'Plausible (unreachable)', site_id: 'shop.example', instance_url: 'http://127.0.0.1:9', status: 'active' }, [201]);
  configId = config.id;
  const ev = await fromShop(tenant, '/events', { event_name: 'pageview', page_url: `${ORIGIN}/pricing`, anonymous_id: 'visitor-0' },
    { 'x-ingest-key': key.key, 'user-agent': CHROME });
  for (let i = 0; ; i++) {
    const { items } = await tenant.api('GET', `/deliveries?status=dead&config=${configId}`);
    if (items.length) { deadId = items[0].id; break; }
    if (i > 100) throw new Error(`no dead letter within 10 s: ${JSON.stringify(await tenant.api('GET', `/events/${ev.id}`))}`);
    await sleep(100);
  }
});
after(async () => {
  await browser?.close();
  await gw?.stop();
});

const shot = async (page, name) => {
  mkdirSync(IMG, { recursive: true });
  await page.screenshot({ path: path.join(IMG, `${name}.png`), fullPage: true });
};

test('sign in, overview, replay a dead letter, dashboard; no axe violations on any page', async () => {
  // axe-core is injected as an inline script, which the pages' CSP refuses: this context bypasses
  // the CSP; the last test checks the pages under it.
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, reducedMotion: 'reduce', bypassCSP: true });
  const page = await context.newPage();
  // Console errors other than failed loads (a refused sign-in is a 401, the browser's own
  // /favicon.ico a 404); failed loads are checked per response.
  const errors = [];
  page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && errors.push(m.text()));
  const failed = [];
  page.on('response', (r) => r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico' && failed.push(`${r.status()} ${r.url()}`));

  await page.goto(`${gw.base}/admin`);
  assert.equal(new URL(page.url()).pathname, '/admin/sign-in', 'not signed in: the sign-in page');
  await expectNoAxeViolations(page, 'sign-in');
  await page.getByLabel('API token').fill('cg_wrong');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'That token was not accepted' }).waitFor();
  await expectNoAxeViolations(page, 'sign-in with an error');
  assert.deepEqual(failed.splice(0), [`401 ${gw.base}/admin/sign-in`], 'the wrong token is a 401');

  await page.getByLabel('API token').fill(tenant.adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  const cookie = (await context.cookies()).find((c) => c.name === 'cg_admin');
  assert.ok(cookie.httpOnly && cookie.sameSite === 'Strict', JSON.stringify(cookie));
  assert.match(await page.locator('main').innerText(), /Plausible \(unreachable\)/);
  await expectNoAxeViolations(page, 'overview');
  await shot(page, 'admin-overview');

  await page.getByRole('link', { name: 'Delivery health' }).click();
  await page.getByRole('heading', { name: 'Delivery health' }).waitFor();
  await expectNoAxeViolations(page, 'delivery health');
  await page.getByRole('link', { name: 'Plausible (unreachable)' }).click();
  await page.getByRole('heading', { name: 'Dead letters' }).waitFor();
  const today = new Date().toISOString().slice(0, 10);
  // Delivered, dropped, waiting, retrying, dead — the one event's delivery died today.
  const perDay = await page.locator('#per-day').getByRole('row', { name: new RegExp(`^${today}`) }).innerText();
  assert.deepEqual(perDay.split('\t').slice(1).map(Number), [0, 0, 0, 0, 1]);
  assert.match(await page.locator('#lag').innerText(), /0 delivered/);
  await expectNoAxeViolations(page, 'provider config');
  await shot(page, 'admin-delivery-health');
  await page.getByRole('button', { name: `Replay delivery ${deadId}` }).click();
  await page.getByRole('status').filter({ hasText: `Delivery ${deadId} set to be sent again` }).waitFor();
  const { items: log } = await tenant.api('GET', '/audit-log');
  assert.ok(log.some((e) => e.action === 'delivery.replay' && e.entity_id === deadId), 'replay in the audit log');
  await expectNoAxeViolations(page, 'provider config after replay');

  await page.getByRole('link', { name: 'Consent dashboard' }).click();
  await page.getByRole('link', { name: 'Last 30 days' }).click();
  await page.getByRole('heading', { name: 'Decisions per day' }).waitFor();
  const row = await page.getByRole('row', { name: new RegExp(`^${today}`) }).innerText();
  const { items: records } = await tenant.api('GET', '/consent-records?limit=500');
  const count = (a) => records.filter((r) => r.action === a && r.created_at.startsWith(today)).length;
  assert.deepEqual(row.split('\t').slice(1).map(Number), ['accept_all', 'reject_all', 'custom', 'withdraw'].map(count));
  assert.equal(await page.locator('svg.chart').count(), 4, 'four server-rendered charts');
  // By country: each row's decisions as the API's records have them.
  const byCountry = {};
  for (const r of records) byCountry[r.country] = (byCountry[r.country] ?? 0) + 1;
  const shown = {};
  for (const tr of await page.locator('#country-table tbody tr').all()) {
    const [country, decisions] = (await tr.innerText()).split('\t');
    shown[country] = Number(decisions);
  }
  assert.deepEqual(shown, byCountry);
  assert.deepEqual(byCountry, { SE: 3, DE: 1, FR: 1 });
  await expectNoAxeViolations(page, 'dashboard');
  await shot(page, 'admin-dashboard');
  await page.getByRole('link', { name: 'Consent records' }).click();
  await page.getByLabel('Action').selectOption('custom');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByRole('table').filter({ hasText: '(1 shown)' }).waitFor();
  await expectNoAxeViolations(page, 'records search');
  await page.getByRole('row').nth(1).getByRole('link').click();
  await page.getByText('the record is unaltered').waitFor();
  await expectNoAxeViolations(page, 'record with its chain proof');
  await page.goto(`${gw.base}/admin/records/verify`);
  await page.getByRole('status').filter({ hasText: 'The chain is intact: 5 record(s) checked' }).waitFor();
  await expectNoAxeViolations(page, 'chain verification');

  // Erase visitor-0 (their consent record and the event with its delivery): find, confirm, erase.
  await page.getByRole('link', { name: 'Visitors' }).click();
  await page.getByLabel('Visitor id').fill('visitor-0');
  await page.getByRole('button', { name: 'Find' }).click();
  await page.getByRole('heading', { name: 'Held about visitor-0' }).waitFor();
  assert.match(await page.locator('#held').innerText(), /Events\s+1\b/);
  await expectNoAxeViolations(page, 'visitor');
  await page.getByRole('link', { name: 'Erase this visitor…' }).click();
  await page.getByRole('button', { name: 'Erase visitor visitor-0' }).waitFor();
  await expectNoAxeViolations(page, 'visitor erase confirmation');
  await shot(page, 'admin-visitor-erase');
  await page.getByRole('button', { name: 'Erase visitor visitor-0' }).click();
  const erased = page.getByRole('status').filter({ hasText: /The visitor was erased at .*: 1 event\(s\)/ });
  await erased.waitFor();
  await expectNoAxeViolations(page, 'visitor erased');
  // The report is a page of its own (post, redirect, get): reloading it erases nothing again.
  assert.match(page.url(), /\/admin\/visitors\/erased\?hash=[0-9a-f]{64}$/);
  await page.reload();
  await erased.waitFor();
  const { items: after } = await tenant.api('GET', '/audit-log');
  assert.equal(after[0].action, 'visitor.erase');
  assert.equal(after.filter((e) => e.action === 'visitor.erase').length, 1, 'erased once');
  assert.deepEqual((await tenant.api('GET', '/consent-records?visitor_id=visitor-0')).items, [], 'the id is gone');
  await page.goto(`${gw.base}/admin/records/verify`);
  await page.getByRole('status').filter({ hasText: 'The chain is intact: 5 record(s) checked' }).waitFor();

  assert.deepEqual(errors, [], 'no console errors');
  assert.deepEqual(failed, [], 'nothing failed to load');
  sessionCookie = (await context.cookies()).find((c) => c.name === 'cg_admin');
  await context.close();
});

test('under their CSP the pages load their stylesheet and nothing is refused', async () => {
  const context = await browser.newContext();
  await context.addCookies([sessionCookie]);
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => m.type() === 'error' && !/favicon|Failed to load resource/.test(m.text()) && errors.push(m.text()));
  for (const p of ['/admin', '/admin/providers', `/admin/providers/plausible/${configId}`, '/admin/dashboard?days=90', '/admin/records', '/admin/records/verify', '/admin/visitors?visitor_id=visitor-1']) {
    const res = await page.goto(gw.base + p);
    assert.equal(res.status(), 200, p);
    assert.doesNotMatch(res.headers()['content-security-policy'], /unsafe-inline/);
    const bg = await page.evaluate(() => getComputedStyle(document.querySelector('header')).backgroundColor);
    assert.equal(bg, 'rgb(242, 244, 247)', `the stylesheet applies on ${p}`);
  }
  assert.deepEqual(errors, [], 'no CSP refusals or other console errors');
  await context.close();
});

test('an auditor sees every page without a form that changes anything; forged and token-less POSTs are refused', async () => {
  const { secret } = await tenant.api('POST', '/tokens', { name: 'auditor', role: 'auditor' }, [201]);
  const context = await browser.newContext({ bypassCSP: true });
  const page = await context.newPage();
  await page.goto(`${gw.base}/admin/sign-in`);
  await page.getByLabel('API token').fill(secret);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  assert.match(await page.locator('header').innerText(), /auditor \(read-only\)/);
  const pages = ['/admin', '/admin/providers', `/admin/providers/plausible/${configId}`, '/admin/dashboard?days=30',
    '/admin/records', '/admin/visitors?visitor_id=visitor-1'];
  for (const p of pages) {
    const res = await page.goto(gw.base + p);
    assert.equal(res.status(), 200, p);
    const actions = await page.locator('form[method="post"]').evaluateAll((fs) => fs.map((f) => new URL(f.action).pathname));
    assert.deepEqual(actions, ['/admin/sign-out'], `only sign-out on ${p}`);
    assert.equal(await page.getByRole('button', { name: /Replay|Pause|Resume|Check|Erase/ }).count(), 0, p);
    assert.equal(await page.getByRole('link', { name: /Erase/ }).count(), 0, p);
  }
  await expectNoAxeViolations(page, 'visitor (auditor)');
  // Charts render for the auditor too, with the API's numbers.
  await page.goto(`${gw.base}/admin/dashboard?days=30`);
  assert.equal(await page.locator('svg.chart').count(), 4);

  // A forged POST with the auditor's own session and CSRF token: refused, nothing changed.
  const csrf = await page.locator('form[action="/admin/sign-out"] input[name="csrf"]').inputValue();
  const forged = await context.request.post(`${gw.base}/admin/visitors/erase`, { form: { csrf, visitor_id: 'visitor-1' }, maxRedirects: 0 });
  assert.equal(forged.status(), 403);
  assert.match(await forged.text(), /Auditor tokens may only read/);
  const pause = await context.request.post(`${gw.base}/admin/providers/plausible/${configId}/pause`, { form: { csrf }, maxRedirects: 0 });
  assert.equal(pause.status(), 403);
  assert.equal((await tenant.api('GET', '/consent-records?visitor_id=visitor-1')).items.length, 1, 'not erased');
  assert.equal((await tenant.api('GET', `/analytics/plausible/configs/${configId}`)).status, 'active', 'not paused');
  await context.close();

  // An admin's session without the CSRF token (a cross-site form would have none): refused.
  const admin = await browser.newContext();
  await admin.addCookies([sessionCookie]);
  const noToken = await admin.request.post(`${gw.base}/admin/visitors/erase`, { form: { visitor_id: 'visitor-1' }, maxRedirects: 0 });
  assert.equal(noToken.status(), 403);
  assert.match(await noToken.text(), /CSRF/);
  assert.equal((await tenant.api('GET', '/consent-records?visitor_id=visitor-1')).items.length, 1, 'not erased');
  await admin.close();
});
