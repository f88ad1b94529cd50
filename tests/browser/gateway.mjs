// Fixtures for the browser tests: the real consentgate binary on 127.0.0.1 with a fresh SQLite
// database, tenants configured over the admin API (/root/contract.md), a separate "site" origin
// serving the test pages, and headless Chromium driven by playwright-core.
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../..');
export const ARTIFACTS = path.join(here, 'artifacts');
export const BIN = process.env.CONSENTGATE_BIN
  ? path.resolve(process.env.CONSENTGATE_BIN)
  : path.join(REPO, 'target/debug/consentgate');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
/** Budget for the served banner.js (gzip), from the issue. */
export const BANNER_BUDGET = 6144;

export const sampleConfig = () => JSON.parse(readFileSync(path.join(REPO, 'banner/sample-config.json'), 'utf8'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

function requireExecutable(file, what, hint) {
  try {
    accessSync(file, constants.X_OK);
  } catch {
    throw new Error(`${what} not found or not executable at ${file}. ${hint}`);
  }
}

/** Runs the binary to completion; resolves with stdout, rejects with its output on failure. */
function run(args, env) {
  return new Promise((resolve, reject) => {
    const p = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => code === 0 ? resolve(out)
      : reject(new Error(`consentgate ${args.join(' ')} exited with ${code}\n--- stdout\n${out}\n--- stderr\n${err}`)));
  });
}

/** JSON merge patch (RFC 7396): objects merge, `null` removes a key, anything else replaces. */
const deepMerge = (a, b) => {
  if (!b || typeof b !== 'object' || Array.isArray(b)) return b === undefined ? a : b;
  const o = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === null) delete o[k];
    else o[k] = a && typeof a[k] === 'object' && !Array.isArray(a[k]) ? deepMerge(a[k], v) : v;
  }
  return o;
};

/**
 * Starts `consentgate serve` on a free 127.0.0.1 port with a temporary SQLite database (`env`:
 * more variables for the gateway process).
 * Fails (never skips) when the binary is missing: the suite exists to test the real gateway.
 */
export async function startGateway({ env: extraEnv = {} } = {}) {
  requireExecutable(BIN, 'consentgate binary',
    'Build it with `cargo build` at the repository root, or point CONSENTGATE_BIN at it.');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cg-browser-'));
  const port = await freePort();
  const env = {
    ...process.env,
    CONSENTGATE__SERVER__BIND: `127.0.0.1:${port}`,
    CONSENTGATE__DATABASE__URL: `sqlite://${dir}/cg.db?mode=rwc`,
    CONSENTGATE__GEO__COUNTRY_HEADER: 'X-Test-Country',
    RUST_LOG: process.env.RUST_LOG || 'info',
    ...extraEnv,
  };
  await run(['migrate'], env);
  const proc = spawn(BIN, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  proc.stdout.on('data', (d) => (logs += d));
  proc.stderr.on('data', (d) => (logs += d));
  let exited = null;
  proc.on('exit', (code, signal) => (exited = { code, signal }));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (exited) throw new Error(`consentgate serve exited early (${JSON.stringify(exited)})\n${logs}`);
    try {
      if ((await fetch(base + '/healthz')).ok) break;
    } catch {}
    if (i > 300) throw new Error(`consentgate serve did not answer /healthz within 30 s\n${logs}`);
    await sleep(100);
  }

  const gw = {
    base, env, dir,
    get logs() { return logs; },
    /** Creates a tenant over the CLI, then its cookie consent config (published) and a public key. */
    async createTenant(slug, { site, config = {}, publish = true } = {}) {
      const out = await run(['tenant', 'create', slug], env);
      const line = out.trim().split('\n').reverse().find((l) => { try { return JSON.parse(l).admin_token; } catch { return false; } });
      if (!line) throw new Error(`tenant create printed no JSON line with admin_token:\n${out}`);
      const { admin_token: adminToken } = JSON.parse(line);
      const t = new Tenant(gw, slug, adminToken);
      const body = deepMerge(sampleConfig(), { allowed_origins: site ? [site.origin] : [], ...config });
      const created = await t.api('POST', '/analytics/cookie-consent/configs', body, [200, 201]);
      t.configId = created.id;
      t.warnings = created.warnings;
      if (publish) await t.publish(false);
      if (site) {
        const key = await t.api('POST', '/ingest-keys', { kind: 'public', name: 'site', allowed_origins: [site.origin] }, [200, 201]);
        t.publicKey = key.key;
      }
      return t;
    },
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        for (let i = 0; i < 50 && !exited; i++) await sleep(100);
        if (!exited) proc.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return gw;
}

export class Tenant {
  constructor(gw, slug, adminToken) {
    Object.assign(this, { gw, slug, adminToken });
    this.url = `${gw.base}/v1/tenants/${slug}`;
  }

  /** Admin API call; fails the test with the gateway's answer on an unexpected status. */
  async api(method, p, body, expect = [200]) {
    const res = await fetch(this.url + p, {
      method,
      headers: { authorization: `Bearer ${this.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (!expect.includes(res.status)) throw new Error(`${method} ${this.url}${p} → ${res.status}, expected ${expect}: ${text}`);
    return text ? JSON.parse(text) : null;
  }

  async publish(requiresReconsent) {
    const c = await this.api('POST', `/analytics/cookie-consent/configs/${this.configId}/publish`, { requires_reconsent: requiresReconsent });
    this.revision = c.revision;
    return c;
  }

  /** The visitor's consent records as an auditor sees them, newest first. */
  async records(visitorId) {
    const { items } = await this.api('GET', `/consent-records?visitor_id=${encodeURIComponent(visitorId)}`);
    return [...items].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  }

  /**
   * Polls until the visitor has a record with `action` (decisions are posted asynchronously) and
   * returns the newest such record. Matching on the action keeps this independent of the order
   * the API lists records in and of timestamps that tie within a second.
   */
  async waitForRecord(visitorId, action, timeout = 10000) {
    const until = Date.now() + timeout;
    for (;;) {
      const all = await this.records(visitorId);
      const found = all.find((r) => r.action === action);
      if (found) return found;
      if (Date.now() > until) throw new Error(`no ${action} record for visitor ${visitorId}; records: ${JSON.stringify(all)}`);
      await sleep(100);
    }
  }

  /** GET …/consent/{vid} as the site's page would (Origin of the site). */
  async consentState(visitorId, origin, headers = {}) {
    const res = await fetch(`${this.url}/consent/${visitorId}`, { headers: { origin, ...headers } });
    if (!res.ok) throw new Error(`GET consent → ${res.status}: ${await res.text()}`);
    return res.json();
  }

  bannerSrc() { return `${this.url}/banner.js`; }
}

/**
 * The site: a separate origin (another 127.0.0.1 port) serving the pages under test, as a
 * customer's website would. Pages are registered per test with `site.page(path, html)`.
 */
export async function startSite({ proxy } = {}) {
  const pages = new Map();
  const requests = [];
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, origin);
    requests.push({ method: req.method, path: url.pathname, cookie: req.headers.cookie || '' });
    // The gateway under the site's own origin: /cg/… is passed to it, as a reverse proxy would
    // (banner/README.md, "Deploying under the site's domain").
    if (proxy && url.pathname.startsWith('/cg/')) {
      const target = new URL(req.url.slice(3), proxy);
      const up = http.request(target, { method: req.method, headers: { ...req.headers, host: target.host, 'x-forwarded-host': req.headers.host } }, (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      up.on('error', () => { res.writeHead(502); res.end(); });
      return req.pipe(up);
    }
    const page = pages.get(url.pathname);
    if (!page) { res.writeHead(url.pathname === '/favicon.ico' ? 204 : 404); return res.end(); }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', ...page.headers });
    res.end(page.html);
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    origin, port, requests,
    page(p, html, headers = {}) { pages.set(p, { html, headers }); return origin + p; },
    stop: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
}

const attr = (v) => String(v).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

/**
 * A typical site page: the banner tag, scripts marked for each category (they set
 * window.__<category>Ran), an iframe waiting for marketing consent, an outbound link, and a
 * gtag stub that records Consent Mode calls in window.__gtag.
 */
export function sitePage(tenant, { tag = {}, nonce, head = '', body = '', gtag = true, src = tenant.bannerSrc() } = {}) {
  const n = nonce ? ` nonce="${nonce}"` : '';
  const attrs = Object.entries({ 'data-key': tenant.publicKey, ...tag })
    .filter(([, v]) => v !== false && v !== undefined)
    .map(([k, v]) => (v === true ? ` ${k}` : ` ${k}="${attr(v)}"`)).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Test site</title>
${gtag ? `<script${n}>window.__gtag = []; window.dataLayer = window.dataLayer || []; function gtag() { window.__gtag.push([].slice.call(arguments)); dataLayer.push(arguments); }</script>` : ''}
<script src="${attr(src)}"${attrs} async></script>
${head}
</head><body>
<main>
  <h1>Test site</h1>
  <p>Content of the page. <a id="out" href="http://localhost:9/outbound?session_token=abc123&amp;x=1">An outbound link</a></p>
  ${body}
  <iframe title="Embedded video" data-src="about:blank#video" data-consent-category="marketing" width="200" height="80"></iframe>
</main>
<script type="text/plain" data-consent-category="functional"${n}>window.__functionalRan = true;</script>
<script type="text/plain" data-consent-category="analytics"${n}>window.__analyticsRan = true;</script>
<script type="text/plain" data-consent-category="marketing"${n}>window.__marketingRan = true;</script>
</body></html>`;
}

export function launchBrowser() {
  requireExecutable(CHROMIUM, 'Chromium', 'Install it with `apt-get install -y chromium`, or set CHROMIUM.');
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A fresh visitor: new browser context (own cookies and storage) and page, with every request
 * the page makes recorded in `requests`. Requests leaving 127.0.0.1 are answered locally so a
 * test never reaches the network.
 */
export async function visitor(browser, { locale = 'en-US', headers, viewport = { width: 1280, height: 800 }, init, country } = {}) {
  const context = await browser.newContext({ locale, viewport, reducedMotion: 'reduce', extraHTTPHeaders: headers });
  await context.route((url) => !['127.0.0.1'].includes(url.hostname) && url.protocol.startsWith('http'),
    (route) => route.fulfill({ status: 204, body: '' }));
  if (country) {
    // The gateway trusts X-Test-Country in the tests (CONSENTGATE__GEO__COUNTRY_HEADER); it is
    // added below the page, so it neither shows to the page nor triggers a CORS preflight.
    await context.route((url) => url.pathname.startsWith('/v1/'), (route) =>
      route.continue({ headers: { ...route.request().headers(), 'x-test-country': country } }));
  }
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  const requests = [];
  page.on('request', (r) => requests.push({ method: r.method(), url: r.url(), body: r.postData(), headers: r.headers(), type: r.resourceType() }));
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  return { context, page, requests, errors };
}

/** The banner's elements live in an open shadow root under #consentgate; playwright locators pierce it. */
export const ui = (page) => ({
  /** The shadow host: it carries the banner's `lang` and `dir`. */
  host: page.locator('#consentgate'),
  banner: page.locator('#consentgate .bn'),
  dialog: page.locator('#consentgate dialog'),
  accept: page.locator('#consentgate .bn').getByRole('button', { name: /accept all|godkänn alla/i }),
  reject: page.locator('#consentgate .bn').getByRole('button', { name: /reject all|avvisa alla/i }),
  preferences: page.locator('#consentgate .bn').getByRole('button', { name: /preferences|inställningar/i }),
  settings: page.locator('#consentgate .fab'),
  toggle: (name) => page.locator('#consentgate dialog').getByRole('switch', { name }),
  dialogButton: (name) => page.locator('#consentgate dialog').getByRole('button', { name }),
});

/** The consent-lookup id the banner stored; null until the visitor decides (nothing is stored before). */
export const visitorId = (page) => page.evaluate(() => localStorage.getItem('cg_vid'));
/** The consent-lookup id the banner looked the visitor up under (`GET …/consent/{id}`), before any choice. */
export const lookedUpId = (requests) =>
  decodeURIComponent(new URL(requests.find((r) => r.method === 'GET' && /\/consent\/[^/]+$/.test(new URL(r.url).pathname)).url).pathname.split('/').pop());
/** The choice the banner kept on the site: its first-party `cg_consent` cookie, or null. */
export const storedChoice = (page) => page.evaluate(() => {
  const c = document.cookie.match(/(^|; )cg_consent=([^;]*)/);
  return c ? JSON.parse(decodeURIComponent(c[2])) : null;
});
export const ran = (page) => page.evaluate(() => ({
  functional: !!window.__functionalRan, analytics: !!window.__analyticsRan, marketing: !!window.__marketingRan,
}));
export const consentRequests = (requests) => requests.filter((r) => /\/consent(\/|$|\?)/.test(new URL(r.url).pathname));

export async function shot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false });
}

const axeSource = readFileSync(path.join(here, 'node_modules/axe-core/axe.min.js'), 'utf8');

/** Runs axe-core in the page; resolves with every violation (id, impact, targets). */
export async function axeViolations(page) {
  await page.addScriptTag({ content: axeSource });
  return page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(' ')) })));
}

/** Runs axe-core in the page and throws with every violation (id, impact, targets). */
export async function expectNoAxeViolations(page, label) {
  const violations = await axeViolations(page);
  if (violations.length) throw new Error(`axe-core found ${violations.length} violation(s) (${label}):\n${JSON.stringify(violations, null, 2)}`);
}

/** Waits until `predicate(requests)` holds or fails with what was seen. */
export async function waitForRequests(requests, predicate, what, timeout = 10000) {
  const until = Date.now() + timeout;
  while (!predicate(requests)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; requests seen:\n${requests.map((r) => `${r.method} ${r.url}`).join('\n')}`);
    await sleep(50);
  }
}

export { sleep };
