// How the site's server learns the visitor's consent-lookup id: from the banner's first-party
// `cg_consent` cookie (its `vid`), in every deployment. The gateway's own `cg_vid` cookie reaches
// the site only when the gateway is served under the site's origin (a reverse-proxy path);
// cross-origin it is never stored, since the banner's requests carry no credentials.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, sitePage, startGateway, startSite, storedChoice, ui, visitor, visitorId } from './gateway.mjs';

let gw, site, browser;

before(async () => {
  gw = await startGateway();
  site = await startSite();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

/** The cookies the site's server received with its last request for `path`. */
const cookiesAt = (s, path) => Object.fromEntries(s.requests.filter((r) => r.path === path).at(-1).cookie.split(/;\s*/).filter(Boolean)
  .map((c) => [c.slice(0, c.indexOf('=')), decodeURIComponent(c.slice(c.indexOf('=') + 1))]));

async function decideAndRevisit(s, t, src) {
  const { page, context } = await visitor(browser, { country: 'SE' });
  await page.goto(s.page('/article', sitePage(t, { src })));
  await ui(page).reject.click();
  await ui(page).settings.waitFor();
  const vid = await visitorId(page);
  await t.waitForRecord(vid, 'reject_all');
  await page.waitForFunction(() => /cg_consent=/.test(document.cookie));
  s.page('/next', '<!doctype html><title>Next</title><p>The site\'s server reads the cookies of this request.</p>');
  await page.goto(s.origin + '/next');
  const sent = cookiesAt(s, '/next');
  const stored = await storedChoice(page);
  await context.close();
  return { vid, sent, stored };
}

test('cross-origin: the site\'s server reads the consent-lookup id from cg_consent; the gateway\'s cg_vid never reaches it', async () => {
  const t = await gw.createTenant('cross', { site });
  const { vid, sent, stored } = await decideAndRevisit(site, t);
  assert.ok(sent.cg_consent, `cg_consent sent to the site: ${JSON.stringify(sent)}`);
  const choice = JSON.parse(sent.cg_consent);
  assert.equal(choice.vid, vid, 'the id the gateway keeps the record under');
  assert.deepEqual(choice, stored);
  assert.equal(choice.choices.analytics, false);
  assert.equal(sent.cg_vid, undefined, 'the gateway\'s cookie belongs to the gateway\'s origin');
  // The id is the one to ask the gateway with.
  const state = await t.consentState(vid, site.origin);
  assert.equal(state.decision_needed, false);
  assert.equal(state.action, 'reject_all');
});

test('same origin behind a reverse-proxy path: the banner works unchanged and the site also gets the gateway\'s cg_vid', async () => {
  const proxied = await startSite({ proxy: gw.base });
  try {
    const t = await gw.createTenant('same', { site: proxied });
    const src = `${proxied.origin}/cg/v1/tenants/same/banner.js`;
    const { vid, sent } = await decideAndRevisit(proxied, t, src);
    assert.equal(JSON.parse(sent.cg_consent).vid, vid);
    assert.equal(sent.cg_vid, vid, `the gateway's first-party cookie names the same visitor: ${JSON.stringify(sent)}`);
    assert.ok(proxied.requests.some((r) => r.method === 'POST' && r.path === '/cg/v1/tenants/same/consent'), 'the decision went through the site\'s origin');
  } finally {
    await proxied.stop();
  }
});
