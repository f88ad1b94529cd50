// consentgate banner: consent UI + a small tracker. The gateway wraps this file in an IIFE that
// defines CG_CONFIG (the banner config) and CG_CSS (banner.css as a string): see README.md.
// CSP-friendly: no eval, no inline handlers, no innerHTML. Every config text reaches the page
// through DOM APIs (text nodes), so HTML in a text is shown as text.
const C = CG_CONFIG, w = window, d = document, n = navigator, KEY = 'cg_consent';
const S = d.currentScript || d.querySelector('script[src*="/banner.js"]'), ds = S.dataset;
const API = S.src.replace(/\/banner\.js([?#].*)?$/, ''); // …/v1/tenants/{t}, origin of the tag
const OPT = ['functional', 'analytics', 'marketing'];
const CATS = ['necessary', ...OPT].filter(k => C.categories[k] && C.categories[k].enabled !== false);
const T = C.texts || {}, DEF_L = C.default_language;
const DEF = { privacy_policy: 'Privacy policy', cookie_policy: 'Cookie policy', close: 'Close',
  always_on: 'Always on', signal_denied: 'Off: your browser asks not to be tracked' };

let ls; try { ls = w.localStorage } catch (e) {}
const lget = k => { try { return ls.getItem(k) } catch (e) {} };
const lset = (k, v) => { try { ls.setItem(k, v) } catch (e) {} };
const uuid = () => crypto.randomUUID ? crypto.randomUUID()
  : '10000000-1000-4000-8000-100000000000'.replace(/[018]/g, c => (c ^ crypto.getRandomValues(new Uint8Array(1))[0] & 15 >> c / 4).toString(16));
const ready = f => d.readyState == 'loading' ? d.addEventListener('DOMContentLoaded', f) : f();

// Visitor's language: first of navigator.languages with texts (exact, then primary subtag).
const L = (() => {
  const ks = Object.keys(T);
  for (let l of n.languages || [n.language]) {
    l = String(l).toLowerCase();
    const k = ks.find(x => x.toLowerCase() == l) || ks.find(x => x.toLowerCase() == l.split('-')[0]);
    if (k) return k;
  }
  return DEF_L;
})();
const tx = k => (T[L] || {})[k] || (T[DEF_L] || {})[k] || DEF[k] || '';
const ctx = (k, f, g) => ((T[L] || {}).categories || {})[k]?.[f] || C.categories[k][g] || '';

// Signals. GPC always denies marketing (CCPA regs § 7025); with respect_do_not_track, DNT or GPC
// deny every non-necessary category. The gateway's view of the headers is merged in later.
const sig = { gpc: n.globalPrivacyControl === true, dnt: (n.doNotTrack || w.doNotTrack) == '1' };
const blocked = k => k != 'necessary' && (C.respect_do_not_track && (sig.dnt || sig.gpc) || sig.gpc && k == 'marketing');
const eff = c => { const o = { necessary: true }; OPT.forEach(k => o[k] = !!(c && c[k] && CATS.includes(k) && !blocked(k))); return o };

// Google Consent Mode v2: region-aware defaults now, before any tag fires; updates on decisions.
const dl = w.dataLayer = w.dataLayer || [];
function gtag() { typeof w.gtag == 'function' ? w.gtag.apply(w, arguments) : dl.push(arguments) }
const g = b => b ? 'granted' : 'denied';
const cm = c => ({ ad_storage: g(c.marketing), ad_user_data: g(c.marketing), ad_personalization: g(c.marketing),
  analytics_storage: g(c.analytics), functionality_storage: g(c.functional), personalization_storage: g(c.functional), security_storage: 'granted' });
const defaults = {}; CATS.forEach(k => defaults[k] = C.categories[k].default_accepted);
const regions = C.consent_required_regions || [];
if (C.geo_targeting_enabled && regions.length) gtag('consent', 'default', { ...cm({}), region: regions, wait_for_update: 500 });
gtag('consent', 'default', { ...cm(C.geo_targeting_enabled ? eff(defaults) : {}), wait_for_update: 500 });

// Site-side record {vid, cfg, rev, choices, exp, act}: cookie (readable by the site's server) + localStorage.
const load = () => { try { return JSON.parse(decodeURIComponent((d.cookie.match(/(?:^|; )cg_consent=([^;]*)/) || [])[1] || '') || lget(KEY)) } catch (e) {} };
const save = s => {
  const v = JSON.stringify(s);
  d.cookie = `${KEY}=${encodeURIComponent(v)}; Path=/; Max-Age=${Math.round((s.exp - Date.now()) / 1e3)}; SameSite=Lax${location.protocol == 'https:' ? '; Secure' : ''}`;
  lset(KEY, v);
};
const valid = s => s && s.choices && s.rev >= (C.reconsent_revision || 0) && s.exp > Date.now() && (!s.cfg || s.cfg == C.config_id);
const st = load();
const vid = lget('cg_vid') || st?.vid || uuid();
lset('cg_vid', vid);

const delCookie = name => {
  const re = new RegExp('^' + name.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$');
  const p = location.hostname.split('.');
  d.cookie.split('; ').map(c => c.split('=')[0]).filter(c => re.test(c)).forEach(c =>
    ['', ...p.map((_, i) => '; Domain=' + p.slice(i).join('.'))].forEach(x => d.cookie = `${c}=; Max-Age=0; Path=/${x}`));
};

let cur, pre, ran = {}, host, root, bn, dlg, fab;
const fire = (ch, action, revision) => d.dispatchEvent(new CustomEvent('consentgate:change', { bubbles: true, detail: { choices: ch, action, revision } }));

function apply(s) {
  cur = s;
  const ch = eff(s.choices);
  gtag('consent', 'update', cm(ch));
  ready(() => {
    CATS.forEach(k => ch[k] || (C.categories[k].cookie_names || []).forEach(delCookie));
    // Withdrawal takes effect for everything after it (GDPR Art. 7(3)): scripts that already
    // ran on this page cannot be stopped, so start the page again without them.
    if (OPT.some(k => ran[k] && !ch[k])) return location.reload();
    d.querySelectorAll('script[type="text/plain"][data-consent-category],iframe[data-src][data-consent-category]').forEach(el => {
      const ks = el.dataset.consentCategory.split(/[\s,]+/);
      if (!ks.every(k => ch[k])) return;
      ks.forEach(k => ran[k] = 1);
      if (el.tagName == 'IFRAME') return el.src = el.dataset.src, el.removeAttribute('data-src');
      const s2 = d.createElement('script');
      for (const a of el.attributes) a.name != 'type' && s2.setAttribute(a.name, a.value);
      s2.nonce = el.nonce; s2.async = el.async; s2.text = el.text;
      el.replaceWith(s2);
    });
    fire(ch, s.act, s.rev);
    hide();
  });
}

// Small DOM builder: properties where the element has them, attributes otherwise; children are
// nodes or strings (strings become text nodes, never markup).
const h = (t, p, ...c) => { const e = d.createElement(t); for (const k in p) k in e ? e[k] = p[k] : e.setAttribute(k, p[k]); e.append(...c); return e };
const btn = (k, onclick, className = 'pr') => h('button', { type: 'button', className, onclick }, tx(k));
const ink = c => { // readable text colour on the primary colour
  c = (c || '').slice(1); if (c.length == 3) c = c.replace(/./g, '$&$&');
  let y = 0; c.match(/../g)?.forEach((x, i) => { x = parseInt(x, 16) / 255; y += [.2126, .7152, .0722][i] * (x < .04 ? x / 12.92 : ((x + .055) / 1.055) ** 2.4) });
  return y > .18 ? '#000' : '#fff';
};

function mount() {
  if (host) return;
  const b = C.banner || {};
  host = h('div', { id: 'consentgate' });
  root = host.attachShadow({ mode: 'open' });
  root.append(h('style', { nonce: ds.nonce || S.nonce || '' }, CG_CSS));
  [['p', b.primary_color], ['b', b.background_color], ['t', b.text_color], ['i', b.primary_color && ink(b.primary_color)]]
    .forEach(([k, v]) => v && host.style.setProperty('--cg-' + k, v));
  d.body.append(host);
}

function show(required) {
  pre = {}; CATS.forEach(k => pre[k] = !required && C.categories[k].default_accepted);
  ready(() => {
    mount(); bn?.remove(); fab && (fab.hidden = true);
    const b = C.banner || {}, links = [['privacy_policy_url', 'privacy_policy'], ['cookie_policy_url', 'cookie_policy']]
      .filter(([u]) => /^https?:\/\//i.test(C[u])).map(([u, t]) => h('a', { href: C[u], target: '_blank', rel: 'noopener' }, tx(t)));
    root.append(bn = h('div', { className: `bn s-${b.style || 'box'} p-${b.position || 'bottom'}`, role: 'dialog', 'aria-labelledby': 't', 'aria-describedby': 'd', tabIndex: -1, lang: L },
      h('div', { className: 'tx' }, h('h2', { id: 't' }, tx('title')), h('p', { id: 'd' }, tx('body')), h('p', { className: 'ln' }, ...links)),
      h('div', { className: 'bt' },
        b.show_reject_all !== false ? btn('reject_all', () => decide('reject_all')) : '',
        btn('accept_all', () => decide('accept_all')),
        b.show_preferences !== false ? btn('preferences', () => prefs(pre), 'sc') : '')));
    if (!d.activeElement || d.activeElement == d.body) bn.focus();
  });
}

function hide() {
  mount(); bn?.remove(); bn = 0;
  if (!fab && !('noSettingsButton' in ds)) root.append(fab = btn('settings', () => api.showPreferences(), 'fab'));
  if (fab) fab.hidden = false;
}

function prefs(init) {
  ready(() => {
    mount(); dlg?.open && dlg.close();
    const opener = root.activeElement || d.activeElement, box = {}, D = dlg = h('dialog', { className: 'pf', 'aria-labelledby': 'pt', lang: L },
      h('div', { className: 'hd' }, h('h2', { id: 'pt' }, tx('preferences')), h('button', { type: 'button', className: 'x', 'aria-label': tx('close'), onclick: () => D.close() }, '×')),
      ...CATS.map(k => {
        const lock = k == 'necessary' || C.categories[k].required, bl = blocked(k), id = 'c-' + k;
        box[k] = h('input', { type: 'checkbox', id, role: 'switch', checked: lock || !bl && !!init?.[k], disabled: lock || bl, 'aria-describedby': id + 'd' });
        return h('div', { className: 'ct' },
          h('label', {}, box[k], h('span', {}, ctx(k, 'label', 'display_name')), lock || bl ? h('small', {}, tx(lock ? 'always_on' : 'signal_denied')) : ''),
          h('p', { id: id + 'd' }, ctx(k, 'description', 'description')));
      }),
      h('div', { className: 'bt' }, btn('reject_all', () => decide('reject_all')), btn('accept_all', () => decide('accept_all')),
        btn('save', () => { const c = {}; OPT.forEach(k => c[k] = !!box[k]?.checked); decide('custom', c) }, 'sc')));
    D.onkeydown = e => { // keep Tab inside the dialog
      if (e.key != 'Tab') return;
      const f = [...D.querySelectorAll('button,input:enabled,a[href]')], a = root.activeElement;
      if (!f.includes(a) || a == (e.shiftKey ? f[0] : f.at(-1))) e.preventDefault(), (e.shiftKey ? f.at(-1) : f[0]).focus();
    };
    D.onclose = () => { D.remove(); dlg?.open || opener?.isConnected && opener.focus() };
    root.append(D); D.showModal();
  });
}

// A decision: POST it, keep it on the site, then apply it. Choices are sent explicitly, with the
// categories a privacy signal blocks set to false, so the record matches what the visitor saw.
function decide(action, c) {
  const focused = root?.activeElement, ch = eff(action == 'custom' ? c : action == 'accept_all' ? { functional: 1, analytics: 1, marketing: 1 } : 0);
  dlg?.open && dlg.close();
  hide(); focused && fab?.focus();
  const { necessary, ...choices } = ch;
  fetch(API + '/consent', { method: 'POST', credentials: 'omit', keepalive: true,
    body: JSON.stringify({ visitor_id: vid, action, choices, revision: C.revision, language: L, source: 'banner' }) })
    .then(r => r.ok ? r.json() : Promise.reject()).catch(() => 0).then(r => {
      const s = { vid, cfg: C.config_id, rev: r?.revision ?? C.revision, choices: r?.choices || ch, act: action,
        exp: Date.parse(r?.expires_at) || Date.now() + (C.expiry_days || 180) * 864e5 };
      // Without a server record there is no proof of consent: keep only a refusal.
      if (r || !OPT.some(k => ch[k])) save(s);
      apply(s);
    });
}

const api = w.consentgate = {
  track,
  showPreferences: () => prefs(cur ? eff(cur.choices) : pre),
  getConsent: () => cur ? { choices: eff(cur.choices), revision: cur.rev, action: cur.act } : null,
  withdraw: () => decide('withdraw'),
};

// Decide without the network when the stored choice is still valid; otherwise ask the gateway.
if (valid(st)) apply(st);
else fetch(`${API}/consent/${vid}`, { credentials: 'omit' }).then(r => r.ok ? r.json() : Promise.reject())
  .catch(() => ({ consent_required: true })).then(r => {
    sig.dnt ||= !!r.signals?.dnt; sig.gpc ||= !!r.signals?.gpc;
    const s = { vid, cfg: C.config_id, rev: r.revision, choices: r.choices, act: r.action, exp: Date.parse(r.expires_at) };
    if (r.decision_needed === false && valid(s)) save(s), apply(s);
    else show(r.consent_required !== false);
  });

// Tracker: page views (also SPA navigations), outbound clicks, custom events. Batched, at most
// 50 queued, retried with exponential backoff and jitter; idempotency keys make retries safe.
const EV = `${API}/events?key=${encodeURIComponent(ds.key || '')}`, Q = [];
const red = u => String(u || '').replace(/([?&#])([^=&#]+)=([^&#]*)/g, (m, p, k) => /token|secret|passw|pwd|auth|key|sig/i.test(k) ? p + k + '=REDACTED' : m);
let ref = d.referrer, last, timer, busy, tries = 0;
function track(event_name, event_properties = {}) {
  if (!ds.key) return;
  Q.push({ event_name, event_properties, anonymous_id: vid, page_url: red(location.href), referrer: red(ref) || undefined,
    title: d.title, language: n.language, screen: `${screen.width}x${screen.height}`, occurred_at: new Date().toISOString(), idempotency_key: uuid() });
  Q.splice(0, Q.length - 50);
  timer ||= setTimeout(flush, 200);
}
function flush() {
  timer = 0;
  if (busy || !Q.length) return;
  const b = Q.splice(0, 50), again = x => (x == 429 || x >= 500);
  busy = 1;
  fetch(EV, { method: 'POST', credentials: 'omit', keepalive: true, body: JSON.stringify({ batch: b }) })
    .then(r => { if (again(r.status)) throw 0; return r.json() })
    .then(j => { const f = (j.results || []).filter(x => again(x.status)).map(x => b[x.index]); Q.unshift(...f); tries = f.length ? tries + 1 : 0 },
      e => { if (e === 0 || e instanceof TypeError) Q.unshift(...b), tries++ })
    .finally(() => { busy = 0; Q.splice(0, Q.length - 50); if (Q.length) timer = setTimeout(flush, tries ? Math.min(6e4, 1e3 * 2 ** tries) * (.5 + Math.random() / 2) : 200) });
}
const beacon = () => { if (Q.length && ds.key && n.sendBeacon(EV, JSON.stringify({ batch: Q }))) Q.length = 0 };
addEventListener('pagehide', beacon);
d.addEventListener('visibilitychange', () => d.visibilityState == 'hidden' && beacon());
const pv = () => {
  const u = location.href.split('#')[0], p = {};
  if (u == last) return;
  if (last) ref = last;
  last = u;
  new URLSearchParams(location.search).forEach((v, k) => /^utm_/.test(k) && (p[k] = v));
  track('pageview', p);
};
if (!('noPageview' in ds)) {
  for (const m of ['pushState', 'replaceState']) { const o = history[m]; history[m] = function () { const r = o.apply(this, arguments); pv(); return r } }
  addEventListener('popstate', pv);
  pv();
}
d.addEventListener('click', e => {
  const a = e.target.closest?.('a[href],[data-consentgate-settings]');
  if (a?.hasAttribute('data-consentgate-settings')) e.preventDefault(), api.showPreferences();
  else if (a && /^http/.test(a.protocol) && a.host != location.host) track('outbound-link-click', { url: red(a.href) });
}, true);
